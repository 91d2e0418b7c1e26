#pragma once
// Optimizers over a Network's parameters, from a plain typed configuration: plain SGD / AdamW
// (torch::optim) and RepOptSGD / RepOptAdamW (with GradMults). The configuration arrives validated and
// fully defaulted (lib/optimizer-spec.ts); buildOptimizer checks only what it needs never to crash.
#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <vector>

#include "gradmult.h"
#include "repopt_sgd.h"

namespace repopt {

class Network;

enum class OptimizerType { Sgd, AdamW };
using SgdImplementation = RepOptSGD::Implementation;

// The configuration structs carry no defaults: lib/optimizer-spec.ts is the one place of them, and
// the caller sets every field from its resolved spec. Members are zero-initialised only so that none
// is ever indeterminate.
struct GroupConfig {
  std::vector<std::string> params;
  double lr{}, momentum{}, dampening{}, weightDecay{}, beta1{}, beta2{}, eps{};
  bool nesterov{};
};

struct GradMultConfig {
  std::string param;
  std::vector<double> base, centre;  // one value per output channel
  bool identity{};
  int64_t groups{};
};

struct OptimizerConfig {
  OptimizerType type{};
  std::vector<GroupConfig> groups;
  // With GradMults (even none): RepOptSGD / RepOptAdamW; without: torch's SGD / AdamW.
  bool repopt{};
  std::vector<GradMultConfig> gradMults;
  GradMultStorage storage{};
  SgdImplementation implementation{};
};

struct OptimizerHandle {
  std::string kind;  // "sgd", "adamw", "repopt-sgd", "repopt-adamw"
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<Network> network;  // the parameters' owner, kept alive
  int64_t plainSteps = 0;            // steps of the plain optimizers (RepOpt ones count their own)
  // Asynchronous steps using this optimizer now (the JS layer refuses other calls meanwhile).
  int asyncUsers = 0;
  int64_t steps() const;
  void step();
  // Learning rate of every group (group < 0) or of one.
  void setLr(double lr, int64_t group = -1);
  // RepOptSGD's step implementation; nullopt for other optimizers.
  c10::optional<SgdImplementation> implementation() const;
  void setImplementation(SgdImplementation impl);
  int64_t gradMultBytes() const;
  // The whole state (options, buffers, GradMults, steps) in libtorch's archive format, and back.
  std::string saveState() const;
  void loadState(const char* data, size_t size);
};

std::shared_ptr<OptimizerHandle> buildOptimizer(const std::shared_ptr<Network>& net, const OptimizerConfig& config);

const char* implementationName(SgdImplementation impl);

}  // namespace repopt

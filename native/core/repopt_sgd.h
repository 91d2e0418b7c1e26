#pragma once
// RepOptSGD: torch SGD whose gradients are first multiplied by per-parameter GradMults.
//   d = g ⊙ M (if p has a GradMult); d += wd * p; momentum (first step buf = d, later
//   buf = mu*buf + (1-dampening)*d); nesterov d += mu*buf, else d = buf; p -= lr * d.
// Three implementations that agree bit for bit (checked on CPU, fp32 and fp64):
//   reference  a simple per-parameter loop of ATen ops;
//   foreach    the same ops, each over all of a group's parameters at once (multi-tensor _foreach_*
//              kernels on CUDA), device-generic;
//   fused      one pass over each CPU parameter; parameters it cannot take (CUDA) go through foreach.
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <string>

#include "optim_common.h"

namespace repopt {

struct RepOptSGDOptions : public torch::optim::OptimizerCloneableOptions<RepOptSGDOptions> {
  explicit RepOptSGDOptions(double lr = 0.1) : lr_(lr) {}
  TORCH_ARG(double, lr);
  TORCH_ARG(double, momentum) = 0;
  TORCH_ARG(double, dampening) = 0;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, nesterov) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double v) override { lr(v); }
  void validate() const;
};

struct RepOptSGDParamState : public torch::optim::OptimizerCloneableParamState<RepOptSGDParamState> {
  TORCH_ARG(at::Tensor, momentum_buffer);

 public:
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

class RepOptSGD : public GradMultOptimizer {
 public:
  enum class Implementation { Reference, Foreach, Fused };
  // "reference" | "foreach" | "fused"; nullopt for any other name.
  static c10::optional<Implementation> implementationNamed(const std::string& name);

  RepOptSGD(std::vector<torch::optim::OptimizerParamGroup> groups, RepOptSGDOptions defaults);

  void setImplementation(Implementation impl) { implementation_ = impl; }
  Implementation implementation() const { return implementation_; }

  at::Tensor step(LossClosure closure = nullptr) override;
  void stepReference();
  // Fused where a parameter allows (CPU, float/double, contiguous), foreach elsewhere.
  void stepFused();

 protected:
  std::unique_ptr<torch::optim::OptimizerOptions> readOptions(torch::serialize::InputArchive& archive) const override;
  std::unique_ptr<torch::optim::OptimizerParamState> readParamState(torch::serialize::InputArchive& archive, const at::Tensor& param) const override;

 private:
  RepOptSGDParamState& stateFor(const at::Tensor& p);
  // The reference update of one parameter (d: the gradient, already multiplied by its GradMult).
  void referenceUpdate(at::Tensor& p, at::Tensor d, const RepOptSGDOptions& o);
  void stepFusedImpl();
  void stepReferenceImpl();
  void stepForeachImpl();
  // The foreach update of some parameters of one group (all with a defined gradient).
  void foreachUpdate(const std::vector<at::Tensor>& params, const RepOptSGDOptions& o);
  Implementation implementation_ = Implementation::Fused;
};

}  // namespace repopt

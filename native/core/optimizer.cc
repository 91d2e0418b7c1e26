#include "optimizer.h"

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/archive.h>

#include <map>
#include <set>
#include <sstream>

#include "network.h"
#include "optim_common.h"
#include "repopt_adamw.h"
#include "repopt_sgd.h"

namespace repopt {

int64_t OptimizerHandle::steps() const {
  if (auto* g = dynamic_cast<GradMultOptimizer*>(optimizer.get())) return g->steps();
  return plainSteps;
}

void OptimizerHandle::step() {
  optimizer->step();
  if (!dynamic_cast<GradMultOptimizer*>(optimizer.get())) ++plainSteps;
}

void OptimizerHandle::setLr(double lr, int64_t group) {
  auto& groups = optimizer->param_groups();
  TORCH_CHECK(group < int64_t(groups.size()), "no parameter group ", group);
  if (group >= 0) {
    groups[size_t(group)].options().set_lr(lr);
  } else {
    for (auto& g : groups) g.options().set_lr(lr);
  }
}

c10::optional<SgdImplementation> OptimizerHandle::implementation() const {
  auto* sgd = dynamic_cast<RepOptSGD*>(optimizer.get());
  if (!sgd) return c10::nullopt;
  return sgd->implementation();
}

void OptimizerHandle::setImplementation(SgdImplementation impl) {
  auto* sgd = dynamic_cast<RepOptSGD*>(optimizer.get());
  TORCH_CHECK(sgd, "only repopt-sgd has several step implementations");
  sgd->setImplementation(impl);
}

int64_t OptimizerHandle::gradMultBytes() const {
  auto* g = dynamic_cast<GradMultOptimizer*>(optimizer.get());
  return g ? g->gradMults().bytes() : 0;
}

std::string OptimizerHandle::saveState() const {
  torch::serialize::OutputArchive archive;
  optimizer->save(archive);
  archive.write("repopt_kind", c10::IValue(kind));
  archive.write("repopt_plain_steps", c10::IValue(plainSteps));
  // libtorch's SGD / AdamW load() keeps the current group options: save them ourselves.
  auto& groups = optimizer->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    torch::serialize::OutputArchive options;
    groups[g].options().serialize(options);
    archive.write("repopt_group_options_" + std::to_string(g), options);
  }
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void OptimizerHandle::loadState(const char* data, size_t size) {
  torch::serialize::InputArchive archive;
  archive.load_from(data, size);
  c10::IValue savedKind, steps;
  archive.read("repopt_kind", savedKind);
  TORCH_CHECK(savedKind.toStringRef() == kind, "the state is of a ", savedKind.toStringRef(), " optimizer, this is ", kind);
  archive.read("repopt_plain_steps", steps);
  auto& groups = optimizer->param_groups();
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  for (size_t g = 0; g < groups.size(); ++g) {
    torch::serialize::InputArchive saved;
    TORCH_CHECK(archive.try_read("repopt_group_options_" + std::to_string(g), saved), "the state has fewer parameter groups than this optimizer");
    options.push_back(groups[g].options().clone());
    options.back()->serialize(saved);
  }
  optimizer->load(archive);
  for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move(options[g]));
  plainSteps = steps.toInt();
}

const char* implementationName(SgdImplementation impl) {
  switch (impl) {
    case SgdImplementation::Reference: return "reference";
    case SgdImplementation::Foreach: return "foreach";
    case SgdImplementation::Fused: break;
  }
  return "fused";
}

namespace {

std::unique_ptr<torch::optim::OptimizerOptions> makeOptions(OptimizerType type, bool repopt, const GroupConfig& s) {
  if (type == OptimizerType::Sgd && !repopt)
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(s.lr).momentum(s.momentum).dampening(s.dampening).weight_decay(s.weightDecay).nesterov(s.nesterov));
  if (type == OptimizerType::AdamW && !repopt)
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weightDecay));
  if (type == OptimizerType::Sgd)
    return std::make_unique<RepOptSGDOptions>(
        RepOptSGDOptions(s.lr).momentum(s.momentum).dampening(s.dampening).weight_decay(s.weightDecay).nesterov(s.nesterov));
  return std::make_unique<RepOptAdamWOptions>(RepOptAdamWOptions(s.lr).beta1(s.beta1).beta2(s.beta2).eps(s.eps).weight_decay(s.weightDecay));
}

at::Tensor vectorTensor(const std::vector<double>& v) { return at::tensor(at::ArrayRef<double>(v), at::TensorOptions().dtype(at::kDouble)); }

}  // namespace

std::shared_ptr<OptimizerHandle> buildOptimizer(const std::shared_ptr<Network>& net, const OptimizerConfig& config) {
  // Internal invariants only: the spec was validated in TypeScript (lib/optimizer-spec.ts).
  TORCH_CHECK(!config.groups.empty(), "an optimizer needs at least one parameter group");
  std::map<std::string, at::Tensor> byName;
  for (const auto& [name, p] : net->namedParameters()) byName.emplace(name, p);
  auto lookup = [&](const std::string& name) {
    auto it = byName.find(name);
    TORCH_CHECK(it != byName.end(), "'", name, "' is not a parameter of the network");
    return it->second;
  };
  const bool repopt = config.repopt;
  std::vector<torch::optim::OptimizerParamGroup> paramGroups;
  // A parameter named twice (in two groups, or twice in one) would be updated twice per step.
  std::set<std::string> named;
  for (const auto& g : config.groups) {
    std::vector<at::Tensor> params;
    for (const auto& name : g.params) {
      TORCH_CHECK(named.insert(name).second, "'", name, "' is named in more than one parameter group (or twice in one); each parameter belongs to one group");
      // A constant (not trainable) parameter named in a group is never updated, as in the reference optimizers.
      if (at::Tensor p = lookup(name); p.requires_grad()) params.push_back(p);
    }
    paramGroups.emplace_back(params, makeOptions(config.type, repopt, g));
  }
  auto handle = std::make_shared<OptimizerHandle>();
  handle->kind = std::string(repopt ? "repopt-" : "") + (config.type == OptimizerType::Sgd ? "sgd" : "adamw");
  handle->network = net;
  std::unique_ptr<torch::optim::OptimizerOptions> defaults = makeOptions(config.type, repopt, config.groups.front());
  std::shared_ptr<GradMultOptimizer> withMults;
  if (!repopt && config.type == OptimizerType::Sgd) {
    handle->optimizer = std::make_shared<torch::optim::SGD>(paramGroups, static_cast<torch::optim::SGDOptions&>(*defaults));
  } else if (!repopt) {
    handle->optimizer = std::make_shared<torch::optim::AdamW>(paramGroups, static_cast<torch::optim::AdamWOptions&>(*defaults));
  } else if (config.type == OptimizerType::Sgd) {
    auto opt = std::make_shared<RepOptSGD>(paramGroups, static_cast<RepOptSGDOptions&>(*defaults));
    opt->setImplementation(config.implementation);
    handle->optimizer = opt;
  } else {
    handle->optimizer = std::make_shared<RepOptAdamW>(paramGroups, static_cast<RepOptAdamWOptions&>(*defaults));
  }
  if (repopt) {
    auto* g = dynamic_cast<GradMultOptimizer*>(handle->optimizer.get());
    for (const auto& m : config.gradMults) {
      const at::Tensor p = lookup(m.param);
      bool updated = false;
      for (const auto& group : paramGroups)
        for (const auto& q : group.params()) updated = updated || q.is_same(p);
      TORCH_CHECK(updated, "a GradMult names '", m.param, "', which is not a parameter this optimizer updates");
      auto mult = std::make_shared<GradMult>(vectorTensor(m.base), vectorTensor(m.centre), m.identity, m.groups, p.sizes(), config.storage, p.options());
      g->setGradMult(p, mult);
    }
  }
  return handle;
}

}  // namespace repopt

#include "optim_common.h"

#include <torch/serialize/archive.h>

namespace repopt {

namespace {

void saveGradMult(torch::serialize::OutputArchive& archive, const std::string& prefix, const GradMult& m) {
  torch::serialize::OutputArchive a;
  a.write("base", m.base().cpu());
  a.write("centre", m.centre().cpu());
  a.write("identity", c10::IValue(m.identity()));
  a.write("groups", c10::IValue(m.groups()));
  a.write("full", c10::IValue(m.storage() == GradMultStorage::Full));
  archive.write(prefix, a);
}

std::shared_ptr<GradMult> loadGradMult(torch::serialize::InputArchive& archive, const std::string& prefix, const at::Tensor& param) {
  torch::serialize::InputArchive a;
  if (!archive.try_read(prefix, a)) return nullptr;
  at::Tensor base, centre;
  c10::IValue identity, groups, full;
  a.read("base", base);
  a.read("centre", centre);
  a.read("identity", identity);
  a.read("groups", groups);
  a.read("full", full);
  return std::make_shared<GradMult>(base, centre, identity.toBool(), groups.toInt(), param.sizes(),
                                    full.toBool() ? GradMultStorage::Full : GradMultStorage::Compact, param.options());
}

}  // namespace

void GradMultOptimizer::setGradMult(const at::Tensor& param, std::shared_ptr<GradMult> m) {
  bool found = false;
  for (const auto& g : param_groups_)
    for (const auto& p : g.params()) found = found || p.is_same(param);
  TORCH_CHECK(found, "a GradMult was given for a parameter that the optimizer does not hold");
  gradMults_.set(param, std::move(m));
}

at::Tensor GradMultOptimizer::runStep(LossClosure closure, const std::function<void()>& stepImpl) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable(true);
    loss = closure();
  }
  at::NoGradGuard noGrad;
  stepImpl();
  ++steps_;
  return loss;
}

void GradMultOptimizer::save(torch::serialize::OutputArchive& archive) const {
  archive.write("steps", c10::IValue(steps_));
  archive.write("groups", c10::IValue(int64_t(param_groups_.size())));
  for (size_t gi = 0; gi < param_groups_.size(); ++gi) {
    const auto& group = param_groups_[gi];
    torch::serialize::OutputArchive ga;
    group.options().serialize(ga);
    ga.write("params", c10::IValue(int64_t(group.params().size())));
    for (size_t j = 0; j < group.params().size(); ++j) {
      const at::Tensor& p = group.params()[j];
      torch::serialize::OutputArchive pa;
      auto it = state_.find(stateKey(p));
      if (it != state_.end()) {
        torch::serialize::OutputArchive sa;
        it->second->serialize(sa);
        pa.write("state", sa);
      }
      if (const GradMult* m = gradMults_.find(p)) saveGradMult(pa, "gradmult", *m);
      ga.write("p" + std::to_string(j), pa);
    }
    archive.write("g" + std::to_string(gi), ga);
  }
}

void GradMultOptimizer::load(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  archive.read("steps", v);
  const int64_t steps = v.toInt();
  archive.read("groups", v);
  TORCH_CHECK(v.toInt() == int64_t(param_groups_.size()), "optimizer state: ", v.toInt(), " parameter groups saved, this optimizer has ", param_groups_.size());
  struct Pending {
    at::Tensor param;
    std::unique_ptr<torch::optim::OptimizerParamState> state;
    std::shared_ptr<GradMult> gradMult;
  };
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::vector<Pending> pending;
  for (size_t gi = 0; gi < param_groups_.size(); ++gi) {
    const auto& group = param_groups_[gi];
    torch::serialize::InputArchive ga;
    archive.read("g" + std::to_string(gi), ga);
    options.push_back(readOptions(ga));
    ga.read("params", v);
    TORCH_CHECK(v.toInt() == int64_t(group.params().size()), "optimizer state: group ", gi, " saved with ", v.toInt(), " parameters, this optimizer's has ",
                group.params().size());
    for (size_t j = 0; j < group.params().size(); ++j) {
      const at::Tensor& p = group.params()[j];
      torch::serialize::InputArchive pa, sa;
      ga.read("p" + std::to_string(j), pa);
      Pending item{p, nullptr, loadGradMult(pa, "gradmult", p)};
      if (pa.try_read("state", sa)) item.state = readParamState(sa, p);
      pending.push_back(std::move(item));
    }
  }
  for (size_t gi = 0; gi < param_groups_.size(); ++gi) param_groups_[gi].set_options(std::move(options[gi]));
  gradMults_ = GradMultTable();
  for (auto& item : pending) {
    state_.erase(stateKey(item.param));
    if (item.state) state_.emplace(stateKey(item.param), std::move(item.state));
    if (item.gradMult) gradMults_.set(item.param, item.gradMult);
  }
  steps_ = steps;
}

}  // namespace repopt

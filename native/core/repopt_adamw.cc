#include "repopt_adamw.h"

#include <cmath>

namespace repopt {

void RepOptAdamWOptions::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("lr", c10::IValue(lr()));
  archive.write("beta1", c10::IValue(beta1()));
  archive.write("beta2", c10::IValue(beta2()));
  archive.write("eps", c10::IValue(eps()));
  archive.write("weight_decay", c10::IValue(weight_decay()));
}

void RepOptAdamWOptions::serialize(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  archive.read("lr", v), lr(v.toDouble());
  archive.read("beta1", v), beta1(v.toDouble());
  archive.read("beta2", v), beta2(v.toDouble());
  archive.read("eps", v), eps(v.toDouble());
  archive.read("weight_decay", v), weight_decay(v.toDouble());
}

void RepOptAdamWOptions::validate() const {
  TORCH_CHECK(lr() >= 0, "Invalid learning rate: ", lr());
  TORCH_CHECK(eps() >= 0, "Invalid epsilon value: ", eps());
  TORCH_CHECK(beta1() >= 0 && beta1() < 1, "Invalid beta parameter at index 0: ", beta1());
  TORCH_CHECK(beta2() >= 0 && beta2() < 1, "Invalid beta parameter at index 1: ", beta2());
  TORCH_CHECK(weight_decay() >= 0, "Invalid weight_decay value: ", weight_decay());
}

void RepOptAdamWParamState::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("step", c10::IValue(step()));
  archive.write("exp_avg", exp_avg().cpu());
  archive.write("exp_avg_sq", exp_avg_sq().cpu());
}

RepOptAdamW::RepOptAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, RepOptAdamWOptions defaults)
    : GradMultOptimizer(std::move(groups), std::make_unique<RepOptAdamWOptions>(defaults)) {
  defaults.validate();
  for (const auto& g : param_groups_) static_cast<const RepOptAdamWOptions&>(g.options()).validate();
}

at::Tensor RepOptAdamW::step(LossClosure closure) {
  return runStep(closure, [this] { stepImpl(); });
}

void RepOptAdamW::stepImpl() {
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const RepOptAdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const GradMult* m = gradMults_.find(p);
      const at::Tensor g = m ? m->multiplied(p.grad()) : p.grad();
      auto key = stateKey(p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto st = std::make_unique<RepOptAdamWParamState>();
        st->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        st->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(st)).first;
      }
      auto& st = static_cast<RepOptAdamWParamState&>(*it->second);
      st.step(st.step() + 1);
      p.mul_(1 - o.lr() * o.weight_decay());
      st.exp_avg().mul_(o.beta1()).add_(g, 1 - o.beta1());
      st.exp_avg_sq().mul_(o.beta2()).addcmul_(g, g, 1 - o.beta2());
      const double bc1 = 1 - std::pow(o.beta1(), double(st.step()));
      const double bc2 = 1 - std::pow(o.beta2(), double(st.step()));
      at::Tensor denom = (st.exp_avg_sq().sqrt() / std::sqrt(bc2)).add_(o.eps());
      // Official semantics: the first moment is multiplied by the GradMult again in the update.
      const at::Tensor numerator = m ? m->multiplied(st.exp_avg()) : st.exp_avg();
      p.addcdiv_(numerator, denom, -o.lr() / bc1);
    }
  }
}

std::unique_ptr<torch::optim::OptimizerOptions> RepOptAdamW::readOptions(torch::serialize::InputArchive& archive) const {
  auto o = std::make_unique<RepOptAdamWOptions>();
  o->serialize(archive);
  o->validate();
  return o;
}

std::unique_ptr<torch::optim::OptimizerParamState> RepOptAdamW::readParamState(torch::serialize::InputArchive& archive, const at::Tensor& param) const {
  auto st = std::make_unique<RepOptAdamWParamState>();
  c10::IValue step;
  at::Tensor m, s;
  archive.read("step", step);
  archive.read("exp_avg", m);
  archive.read("exp_avg_sq", s);
  TORCH_CHECK(m.sizes() == param.sizes() && s.sizes() == param.sizes(), "optimizer state: moments of shape ", m.sizes(), " for a parameter of shape ",
              param.sizes());
  st->step(step.toInt());
  st->exp_avg(m.to(param.options()));
  st->exp_avg_sq(s.to(param.options()));
  return st;
}

}  // namespace repopt

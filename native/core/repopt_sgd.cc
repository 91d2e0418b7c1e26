#include "repopt_sgd.h"

#include <ATen/Parallel.h>
#include <torch/serialize/archive.h>

namespace repopt {

void RepOptSGDOptions::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("lr", c10::IValue(lr()));
  archive.write("momentum", c10::IValue(momentum()));
  archive.write("dampening", c10::IValue(dampening()));
  archive.write("weight_decay", c10::IValue(weight_decay()));
  archive.write("nesterov", c10::IValue(nesterov()));
}

void RepOptSGDOptions::serialize(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  archive.read("lr", v), lr(v.toDouble());
  archive.read("momentum", v), momentum(v.toDouble());
  archive.read("dampening", v), dampening(v.toDouble());
  archive.read("weight_decay", v), weight_decay(v.toDouble());
  archive.read("nesterov", v), nesterov(v.toBool());
}

void RepOptSGDOptions::validate() const {
  TORCH_CHECK(lr() >= 0, "Invalid learning rate: ", lr());
  TORCH_CHECK(momentum() >= 0, "Invalid momentum value: ", momentum());
  TORCH_CHECK(weight_decay() >= 0, "Invalid weight_decay value: ", weight_decay());
  TORCH_CHECK(!nesterov() || (momentum() > 0 && dampening() == 0), "Nesterov momentum requires a momentum and zero dampening");
}

void RepOptSGDParamState::serialize(torch::serialize::OutputArchive& archive) const {
  if (momentum_buffer().defined()) archive.write("momentum_buffer", momentum_buffer().cpu());
}

RepOptSGD::RepOptSGD(std::vector<torch::optim::OptimizerParamGroup> groups, RepOptSGDOptions defaults)
    : GradMultOptimizer(std::move(groups), std::make_unique<RepOptSGDOptions>(defaults)) {
  defaults.validate();
  for (const auto& g : param_groups_) static_cast<const RepOptSGDOptions&>(g.options()).validate();
}

RepOptSGDParamState& RepOptSGD::stateFor(const at::Tensor& p) {
  auto key = stateKey(p);
  auto it = state_.find(key);
  if (it == state_.end()) it = state_.emplace(key, std::make_unique<RepOptSGDParamState>()).first;
  return static_cast<RepOptSGDParamState&>(*it->second);
}

c10::optional<RepOptSGD::Implementation> RepOptSGD::implementationNamed(const std::string& name) {
  if (name == "reference") return Implementation::Reference;
  if (name == "foreach") return Implementation::Foreach;
  if (name == "fused") return Implementation::Fused;
  return c10::nullopt;
}

at::Tensor RepOptSGD::step(LossClosure closure) {
  return runStep(closure, [this] {
    switch (implementation_) {
      case Implementation::Reference: return stepReferenceImpl();
      case Implementation::Foreach: return stepForeachImpl();
      case Implementation::Fused: return stepFusedImpl();
    }
  });
}

void RepOptSGD::stepReference() {
  runStep(nullptr, [this] { stepReferenceImpl(); });
}

void RepOptSGD::stepFused() {
  runStep(nullptr, [this] { stepFusedImpl(); });
}

void RepOptSGD::referenceUpdate(at::Tensor& p, at::Tensor d, const RepOptSGDOptions& o) {
  if (o.weight_decay() != 0) d.add_(p.mul(o.weight_decay()));
  if (o.momentum() != 0) {
    auto& st = stateFor(p);
    if (!st.momentum_buffer().defined())
      st.momentum_buffer(d.clone());
    else
      st.momentum_buffer().mul_(o.momentum()).add_(d.mul(1 - o.dampening()));
    d = o.nesterov() ? d.add(st.momentum_buffer().mul(o.momentum())) : st.momentum_buffer();
  }
  p.sub_(d.mul(o.lr()));
}

void RepOptSGD::stepReferenceImpl() {
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const RepOptSGDOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const GradMult* m = gradMults_.find(p);
      referenceUpdate(p, m ? m->multiplied(p.grad()) : p.grad().clone(), o);
    }
  }
}

void RepOptSGD::stepForeachImpl() {
  for (auto& group : param_groups_) {
    std::vector<at::Tensor> params;
    for (auto& p : group.params())
      if (p.grad().defined()) params.push_back(p);
    foreachUpdate(params, static_cast<const RepOptSGDOptions&>(group.options()));
  }
}

// The reference's ops in the reference's order, each applied to a list of tensors: every element
// gets the same single roundings as in referenceUpdate, so the two agree bit for bit.
void RepOptSGD::foreachUpdate(const std::vector<at::Tensor>& params, const RepOptSGDOptions& o) {
  if (params.empty()) return;
  // d = g ⊙ M: one multi-tensor multiply for full GradMults; compact ones broadcast per-channel
  // vectors, which the multi-tensor kernels do not, so they multiply per parameter.
  std::vector<at::Tensor> d(params.size());
  std::vector<at::Tensor> fullGrads, fullMults;
  std::vector<size_t> fullAt, plainAt;
  for (size_t k = 0; k < params.size(); ++k) {
    const at::Tensor& g = params[k].grad();
    const GradMult* m = gradMults_.find(params[k]);
    if (!m) {
      plainAt.push_back(k);
    } else if (m->storage() == GradMultStorage::Full && g.sizes() == m->full().sizes()) {
      fullAt.push_back(k);
      fullGrads.push_back(g);
      fullMults.push_back(m->full());
    } else {
      d[k] = m->multiplied(g);
    }
  }
  if (!fullAt.empty()) {
    auto products = at::_foreach_mul(fullGrads, fullMults);
    for (size_t j = 0; j < fullAt.size(); ++j) d[fullAt[j]] = std::move(products[j]);
  }
  if (!plainAt.empty()) {
    // A copy, as the reference's clone: the gradient itself is never changed.
    std::vector<at::Tensor> grads;
    for (size_t k : plainAt) grads.push_back(params[k].grad());
    auto copies = at::_foreach_mul(grads, 1.0);
    for (size_t j = 0; j < plainAt.size(); ++j) d[plainAt[j]] = std::move(copies[j]);
  }
  if (o.weight_decay() != 0) at::_foreach_add_(d, at::_foreach_mul(params, o.weight_decay()));
  if (o.momentum() != 0) {
    // Parameters with a momentum buffer, and those whose first step this is.
    std::vector<at::Tensor> bufs, bufD, freshD;
    std::vector<size_t> freshAt;
    for (size_t k = 0; k < params.size(); ++k) {
      auto& st = stateFor(params[k]);
      if (st.momentum_buffer().defined()) {
        bufs.push_back(st.momentum_buffer()), bufD.push_back(d[k]);
      } else {
        freshAt.push_back(k), freshD.push_back(d[k]);
      }
    }
    if (!bufs.empty()) {
      at::_foreach_mul_(bufs, o.momentum());
      at::_foreach_add_(bufs, at::_foreach_mul(bufD, 1 - o.dampening()));
    }
    if (!freshD.empty()) {
      auto copies = at::_foreach_mul(freshD, 1.0);
      for (size_t j = 0; j < freshAt.size(); ++j) stateFor(params[freshAt[j]]).momentum_buffer(std::move(copies[j]));
    }
    std::vector<at::Tensor> allBufs;
    for (const auto& p : params) allBufs.push_back(stateFor(p).momentum_buffer());
    if (o.nesterov())
      at::_foreach_add_(d, at::_foreach_mul(allBufs, o.momentum()));
    else
      d = allBufs;
  }
  at::_foreach_sub_(params, at::_foreach_mul(d, o.lr()));
}

namespace {

// Where a compact GradMult's factors live, and the weight geometry.
template <typename T>
struct Factors {
  const T* base = nullptr;
  const T* centre = nullptr;
  const T* diagonal = nullptr;
  const T* full = nullptr;
  int64_t outputs = 0, perGroup = 0, kernelArea = 0, centreOffset = 0;
  bool identity = false;
};

// The SGD update of one element from its multiplied gradient d. Same operations, order and
// precision as the reference loop's ATen ops (one rounding each; no FMA contraction, see
// -ffp-contract=off in the build), so fused and reference agree bit for bit.
template <typename T>
struct Update {
  T* p;
  T* buf;
  T lr, wd, mu, damp1;
  bool nesterov, firstStep;
  inline void operator()(int64_t e, T d) const {
    if (wd != T(0)) d = d + T(p[e] * wd);
    if (mu != T(0)) {
      const T b = firstStep ? d : T(T(buf[e] * mu) + T(d * damp1));
      buf[e] = b;
      d = nesterov ? T(d + T(b * mu)) : b;
    }
    p[e] = p[e] - T(d * lr);
  }
};

// One pass over a parameter, parallel over output channels (compact GradMult) or elements.
template <typename T>
void fusedUpdate(const T* g, int64_t n, const Factors<T>* f, const Update<T>& update) {
  if (f && !f->full) {
    const int64_t kk = f->kernelArea, perOutput = f->perGroup * kk;
    at::parallel_for(0, f->outputs, std::max<int64_t>(1, 16384 / perOutput), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T base = f->base[o], centre = f->centre[o];
        const int64_t diagonalInput = f->identity ? o % f->perGroup : -1;
        for (int64_t i = 0; i < f->perGroup; ++i) {
          const int64_t offset = o * perOutput + i * kk;
          for (int64_t q = 0; q < kk; ++q) {
            const T m = q != f->centreOffset ? base : (i == diagonalInput ? f->diagonal[o] : centre);
            update(offset + q, T(g[offset + q] * m));
          }
        }
      }
    });
    return;
  }
  const T* full = f ? f->full : nullptr;
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    if (full) {
      for (int64_t e = begin; e < end; ++e) update(e, T(g[e] * full[e]));
    } else {
      for (int64_t e = begin; e < end; ++e) update(e, g[e]);
    }
  });
}

template <typename T>
void fusedParam(at::Tensor& p, const at::Tensor& grad, at::Tensor& buf, const GradMult* m, const RepOptSGDOptions& o, bool firstStep) {
  Factors<T> f;
  if (m && m->storage() == GradMultStorage::Full) {
    f.full = m->full().data_ptr<T>();
  } else if (m) {
    f.base = m->base().data_ptr<T>();
    f.centre = m->centreFactor().data_ptr<T>();
    f.diagonal = m->identity() ? m->diagonalFactor().data_ptr<T>() : nullptr;
    f.identity = m->identity();
    f.outputs = p.size(0);
    f.perGroup = p.size(1);
    f.kernelArea = m->kernel() * m->kernel();
    f.centreOffset = (m->kernel() / 2) * m->kernel() + m->kernel() / 2;
  }
  Update<T> update{
      p.data_ptr<T>(), buf.defined() ? buf.data_ptr<T>() : nullptr, T(o.lr()), T(o.weight_decay()), T(o.momentum()), T(1 - o.dampening()), o.nesterov(),
      firstStep};
  fusedUpdate<T>(grad.data_ptr<T>(), p.numel(), m ? &f : nullptr, update);
}

}  // namespace

void RepOptSGD::stepFusedImpl() {
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const RepOptSGDOptions&>(group.options());
    std::vector<at::Tensor> others;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const at::Tensor& grad = p.grad();
      const GradMult* m = gradMults_.find(p);
      const bool fusable = p.is_cpu() && p.is_contiguous() && grad.is_contiguous() && grad.scalar_type() == p.scalar_type() &&
                           (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble);
      if (!fusable) {
        others.push_back(p);
        continue;
      }
      at::Tensor buf;
      bool firstStep = false;
      if (o.momentum() != 0) {
        auto& st = stateFor(p);
        firstStep = !st.momentum_buffer().defined();
        if (firstStep) st.momentum_buffer(at::empty_like(p, at::MemoryFormat::Contiguous));
        buf = st.momentum_buffer();
      }
      if (p.scalar_type() == at::kFloat)
        fusedParam<float>(p, grad, buf, m, o, firstStep);
      else
        fusedParam<double>(p, grad, buf, m, o, firstStep);
    }
    foreachUpdate(others, o);
  }
}

std::unique_ptr<torch::optim::OptimizerOptions> RepOptSGD::readOptions(torch::serialize::InputArchive& archive) const {
  auto o = std::make_unique<RepOptSGDOptions>();
  o->serialize(archive);
  o->validate();
  return o;
}

std::unique_ptr<torch::optim::OptimizerParamState> RepOptSGD::readParamState(torch::serialize::InputArchive& archive, const at::Tensor& param) const {
  auto st = std::make_unique<RepOptSGDParamState>();
  at::Tensor buf;
  if (archive.try_read("momentum_buffer", buf)) {
    TORCH_CHECK(buf.sizes() == param.sizes(), "optimizer state: a momentum buffer of shape ", buf.sizes(), " for a parameter of shape ", param.sizes());
    st->momentum_buffer(buf.to(param.options()));
  }
  return st;
}

}  // namespace repopt

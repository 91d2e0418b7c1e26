#pragma once
// Small pieces the optimizers share: libtorch-version differences and GradMult bookkeeping.
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "gradmult.h"

namespace repopt {

// Optimizer::state_ is keyed by a string in libtorch < 2.2 and by the TensorImpl pointer from 2.2 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
inline void* stateKey(const at::Tensor& p) { return p.unsafeGetTensorImpl(); }
#else
inline std::string stateKey(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }
#endif

// GradMults of the parameters that have one, keyed by the parameter's TensorImpl.
class GradMultTable {
 public:
  void set(const at::Tensor& param, std::shared_ptr<GradMult> m) { table_[param.unsafeGetTensorImpl()] = std::move(m); }
  const GradMult* find(const at::Tensor& param) const {
    auto it = table_.find(param.unsafeGetTensorImpl());
    return it == table_.end() ? nullptr : it->second.get();
  }
  size_t size() const { return table_.size(); }
  int64_t bytes() const {
    int64_t total = 0;
    for (const auto& [_, m] : table_) total += m->bytes();
    return total;
  }

 private:
  std::unordered_map<const c10::TensorImpl*, std::shared_ptr<GradMult>> table_;
};

// An optimizer whose parameters may carry GradMults. Holds the GradMult table and the step count,
// and saves / loads the whole state (group options, per-parameter state, GradMults, steps) through
// the hooks below; load checks everything before changing anything.
class GradMultOptimizer : public torch::optim::Optimizer {
 public:
  using torch::optim::Optimizer::Optimizer;

  // Throws if param is not held by this optimizer.
  void setGradMult(const at::Tensor& param, std::shared_ptr<GradMult> m);
  const GradMultTable& gradMults() const { return gradMults_; }
  int64_t steps() const { return steps_; }

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 protected:
  virtual std::unique_ptr<torch::optim::OptimizerOptions> readOptions(torch::serialize::InputArchive& archive) const = 0;
  // Checks a parameter's state read from a file against the parameter; throws if it does not fit.
  virtual std::unique_ptr<torch::optim::OptimizerParamState> readParamState(torch::serialize::InputArchive& archive, const at::Tensor& param) const = 0;
  // Runs stepImpl with gradients off and counts the step.
  at::Tensor runStep(LossClosure closure, const std::function<void()>& stepImpl);

  GradMultTable gradMults_;
  int64_t steps_ = 0;
};

}  // namespace repopt

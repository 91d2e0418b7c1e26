#pragma once
// RepOptAdamW with the official RepOptimizers semantics (approximate by design): the gradient is
// multiplied by its GradMult before the moments, and the first moment is multiplied again in the
// update. Exact only for SGD-type optimizers; see the README.
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <tuple>

#include "optim_common.h"

namespace repopt {

struct RepOptAdamWOptions : public torch::optim::OptimizerCloneableOptions<RepOptAdamWOptions> {
  explicit RepOptAdamWOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr);
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 1e-2;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double v) override { lr(v); }
  void validate() const;
};

struct RepOptAdamWParamState : public torch::optim::OptimizerCloneableParamState<RepOptAdamWParamState> {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(at::Tensor, exp_avg);
  TORCH_ARG(at::Tensor, exp_avg_sq);

 public:
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

class RepOptAdamW : public GradMultOptimizer {
 public:
  RepOptAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, RepOptAdamWOptions defaults);
  at::Tensor step(LossClosure closure = nullptr) override;

 protected:
  std::unique_ptr<torch::optim::OptimizerOptions> readOptions(torch::serialize::InputArchive& archive) const override;
  std::unique_ptr<torch::optim::OptimizerParamState> readParamState(torch::serialize::InputArchive& archive, const at::Tensor& param) const override;

 private:
  void stepImpl();
};

}  // namespace repopt

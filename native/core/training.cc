#include "training.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "autocast.h"
#include "network.h"
#include "optimizer.h"

namespace repopt {

StepResult trainStep(Network& net, OptimizerHandle& opt, const at::Tensor& x, const at::Tensor& y, const StepOptions& options) {
  net.train(true);
  net.clearGradients();
  if (net.hooks) net.hooks->beforeForward(net);
  StepResult r;
  {
    AutocastScope mixed(net.device(), options.autocast);
    r.logits = net.forward(x);
    namespace F = torch::nn::functional;
    r.loss = F::cross_entropy(r.logits, y, F::CrossEntropyFuncOptions().label_smoothing(options.labelSmoothing));
  }
  if (net.hooks) net.hooks->beforeBackward(net);
  r.loss.backward();  // with hooks (data parallel): the gradients are averaged over all processes here
  if (net.hooks) net.hooks->afterBackward(net);
  if (options.clipNorm > 0) torch::nn::utils::clip_grad_norm_(net.trainableParameters(), options.clipNorm);
  if (options.skipNonFinite) {
    // Opted in: one host-device synchronisation per step to leave the weights untouched.
    at::NoGradGuard noGrad;
    bool finite = at::isfinite(r.loss).all().item<bool>();
    for (const auto& p : net.trainableParameters())
      if (finite && p.grad().defined()) finite = at::isfinite(p.grad()).all().item<bool>();
    if (!finite) {
      net.clearGradients();
      r.skipped = true;
      return r;
    }
  }
  opt.step();
  return r;
}

void Trainer::trainBatches(Network& net, OptimizerHandle& opt, DeviceDataset& ds, const at::Tensor& permutation, int64_t batchIndex, int64_t batchSize,
                           int64_t count, const StepOptions& options) {
  for (int64_t k = 0; k < count; ++k) {
    auto [x, y] = ds.batch(permutation.narrow(0, (batchIndex + k) * batchSize, batchSize), options.augmentation, net.dtype());
    x = net.prepareInput(x);
    y = y.to(net.device());
    StepResult r = trainStep(net, opt, x, y, options);
    if (r.skipped) {
      ++skipped_;
      continue;
    }
    at::NoGradGuard noGrad;
    at::Tensor batchLoss = r.loss.detach().to(at::kDouble) * double(batchSize);
    at::Tensor batchCorrect = r.logits.argmax(1).eq(y).sum();
    if (!lossSum_.defined()) {
      lossSum_ = batchLoss;
      correct_ = batchCorrect;
    } else {
      lossSum_.add_(batchLoss);
      correct_.add_(batchCorrect);
    }
    seen_ += batchSize;
  }
}

TrainMetrics Trainer::takeMetrics() {
  TrainMetrics m{double(seen_), seen_ ? lossSum_.item<double>() / double(seen_) : NAN, seen_ ? double(correct_.item<int64_t>()) / double(seen_) : NAN,
                 double(skipped_)};
  lossSum_ = correct_ = at::Tensor();
  seen_ = 0;
  skipped_ = 0;
  return m;
}

std::vector<double> timeOptimizerSteps(Network& net, OptimizerHandle& opt, int64_t steps) {
  for (auto& p : net.trainableParameters()) p.mutable_grad() = at::randn_like(p).mul_(1e-3);
  std::vector<double> times;
  times.reserve(size_t(std::max<int64_t>(steps, 0)));
  for (int64_t k = 0; k < steps; ++k) {
    auto start = std::chrono::steady_clock::now();
    opt.step();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return times;
}

}  // namespace repopt

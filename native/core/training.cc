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

at::Tensor mixBatch(const at::Tensor& x, const MixDraw& mix) {
  at::NoGradGuard noGrad;
  const at::Tensor reversed = x.flip(0);
  if (mix.kind == MixDraw::Kind::Mixup) return x * mix.lam + reversed * (1.0 - mix.lam);
  at::Tensor out = x.clone();
  const int64_t rows = mix.bottom - mix.top, cols = mix.right - mix.left;
  out.narrow(2, mix.top, rows).narrow(3, mix.left, cols).copy_(reversed.narrow(2, mix.top, rows).narrow(3, mix.left, cols));
  return out;
}

at::Tensor softTargetCrossEntropy(const at::Tensor& logits, const at::Tensor& y, const at::Tensor& yOther, double lam, double smoothing) {
  const at::Tensor logProbs = at::log_softmax(logits, 1);
  const double off = smoothing / double(logits.size(1)), on = 1.0 - smoothing + off;
  auto target = [&](const at::Tensor& labels) { return at::full_like(logProbs, off).scatter_(1, labels.unsqueeze(1), on); };
  const at::Tensor soft = target(y).mul_(lam).add_(target(yOther), 1.0 - lam);
  return -(soft * logProbs).sum(1).mean();
}

StepResult trainStep(Network& net, OptimizerHandle& opt, const at::Tensor& x, const at::Tensor& y, const StepOptions& options,
                     const c10::optional<MixDraw>& mix) {
  namespace F = torch::nn::functional;
  const int64_t parts = options.accumulate;
  TORCH_CHECK(parts >= 1 && x.size(0) % parts == 0, "the batch of ", x.size(0), " does not split into ", parts, " micro-batches");
  TORCH_CHECK(parts == 1 || !net.hooks, "gradient accumulation does not run data-parallel");
  net.train(true);
  net.clearGradients();
  const at::Tensor input = mix ? mixBatch(x, *mix) : x;
  const at::Tensor yOther = mix ? y.flip(0) : at::Tensor();
  const int64_t size = x.size(0) / parts;
  StepResult r;
  std::vector<at::Tensor> logits;
  for (int64_t k = 0; k < parts; ++k) {
    const at::Tensor xk = parts == 1 ? input : input.narrow(0, k * size, size);
    const at::Tensor yk = parts == 1 ? y : y.narrow(0, k * size, size);
    if (net.hooks) net.hooks->beforeForward(net);
    at::Tensor out, loss;
    {
      AutocastScope mixed(net.device(), options.autocast);
      out = net.forward(xk);
      loss = mix ? softTargetCrossEntropy(out, yk, parts == 1 ? yOther : yOther.narrow(0, k * size, size), mix->lam, options.labelSmoothing)
                 : F::cross_entropy(out, yk, F::CrossEntropyFuncOptions().label_smoothing(options.labelSmoothing));
    }
    if (net.hooks) net.hooks->beforeBackward(net);
    // The mean over the whole batch: each micro-batch's mean weighs 1 / parts.
    (parts == 1 ? loss : loss / double(parts)).backward();  // with hooks (data parallel): the gradients are averaged over all processes here
    if (net.hooks) net.hooks->afterBackward(net);
    if (parts == 1) {
      r.logits = out;
      r.loss = loss;
    } else {
      at::NoGradGuard noGrad;
      logits.push_back(out.detach());
      r.loss = k == 0 ? loss.detach() / double(parts) : r.loss + loss.detach() / double(parts);
    }
  }
  if (parts > 1) r.logits = at::cat(logits);
  // A mixed batch counts as right where the prediction is its larger share's label.
  r.labels = mix && mix->lam < 0.5 ? yOther : y;
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
  if (options.ema) options.ema->updateAverage(net, options.emaDecay);
  return r;
}

void Trainer::trainBatches(Network& net, OptimizerHandle& opt, DeviceDataset& ds, const at::Tensor& permutation, int64_t batchIndex, int64_t batchSize,
                           int64_t count, const StepOptions& options) {
  for (int64_t k = 0; k < count; ++k) {
    auto [x, y] = ds.batch(permutation.narrow(0, (batchIndex + k) * batchSize, batchSize), options.augmentation, net.dtype());
    x = net.prepareInput(x);
    y = y.to(net.device());
    StepResult r = trainStep(net, opt, x, y, options, options.mix.empty() ? c10::nullopt : options.mix[size_t(k)]);
    if (r.skipped) {
      ++skipped_;
      continue;
    }
    at::NoGradGuard noGrad;
    at::Tensor batchLoss = r.loss.detach().to(at::kDouble) * double(batchSize);
    at::Tensor batchCorrect = r.logits.argmax(1).eq(r.labels).sum();
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

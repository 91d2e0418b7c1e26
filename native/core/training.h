#pragma once
// Training steps of a Network with one of its optimizers: zero grad, optional Mixup / CutMix of the
// batch, hooks (data parallel), per micro-batch autocast forward, label-smoothed (or soft-target)
// cross-entropy and backward, optional gradient-norm clipping, optional skipping of non-finite steps,
// optimizer step, optional EMA update. A Trainer owns the metrics accumulated on the device between
// two takeMetrics() calls.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dataset.h"

namespace repopt {

class Network;
struct OptimizerHandle;

// One step's Mixup or CutMix (drawn on the host, lib/train/mixup.ts): the batch mixed with itself
// reversed (x.flip(0)), the targets soft: lam * onehot(y) + (1 - lam) * onehot(y.flip(0)), smoothed.
struct MixDraw {
  enum class Kind { Mixup, Cutmix };
  Kind kind = Kind::Mixup;
  double lam = 1;
  // CutMix: rows [top, bottom) and columns [left, right) come from the reversed batch (lam is the
  // share of the image outside that box).
  int64_t top = 0, bottom = 0, left = 0, right = 0;
};

struct StepOptions {
  Augmentation augmentation;
  double labelSmoothing = 0;
  double clipNorm = 0;  // 0: no clipping
  bool skipNonFinite = false;
  c10::optional<at::ScalarType> autocast;
  // Micro-batches per optimizer step: each forward + backward on batch/accumulate samples with the loss
  // divided by accumulate, then one optimizer step (the batch size divides evenly; no process group).
  int64_t accumulate = 1;
  // After each optimizer step (not after a skipped one): ema = decay * ema + (1 - decay) * net over
  // every floating parameter and buffer, integer buffers copied. Same architecture, device and dtype.
  std::shared_ptr<Network> ema;
  double emaDecay = 0;
  // trainBatches: one entry per step of the call (nullopt: that step is not mixed); empty: none is.
  std::vector<c10::optional<MixDraw>> mix;
};

struct StepResult {
  at::Tensor logits, loss;  // loss: 0-d, on the device
  at::Tensor labels;        // what accuracy counts against: y, or a mixed batch's dominant labels
  bool skipped = false;     // skipNonFinite found a non-finite loss or gradient; the weights are untouched
};

struct TrainMetrics {
  double count, loss, accuracy, skipped;
};

// One step on a batch already on the network's device (x in its dtype, y int64 labels), mixed first
// when `mix` is given.
StepResult trainStep(Network& net, OptimizerHandle& opt, const at::Tensor& x, const at::Tensor& y, const StepOptions& options,
                     const c10::optional<MixDraw>& mix = c10::nullopt);

// The batch mixed as `mix` says (no gradient).
at::Tensor mixBatch(const at::Tensor& x, const MixDraw& mix);

// mean(sum(-target * log_softmax(logits))) with target = lam * t(y) + (1 - lam) * t(yOther), where
// t(label) is off = smoothing / classes everywhere and 1 - smoothing + off at the label.
at::Tensor softTargetCrossEntropy(const at::Tensor& logits, const at::Tensor& y, const at::Tensor& yOther, double lam, double smoothing);

// Benchmarks: fixed random gradients on every trainable parameter, then `steps` optimizer steps timed
// one by one (milliseconds each).
std::vector<double> timeOptimizerSteps(Network& net, OptimizerHandle& opt, int64_t steps);

class Trainer {
 public:
  // `count` consecutive batches of `batchSize` samples from batch `batchIndex` of `permutation` on,
  // each one trainStep; loss and accuracy accumulate on the device (no host synchronisation).
  void trainBatches(Network& net, OptimizerHandle& opt, DeviceDataset& ds, const at::Tensor& permutation, int64_t batchIndex, int64_t batchSize, int64_t count,
                    const StepOptions& options);
  // Means since the last call (the one host-device synchronisation of a reporting interval); resets.
  TrainMetrics takeMetrics();

 private:
  at::Tensor lossSum_, correct_;
  int64_t seen_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace repopt

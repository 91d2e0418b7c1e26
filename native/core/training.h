#pragma once
// Training steps of a Network with one of its optimizers: zero grad, hooks (data parallel), autocast
// forward, label-smoothed cross-entropy, backward, optional gradient-norm clipping, optional skipping
// of non-finite steps, optimizer step. A Trainer owns the metrics accumulated on the device between
// two takeMetrics() calls.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

#include "dataset.h"

namespace repopt {

class Network;
struct OptimizerHandle;

struct StepOptions {
  Augmentation augmentation;
  double labelSmoothing = 0;
  double clipNorm = 0;  // 0: no clipping
  bool skipNonFinite = false;
  c10::optional<at::ScalarType> autocast;
};

struct StepResult {
  at::Tensor logits, loss;  // loss: 0-d, on the device
  bool skipped = false;     // skipNonFinite found a non-finite loss or gradient; the weights are untouched
};

struct TrainMetrics {
  double count, loss, accuracy, skipped;
};

// One step on a batch already on the network's device (x in its dtype, y int64 labels).
StepResult trainStep(Network& net, OptimizerHandle& opt, const at::Tensor& x, const at::Tensor& y, const StepOptions& options);

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

#pragma once
// INT8 quantization of plain networks (target or deploy blocks): range observers, PyTorch's qparam
// rules, a fake-quantized forward (post-training simulation, and quantization-aware training with
// straight-through gradients) and real int8 inference with libtorch's quantized CPU ops (QNNPACK).
//
// Quantization points, in order: 'input' (the normalised image), each block's output (after ReLU,
// which is the next block's conv input), 'pool' (global average) and 'logits'. Weights: per output
// channel, symmetric int8. Conv bias (deploy blocks) and the linear bias: int32 with scale
// input scale x weight scale, as the quantized kernels do.
#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "evaluate.h"

namespace repopt {

class Network;
class DeviceDataset;

enum class ObserverKind { MinMax, Percentile };

struct QuantOptions {
  ObserverKind observer = ObserverKind::MinMax;
  double percentile = 99.99;       // Percentile: the upper percentile (the lower one is 100 - p)
  bool signedActivations = false;  // int8 [-128, 127] instead of uint8 [0, 255]
  double qatMomentum = 0.01;       // QAT: ranges follow each batch's min/max by this moving-average factor
};

// PyTorch's per-tensor affine rule (torch.ao.quantization observers): the range is widened to hold 0,
// scale = (max - min) / (qmax - qmin), zero point = qmin - round(min / scale), in float32.
struct AffineQuant {
  double scale;
  int64_t zeroPoint;
  int64_t qmin, qmax;
};
AffineQuant affineFromRange(double lo, double hi, int64_t qmin, int64_t qmax);

// PyTorch's per-channel symmetric int8 rule: scale_c = max|w_c| / 127.5 (at least float32 eps),
// zero point 0, range [-128, 127]. Channels along dim 0. Returns float32 scales.
at::Tensor symmetricChannelScales(const at::Tensor& weight);

// The range of one quantization point over calibration batches. MinMax: the running min and max.
// Percentile: per batch the nearest-rank (100-p)-th and p-th percentiles, averaged over batches.
class RangeObserver {
 public:
  RangeObserver(ObserverKind kind, double percentile) : kind_(kind), percentile_(percentile) {}
  // Throws (naming `point` and the batch) on a NaN or infinite value.
  void observe(const at::Tensor& x, const std::string& point);
  int64_t batches() const { return batches_; }
  std::pair<double, double> range() const;

 private:
  ObserverKind kind_;
  double percentile_;
  double lo_ = std::numeric_limits<double>::infinity(), hi_ = -std::numeric_limits<double>::infinity();
  double sumLo_ = 0, sumHi_ = 0;
  int64_t batches_ = 0;
};

struct QuantPoint {
  std::string name;
  double lo = 0, hi = 0;  // the calibrated (or, in QAT, moving-average) range
  AffineQuant params() const;
  int64_t qmin = 0, qmax = 255;
};

// A deploy network's weights packed for libtorch's quantized CPU kernels, with its points' qparams.
struct Int8Model {
  std::vector<c10::IValue> convs;  // Conv2dPackedParamsBase per block
  c10::IValue linear;              // LinearPackedParamsBase
  std::vector<AffineQuant> points;
  // Logits (float32) of a float32 NCHW batch.
  at::Tensor forward(const at::Tensor& x) const;
};

// The quantization state a network carries once calibrated.
class QuantState {
 public:
  enum class Mode { Off, Calibrate, Fake };

  QuantState(const Network& net, const QuantOptions& options);
  const QuantOptions& options() const { return options_; }
  std::vector<QuantPoint>& points() { return points_; }
  const std::vector<QuantPoint>& points() const { return points_; }
  Mode mode = Mode::Off;

  // Calibrate: a float forward that records every point's range. Fake: the fake-quantized forward
  // (in training mode the ranges follow the batches and gradients pass straight through).
  at::Tensor forward(Network& net, const at::Tensor& x);
  // Closes calibration: turns the observers' ranges into the points' ranges.
  void finishCalibration();
  // Real int8 inference (deploy blocks, float32, uint8 activations): the current weights quantized
  // and packed.
  Int8Model buildInt8(const Network& net) const;

 private:
  at::Tensor point(size_t index, const at::Tensor& x, bool training);

  QuantOptions options_;
  std::vector<QuantPoint> points_;
  std::vector<RangeObserver> observers_;
};

// The weighted layers in quantization order (each block's conv, then the linear layer), with the
// index of the quantization point that feeds each.
struct QuantLayer {
  std::string key;          // the weight's state_dict key
  at::Tensor weight, bias;  // bias: deploy convs and the linear layer
  size_t inputPoint;
};
std::vector<QuantLayer> quantLayers(const Network& net);

// `weight` (with scales = symmetricChannelScales(weight)) as a per-channel qint8 tensor, and fake-
// quantized to that grid in float (straight-through gradient).
at::Tensor quantizeWeight(const at::Tensor& weight, const at::Tensor& scales);
at::Tensor fakeQuantWeight(const at::Tensor& weight, const at::Tensor& scales);
// The int32 values of `bias` with scale inputScale x weightScales (as an int32 tensor), and the
// float bias they stand for (straight-through gradient).
at::Tensor quantizeBias(const at::Tensor& bias, double inputScale, const at::Tensor& weightScales);
at::Tensor fakeQuantBias(const at::Tensor& bias, double inputScale, const at::Tensor& weightScales);

// Calibration: eval-mode forwards of the first `batches` batches of `permutation` (batchSize samples
// each, no augmentation) observe every quantization point. The new state replaces net.quant only once
// every batch succeeded; it is returned.
std::shared_ptr<QuantState> calibrate(Network& net, DeviceDataset& ds, const at::Tensor& permutation, int64_t batchSize, int64_t batches,
                                      const QuantOptions& options);

// Real int8 inference over the whole data set in order (no augmentation): loss and accuracy of the
// network's current weights quantized with q's ranges (QuantState::buildInt8's conditions).
EvalMetrics evaluateInt8(const Network& net, const QuantState& q, DeviceDataset& ds, int64_t batchSize);

// One weighted layer as the int8 kernels hold it (for export): the current weights and ranges.
struct QuantizedLayer {
  std::string key;    // the weight's state_dict key
  at::Tensor weight;  // int8, CPU, contiguous, the float weight's shape
  at::Tensor scales;  // float32, one per output channel (symmetric, zero point 0)
  at::Tensor bias;    // int32, CPU, contiguous, scale input scale x weight scale; undefined when the layer has none
};
std::vector<QuantizedLayer> quantizedWeights(const Network& net, const QuantState& q);

}  // namespace repopt

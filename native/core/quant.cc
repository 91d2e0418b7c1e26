#include "quant.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cmath>

#include "dataset.h"
#include "network.h"

namespace repopt {

namespace {

constexpr float kFloatEps = std::numeric_limits<float>::epsilon();

// Nearest-rank percentile: the ceil(p/100 * n)-th smallest value (1-based), clamped to [1, n].
double nearestRank(const at::Tensor& flat, double p) {
  const int64_t n = flat.numel();
  const int64_t k = std::clamp<int64_t>(int64_t(std::ceil(p / 100.0 * double(n))), 1, n);
  return std::get<0>(at::kthvalue(flat, k)).item<double>();
}

c10::IValue callOp(const char* name, const char* overload, torch::jit::Stack stack) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  op.callBoxed(&stack);
  return stack.at(0);
}

}  // namespace

AffineQuant affineFromRange(double lo, double hi, int64_t qmin, int64_t qmax) {
  const float mn = std::min(float(lo), 0.0f), mx = std::max(float(hi), 0.0f);
  const float scale = std::max((mx - mn) / float(qmax - qmin), kFloatEps);
  const int64_t zeroPoint = std::clamp<int64_t>(qmin - int64_t(std::nearbyint(mn / scale)), qmin, qmax);
  return {double(scale), zeroPoint, qmin, qmax};
}

at::Tensor symmetricChannelScales(const at::Tensor& weight) {
  at::NoGradGuard noGrad;
  const at::Tensor amax = weight.detach().to(at::kFloat).reshape({weight.size(0), -1}).abs().amax(1);
  return (amax / 127.5f).clamp_min(kFloatEps);
}

void RangeObserver::observe(const at::Tensor& x, const std::string& point) {
  at::NoGradGuard noGrad;
  const at::Tensor flat = x.detach().reshape({-1}).to(at::kFloat);
  TORCH_CHECK(flat.numel() > 0, "calibration: quantization point '", point, "' saw an empty tensor");
  if (!at::isfinite(flat).all().item<bool>()) {
    TORCH_CHECK(false, "calibration: non-finite activations (NaN or Inf) at quantization point '", point, "' in calibration batch ", batches_ + 1,
                "; the model or the data is broken (check the checkpoint and the input normalisation)");
  }
  double lo, hi;
  if (kind_ == ObserverKind::MinMax) {
    auto [mn, mx] = at::aminmax(flat);
    lo = mn.item<double>();
    hi = mx.item<double>();
  } else {
    lo = nearestRank(flat, 100.0 - percentile_);
    hi = nearestRank(flat, percentile_);
  }
  lo_ = std::min(lo_, lo);
  hi_ = std::max(hi_, hi);
  sumLo_ += lo;
  sumHi_ += hi;
  ++batches_;
}

std::pair<double, double> RangeObserver::range() const {
  TORCH_CHECK(batches_ > 0, "calibration saw no batches");
  if (kind_ == ObserverKind::MinMax) return {lo_, hi_};
  return {sumLo_ / double(batches_), sumHi_ / double(batches_)};
}

AffineQuant QuantPoint::params() const { return affineFromRange(lo, hi, qmin, qmax); }

QuantState::QuantState(const Network& net, const QuantOptions& options) : options_(options) {
  TORCH_CHECK(options.percentile > 50 && options.percentile <= 100, "percentile must be in (50, 100], got ", options.percentile);
  std::vector<std::string> names{"input"};
  net.plainLayers();  // checks that the network is plain
  for (const auto& block : net.config().blocks) names.push_back(block.name);
  names.push_back("pool");
  names.push_back("logits");
  for (const auto& name : names) {
    QuantPoint p;
    p.name = name;
    p.qmin = options.signedActivations ? -128 : 0;
    p.qmax = options.signedActivations ? 127 : 255;
    points_.push_back(p);
    observers_.emplace_back(options.observer, options.percentile);
  }
}

std::vector<QuantLayer> quantLayers(const Network& net) {
  std::vector<QuantLayer> out;
  for (const auto& l : net.plainLayers()) out.push_back({l.weightKey, l.weight, l.bias, out.size()});
  // The linear layer reads the pooled features: the point after the last block's and 'pool' itself.
  out.push_back({"linear.weight", net.linear()->weight, net.linear()->bias, out.size() + 1});
  return out;
}

at::Tensor quantizeWeight(const at::Tensor& weight, const at::Tensor& scales) {
  return at::quantize_per_channel(weight.detach().contiguous(), scales.to(at::kDouble), at::zeros({weight.size(0)}, at::kLong), 0, at::kQInt8);
}

at::Tensor fakeQuantWeight(const at::Tensor& weight, const at::Tensor& scales) {
  const at::Tensor zeroPoints = at::zeros({weight.size(0)}, weight.options().dtype(at::kInt));
  return at::fake_quantize_per_channel_affine(weight, scales, zeroPoints, 0, -128, 127);
}

namespace {
at::Tensor biasScales(double inputScale, const at::Tensor& weightScales) { return weightScales * float(inputScale); }
}  // namespace

at::Tensor quantizeBias(const at::Tensor& bias, double inputScale, const at::Tensor& weightScales) {
  at::NoGradGuard noGrad;
  // The int32 range as float32 holds it (2^31 - 1 would round up to 2^31 and overflow the cast).
  constexpr double kLow = -2147483648.0, kHigh = 2147483520.0;
  return (bias.detach().to(at::kFloat) / biasScales(inputScale, weightScales)).round_().clamp_(kLow, kHigh).to(at::kInt);
}

at::Tensor fakeQuantBias(const at::Tensor& bias, double inputScale, const at::Tensor& weightScales) {
  at::Tensor quantized;
  {
    at::NoGradGuard noGrad;
    quantized = quantizeBias(bias, inputScale, weightScales).to(bias.scalar_type()).mul_(biasScales(inputScale, weightScales));
  }
  return bias + (quantized - bias.detach());
}

at::Tensor QuantState::point(size_t index, const at::Tensor& x, bool training) {
  QuantPoint& p = points_[index];
  if (mode == Mode::Calibrate) {
    observers_[index].observe(x, p.name);
    return x;
  }
  if (training) {
    at::NoGradGuard noGrad;
    auto [mn, mx] = at::aminmax(x.detach());
    p.lo += options_.qatMomentum * (mn.item<double>() - p.lo);
    p.hi += options_.qatMomentum * (mx.item<double>() - p.hi);
  }
  const AffineQuant q = p.params();
  return at::fake_quantize_per_tensor_affine(x, q.scale, q.zeroPoint, q.qmin, q.qmax);
}

at::Tensor QuantState::forward(Network& net, const at::Tensor& x) {
  TORCH_CHECK(net.dtype() == at::kFloat, "quantization runs on float32 networks; this one is ", net.dtype());
  const bool fake = mode == Mode::Fake;
  const bool training = fake && net.isTraining();
  auto layers = net.plainLayers();
  at::Tensor out = point(0, x, training);
  for (size_t i = 0; i < layers.size(); ++i) {
    PlainLayer& l = layers[i];
    at::Tensor weight = l.weight, bias = l.bias;
    if (fake) {
      const at::Tensor scales = symmetricChannelScales(weight);
      if (bias.defined()) bias = fakeQuantBias(bias, points_[i].params().scale, scales);
      weight = fakeQuantWeight(weight, scales);
    }
    out = at::conv2d(out, weight, bias, {l.stride, l.stride}, {1, 1});
    if (l.norm) out = l.norm(out);
    out = point(i + 1, out.relu(), training);
  }
  out = point(layers.size() + 1, out.mean({2, 3}), training);
  const auto& linear = net.linear();
  at::Tensor weight = linear->weight, bias = linear->bias;
  if (fake) {
    const at::Tensor scales = symmetricChannelScales(weight);
    bias = fakeQuantBias(bias, points_[layers.size() + 1].params().scale, scales);
    weight = fakeQuantWeight(weight, scales);
  }
  out = at::linear(out, weight, bias);
  return point(layers.size() + 2, out, training);
}

void QuantState::finishCalibration() {
  for (size_t i = 0; i < points_.size(); ++i) std::tie(points_[i].lo, points_[i].hi) = observers_[i].range();
  for (auto& o : observers_) o = RangeObserver(options_.observer, options_.percentile);
  mode = Mode::Off;
}

Int8Model QuantState::buildInt8(const Network& net) const {
  TORCH_CHECK(net.config().mode == BlockMode::Deploy, "real int8 inference runs deploy networks (conv3x3 + bias per block); fold this one first");
  TORCH_CHECK(net.dtype() == at::kFloat && net.device().is_cpu(), "real int8 inference runs float32 networks on the CPU");
  TORCH_CHECK(!options_.signedActivations, "real int8 inference uses uint8 activations (QNNPACK); calibrate without signed activations");
  at::globalContext().setQEngine(at::QEngine::QNNPACK);
  at::NoGradGuard noGrad;
  Int8Model model;
  for (const auto& p : points_) model.points.push_back(p.params());
  for (const auto& l : net.plainLayers()) {
    const c10::List<int64_t> stride({l.stride, l.stride}), one({1, 1});
    model.convs.push_back(
        callOp("quantized::conv2d_prepack", "", {quantizeWeight(l.weight, symmetricChannelScales(l.weight)), l.bias.detach(), stride, one, one, int64_t(1)}));
  }
  const auto& linear = net.linear();
  model.linear = callOp("quantized::linear_prepack", "", {quantizeWeight(linear->weight, symmetricChannelScales(linear->weight)), linear->bias.detach()});
  return model;
}

at::Tensor Int8Model::forward(const at::Tensor& x) const {
  at::NoGradGuard noGrad;
  at::globalContext().setQEngine(at::QEngine::QNNPACK);
  auto quantize = [&](const at::Tensor& t, const AffineQuant& q) { return at::quantize_per_tensor(t.contiguous(), q.scale, q.zeroPoint, at::kQUInt8); };
  at::Tensor q = quantize(x.to(at::kFloat), points.front());
  for (size_t i = 0; i < convs.size(); ++i) q = callOp("quantized::conv2d_relu", "new", {q, convs[i], points[i + 1].scale, points[i + 1].zeroPoint}).toTensor();
  q = quantize(q.dequantize().mean({2, 3}), points[convs.size() + 1]);
  const AffineQuant& out = points.back();
  return callOp("quantized::linear", "", {q, linear, out.scale, out.zeroPoint}).toTensor().dequantize();
}

std::shared_ptr<QuantState> calibrate(Network& net, DeviceDataset& ds, const at::Tensor& permutation, int64_t batchSize, int64_t batches,
                                      const QuantOptions& options) {
  auto state = std::make_shared<QuantState>(net, options);
  TORCH_CHECK(net.dtype() == at::kFloat, "the network must be float32 to quantize");
  TORCH_CHECK(batches >= 1 && batchSize >= 1 && batches * batchSize <= permutation.size(0), "calibration needs 1 to ",
              permutation.size(0) / std::max<int64_t>(batchSize, 1), " batches of ", batchSize, " samples, got ", batches);
  net.train(false);
  at::NoGradGuard noGrad;
  state->mode = QuantState::Mode::Calibrate;
  for (int64_t b = 0; b < batches; ++b) {
    auto [x, y] = ds.batch(permutation.narrow(0, b * batchSize, batchSize), Augmentation{}, net.dtype());
    state->forward(net, x.to(net.device()));
  }
  state->finishCalibration();
  net.quant = state;  // replaces earlier ranges only once calibration succeeded
  return state;
}

EvalMetrics evaluateInt8(const Network& net, const QuantState& q, DeviceDataset& ds, int64_t batchSize) {
  const Int8Model model = q.buildInt8(net);
  return evaluateDataset(ds, batchSize, at::kFloat, [&](const at::Tensor& x) { return model.forward(x.cpu()); });
}

std::vector<QuantizedLayer> quantizedWeights(const Network& net, const QuantState& q) {
  at::NoGradGuard noGrad;
  std::vector<QuantizedLayer> out;
  for (const QuantLayer& l : quantLayers(net)) {
    QuantizedLayer r;
    r.key = l.key;
    r.scales = symmetricChannelScales(l.weight).cpu();
    r.weight = quantizeWeight(l.weight.detach().to(at::kCPU, at::kFloat), r.scales).int_repr().contiguous();
    if (l.bias.defined()) r.bias = quantizeBias(l.bias.cpu(), q.points()[l.inputPoint].params().scale, r.scales).contiguous();
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace repopt

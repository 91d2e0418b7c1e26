// The JS Network's quantization methods: calibration, fake-quant mode, ranges in and out, real int8
// inference, and the int8 weights for export.
#include "async.h"
#include "core/quant.h"
#include "dataset_js.h"
#include "errors.h"
#include "network_js.h"
#include "tensor.h"

namespace repopt {

namespace {

QuantOptions readQuantOptions(const Fields& f) {
  QuantOptions o;
  const std::string observer = f.string("observer", "minmax");
  if (observer != "minmax" && observer != "percentile") f.fail("observer", "must be 'minmax' or 'percentile', got '" + observer + "'", true);
  o.observer = observer == "minmax" ? ObserverKind::MinMax : ObserverKind::Percentile;
  o.percentile = f.number("percentile", o.percentile);
  if (!(o.percentile > 50 && o.percentile <= 100)) f.fail("percentile", "must be in (50, 100]", true);
  const std::string activations = f.string("activations", "uint8");
  if (activations != "uint8" && activations != "int8") f.fail("activations", "must be 'uint8' or 'int8', got '" + activations + "'", true);
  o.signedActivations = activations == "int8";
  o.qatMomentum = f.number("qatMomentum", o.qatMomentum);
  if (!(o.qatMomentum > 0 && o.qatMomentum <= 1)) f.fail("qatMomentum", "must be in (0, 1]", true);
  return o;
}

Napi::Float64Array float64Array(Napi::Env env, const at::Tensor& t) {
  const at::Tensor d = t.detach().to(at::kCPU, at::kDouble).contiguous();
  auto out = Napi::Float64Array::New(env, size_t(d.numel()));
  std::copy_n(d.data_ptr<double>(), d.numel(), out.Data());
  return out;
}

Napi::Array shapeOf(Napi::Env env, const at::Tensor& t) {
  auto out = Napi::Array::New(env, size_t(t.dim()));
  for (int64_t d = 0; d < t.dim(); ++d) out.Set(uint32_t(d), double(t.size(d)));
  return out;
}

Napi::Object describe(Napi::Env env, const Network& net, const QuantState& q) {
  const QuantOptions& o = q.options();
  auto out = Napi::Object::New(env);
  out.Set("observer", o.observer == ObserverKind::MinMax ? "minmax" : "percentile");
  out.Set("percentile", o.percentile);
  out.Set("activations", o.signedActivations ? "int8" : "uint8");
  auto points = Napi::Array::New(env, q.points().size());
  for (size_t i = 0; i < q.points().size(); ++i) {
    const QuantPoint& p = q.points()[i];
    const AffineQuant a = p.params();
    auto obj = Napi::Object::New(env);
    obj.Set("name", p.name);
    obj.Set("min", p.lo);
    obj.Set("max", p.hi);
    obj.Set("scale", a.scale);
    obj.Set("zeroPoint", double(a.zeroPoint));
    obj.Set("qmin", double(a.qmin));
    obj.Set("qmax", double(a.qmax));
    points.Set(uint32_t(i), obj);
  }
  out.Set("points", points);
  // Weights: per-channel scales of the current weights.
  const auto layers = quantLayers(net);
  auto list = Napi::Array::New(env, layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    auto obj = Napi::Object::New(env);
    obj.Set("key", layers[i].key);
    obj.Set("scales", float64Array(env, symmetricChannelScales(layers[i].weight)));
    list.Set(uint32_t(i), obj);
  }
  out.Set("weights", list);
  return out;
}

QuantState& quantOf(Network& net, const char* fn) {
  if (!net.quant) throw std::runtime_error(std::string(fn) + ": the network has no quantization ranges; calibrate it first (or set them)");
  return *net.quant;
}

// observeRange(batches: Tensor[], options?): the observer and qparam rules on given tensors, as the
// network's calibration applies them at one point.
Napi::Value ObserveRange(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "observeRange");
    args.expectCount(1, 2);
    if (!args[0].IsArray()) args.typeError("batches", "an array of Tensors");
    Napi::Array batches = args[0].As<Napi::Array>();
    if (batches.Length() == 0) args.rangeError("batches", "is empty (calibration needs at least one batch)");
    QuantOptions o;
    if (args.has(1)) o = readQuantOptions(Fields(info.Env(), args.object(1, "options"), args.fn(), "options"));
    RangeObserver observer(o.observer, o.percentile);
    for (uint32_t k = 0; k < batches.Length(); ++k) {
      const at::Tensor* t = Tensor::TryGet(batches.Get(k), args.fn());
      if (t == nullptr) args.typeError("batches", "an array of Tensors (element " + std::to_string(k) + " is not one)");
      observer.observe(*t, "batches[" + std::to_string(k) + "]");
    }
    auto [lo, hi] = observer.range();
    const AffineQuant a = affineFromRange(lo, hi, o.signedActivations ? -128 : 0, o.signedActivations ? 127 : 255);
    auto out = Napi::Object::New(info.Env());
    out.Set("min", lo);
    out.Set("max", hi);
    out.Set("scale", a.scale);
    out.Set("zeroPoint", double(a.zeroPoint));
    return out;
  });
}

// channelScales(weight): the per-output-channel symmetric int8 scales of a weight tensor.
Napi::Value ChannelScales(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "channelScales");
    args.expectCount(1, 1);
    const at::Tensor& w = Tensor::Get(args, 0, "weight");
    if (w.dim() < 1 || w.numel() == 0 || !w.is_floating_point()) args.typeError("weight", "a non-empty floating-point tensor");
    return float64Array(info.Env(), symmetricChannelScales(w));
  });
}

}  // namespace

void InitQuantFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("observeRange", Napi::Function::New<ObserveRange>(env, "observeRange"));
  exports.Set("channelScales", Napi::Function::New<ChannelScales>(env, "channelScales"));
}

namespace {

// calibrate(dataset, permutation, batchSize, batches, options?)
struct CalibrateArgs {
  std::shared_ptr<DeviceDataset> dataset;
  at::Tensor permutation;
  int64_t batchSize, batches;
  QuantOptions options;
};

CalibrateArgs readCalibrateArgs(const Args& args, const Network& net) {
  args.expectCount(4, 5);
  CalibrateArgs c;
  c.dataset = JsDataset::Get(args, 0, "dataset");
  c.permutation = permutationArg(args, 1, *c.dataset);
  c.batchSize = args.integer(2, "batchSize", 1, 1 << 20);
  if (!args[3].IsNumber() || args[3].As<Napi::Number>().DoubleValue() < 1) args.rangeError("batches", "must be at least 1 (calibration needs data)");
  const int64_t available = c.dataset->count() / c.batchSize;
  c.batches = args.integer(3, "batches", 1, std::max<int64_t>(available, 1));
  if (available == 0) args.rangeError("batchSize", "is larger than the dataset (" + std::to_string(c.dataset->count()) + ")");
  if (args.has(4)) c.options = readQuantOptions(Fields(args.env(), args.object(4, "options"), args.fn(), "options"));
  if (net.dtype() != at::kFloat) args.rangeError("network", "must be float32 to quantize");
  return c;
}

// evaluateInt8(dataset, batchSize)
struct Int8EvalArgs {
  std::shared_ptr<DeviceDataset> dataset;
  int64_t batchSize;
  std::shared_ptr<QuantState> quant;
};

Int8EvalArgs readInt8EvalArgs(const Args& args, Network& net) {
  args.expectCount(2, 2);
  Int8EvalArgs e{JsDataset::Get(args, 0, "dataset"), args.integer(1, "batchSize", 1, 1 << 20), nullptr};
  quantOf(net, args.fn());
  e.quant = net.quant;
  return e;
}

}  // namespace

Napi::Value JsNetwork::Calibrate(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // calibrate(dataset, permutation, batchSize, batches, options?): eval-mode forwards of the first
    // `batches` batches in permutation order, observing every quantization point.
    Args args(info, "Network.calibrate");
    Network& net = idle(args.fn());
    const CalibrateArgs c = readCalibrateArgs(args, net);
    auto state = calibrate(net, *c.dataset, c.permutation, c.batchSize, c.batches, c.options);
    return describe(info.Env(), net, *state);
  });
}

Napi::Value JsNetwork::CalibrateAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // calibrate off the JS thread; the network and the dataset are busy until it settles.
    Args args(info, "Network.calibrateAsync");
    Network& net = idle(args.fn());
    CalibrateArgs c = readCalibrateArgs(args, net);
    auto claim = std::make_shared<AsyncClaim>(busy_, net, nullptr, c.dataset);
    std::shared_ptr<Network> keep = network_;
    return PromiseWorker<std::shared_ptr<QuantState>>::start(
        info.Env(), [keep, c]() { return calibrate(*keep, *c.dataset, c.permutation, c.batchSize, c.batches, c.options); },
        [keep](Napi::Env env, std::shared_ptr<QuantState>& state) -> Napi::Value { return describe(env, *keep, *state); }, [claim]() { claim->release(); });
  });
}

Napi::Value JsNetwork::SetQuantRanges(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // setQuantRanges({ observer?, percentile?, activations?, points: [{ name, min, max }] }): ranges from
    // another network of the same blocks (e.g. a QAT model before its BN fold), or from a file.
    Args args(info, "Network.setQuantRanges");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    Fields f(info.Env(), args.object(0, "ranges"), args.fn(), "ranges");
    auto state = std::make_shared<QuantState>(net, readQuantOptions(f));
    Napi::Array points = f.array("points");
    if (points.Length() != state->points().size()) {
      f.fail("points",
             "has " + std::to_string(points.Length()) + " entries; this network has " + std::to_string(state->points().size()) + " quantization points", true);
    }
    for (uint32_t k = 0; k < points.Length(); ++k) {
      Fields p = f.element(points, "points", k);
      QuantPoint& target = state->points()[k];
      if (p.string("name") != target.name) p.fail("name", "is '" + p.string("name") + "'; expected '" + target.name + "' (another architecture?)", true);
      target.lo = p.number("min");
      target.hi = p.number("max");
      if (!std::isfinite(target.lo) || !std::isfinite(target.hi) || target.lo > target.hi) p.fail("min", "and max must be finite with min <= max", true);
    }
    net.quant = state;
    return describe(info.Env(), net, *state);
  });
}

Napi::Value JsNetwork::QuantParams(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.quantParams");
    args.expectCount(0, 0);
    Network& net = idle(args.fn());
    if (!net.quant) return info.Env().Null();
    return describe(info.Env(), net, *net.quant);
  });
}

Napi::Value JsNetwork::SetFakeQuant(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // setFakeQuant(on): forward, evaluate and trainBatch run the fake-quantized network (QAT when training).
    Args args(info, "Network.setFakeQuant");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    const bool on = args.boolean(0, "on");
    if (on) {
      if (net.dtype() != at::kFloat) throw std::runtime_error("Network.setFakeQuant: quantization runs on float32 networks");
      quantOf(net, args.fn()).mode = QuantState::Mode::Fake;
    } else if (net.quant) {
      net.quant->mode = QuantState::Mode::Off;
    }
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::EvaluateInt8(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // evaluateInt8(dataset, batchSize): accuracy of real int8 inference (QNNPACK kernels).
    Args args(info, "Network.evaluateInt8");
    Network& net = idle(args.fn());
    const Int8EvalArgs e = readInt8EvalArgs(args, net);
    return metricsObject(info.Env(), evaluateInt8(net, *e.quant, *e.dataset, e.batchSize));
  });
}

Napi::Value JsNetwork::EvaluateInt8Async(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // evaluateInt8 off the JS thread; the network and the dataset are busy until it settles.
    Args args(info, "Network.evaluateInt8Async");
    Network& net = idle(args.fn());
    Int8EvalArgs e = readInt8EvalArgs(args, net);
    auto claim = std::make_shared<AsyncClaim>(busy_, net, nullptr, e.dataset);
    std::shared_ptr<Network> keep = network_;
    return PromiseWorker<EvalMetrics>::start(
        info.Env(), [keep, e]() { return evaluateInt8(*keep, *e.quant, *e.dataset, e.batchSize); },
        [](Napi::Env env, EvalMetrics& m) -> Napi::Value { return metricsObject(env, m); }, [claim]() { claim->release(); });
  });
}

Napi::Value JsNetwork::ForwardInt8(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.forwardInt8");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    const at::Tensor& x = Tensor::Get(args, 0, "input");
    checkInput(args, net, x);
    if (!x.is_floating_point()) args.typeError("input", "a floating-point tensor");
    return Tensor::Wrap(info.Env(), quantOf(net, args.fn()).buildInt8(net).forward(x.cpu()));
  });
}

Napi::Value JsNetwork::QuantizedWeights(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // quantizedWeights(): per layer { key, shape, weight: Int8Array, scales: Float64Array, bias?:
    // Int32Array (scale: input scale x weight scale) } of the current weights and ranges.
    Args args(info, "Network.quantizedWeights");
    args.expectCount(0, 0);
    Network& net = idle(args.fn());
    const std::vector<QuantizedLayer> layers = quantizedWeights(net, quantOf(net, args.fn()));
    auto out = Napi::Array::New(info.Env(), layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const QuantizedLayer& l = layers[i];
      auto obj = Napi::Object::New(info.Env());
      obj.Set("key", l.key);
      obj.Set("shape", shapeOf(info.Env(), l.weight));
      auto weight = Napi::Int8Array::New(info.Env(), size_t(l.weight.numel()));
      std::copy_n(l.weight.data_ptr<int8_t>(), l.weight.numel(), weight.Data());
      obj.Set("weight", weight);
      obj.Set("scales", float64Array(info.Env(), l.scales));
      if (l.bias.defined()) {
        auto bias = Napi::Int32Array::New(info.Env(), size_t(l.bias.numel()));
        std::copy_n(l.bias.data_ptr<int32_t>(), l.bias.numel(), bias.Data());
        obj.Set("bias", bias);
      }
      out.Set(uint32_t(i), obj);
    }
    return out;
  });
}

}  // namespace repopt

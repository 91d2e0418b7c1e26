#include "network_js.h"

#include <torch/utils.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "addon.h"
#include "async.h"
#include "core/optimizer.h"
#include "dataset_js.h"
#include "errors.h"
#include "optimizer_js.h"
#include "tensor.h"

namespace repopt {

namespace {

const napi_type_tag kNetworkTag = {0x3f8a2c6e1b7d4905ULL, 0xa4e19c3b7f2d6058ULL};

NetworkConfig parseNetworkConfig(const Fields& spec) {
  NetworkConfig c;
  c.mode = parseBlockMode(spec.string("mode"));
  c.inChannels = spec.integer("inChannels", 1, 1 << 20);
  c.numClasses = spec.integer("numClasses", 1, 1 << 24);
  Napi::Array blocks = spec.array("blocks");
  if (blocks.Length() == 0) spec.fail("blocks", "must hold at least one block", true);
  for (uint32_t k = 0; k < blocks.Length(); ++k) {
    Fields b = spec.element(blocks, "blocks", k);
    BlockConfig block{b.string("name"), b.integer("inChannels", 1, 1 << 20), b.integer("outChannels", 1, 1 << 20), b.integer("stride", 1, 2),
                      b.number("scaleInit", 1.0)};
    c.blocks.push_back(block);
  }
  return c;
}

// The resolved optimizer spec of lib/optimizer-spec.ts (every field present and defaulted): type
// conversions only.
OptimizerConfig readOptimizerConfig(const Fields& spec) {
  OptimizerConfig c;
  const std::string type = spec.string("type");
  if (type != "sgd" && type != "adamw") spec.fail("type", "must be 'sgd' or 'adamw', got '" + type + "'", true);
  c.type = type == "sgd" ? OptimizerType::Sgd : OptimizerType::AdamW;
  Napi::Array betas = spec.array("betas");
  if (betas.Length() != 2 || !betas.Get(0u).IsNumber() || !betas.Get(1u).IsNumber()) spec.fail("betas", "must be two numbers", true);
  const double beta1 = betas.Get(0u).As<Napi::Number>().DoubleValue(), beta2 = betas.Get(1u).As<Napi::Number>().DoubleValue();
  const double eps = spec.number("eps");
  Napi::Array groups = spec.array("groups");
  for (uint32_t k = 0; k < groups.Length(); ++k) {
    Fields g = spec.element(groups, "groups", k);
    GroupConfig group;
    group.params = g.strings("params");
    group.lr = g.number("lr");
    group.momentum = g.number("momentum");
    group.dampening = g.number("dampening");
    group.weightDecay = g.number("weightDecay");
    group.nesterov = g.boolean("nesterov");
    group.beta1 = beta1;
    group.beta2 = beta2;
    group.eps = eps;
    c.groups.push_back(std::move(group));
  }
  if (c.groups.empty()) spec.fail("groups", "must hold at least one group", true);
  const std::string storage = spec.string("gradMultStorage");
  if (storage != "compact" && storage != "full") spec.fail("gradMultStorage", "must be 'compact' or 'full', got '" + storage + "'", true);
  c.storage = storage == "full" ? GradMultStorage::Full : GradMultStorage::Compact;
  const std::string impl = spec.string("implementation");
  auto named = RepOptSGD::implementationNamed(impl);
  if (!named) spec.fail("implementation", "must be 'fused', 'foreach' or 'reference', got '" + impl + "'", true);
  c.implementation = *named;
  Napi::Value mults = spec.raw("gradMults");
  c.repopt = !mults.IsNull() && !mults.IsUndefined();  // null or absent: plain SGD / AdamW
  if (c.repopt) {
    Napi::Array list = spec.array("gradMults");
    for (uint32_t k = 0; k < list.Length(); ++k) {
      Fields m = spec.element(list, "gradMults", k);
      auto base = m.float64Array("base"), centre = m.float64Array("centre");
      c.gradMults.push_back(GradMultConfig{m.string("param"), std::vector<double>(base.Data(), base.Data() + base.ElementLength()),
                                           std::vector<double>(centre.Data(), centre.Data() + centre.ElementLength()), m.boolean("identity"),
                                           m.integer("groups", 1, 1 << 20)});
    }
  }
  return c;
}

// Checks a batch against the network; returns input and labels on the network's device and dtype.
std::pair<at::Tensor, at::Tensor> prepareBatch(const Args& args, const Network& net, const at::Tensor& x, const at::Tensor& y) {
  const auto& c = net.config();
  checkInput(args, net, x);
  if (y.dim() != 1 || y.size(0) != x.size(0)) args.rangeError("labels", "must be [" + std::to_string(x.size(0)) + "], got " + c10::str(y.sizes()));
  if (y.scalar_type() != at::kLong && y.scalar_type() != at::kInt) args.typeError("labels", "an int32 or int64 tensor");
  if (y.is_cpu() && y.numel() > 0) {
    // Checked here: on CUDA an out-of-range label is a device-side assert that ends the process.
    auto [lo, hi] = at::aminmax(y);
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= c.numClasses) {
      args.rangeError("labels", "must lie in [0, " + std::to_string(c.numClasses) + "), got values in [" + std::to_string(lo.item<int64_t>()) + ", " +
                                    std::to_string(hi.item<int64_t>()) + "]");
    }
  }
  return {x.to(net.device(), net.dtype()), y.to(net.device(), at::kLong)};
}

// { autocast?: 'bf16' | 'none' }: the lower precision of the forward pass, if any.
c10::optional<at::ScalarType> readAutocast(const Fields& f) {
  const std::string a = f.string("autocast", "none");
  if (a == "none") return c10::nullopt;
  if (a == "bf16") return at::kBFloat16;
  if (a == "fp16") f.fail("autocast", "fp16 needs loss scaling, which repopt does not do; use 'bf16'", true);
  f.fail("autocast", "must be 'bf16' or 'none', got '" + a + "'", true);
}

}  // namespace

void checkInput(const Args& args, const Network& net, const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != net.config().inChannels) {
    args.rangeError("input", "must be [N, " + std::to_string(net.config().inChannels) + ", H, W], got " + c10::str(x.sizes()));
  }
}

void JsNetwork::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Network",
                                    {
                                        InstanceAccessor<&JsNetwork::Device>("device"),
                                        InstanceAccessor<&JsNetwork::Dtype>("dtype"),
                                        InstanceMethod<&JsNetwork::StateDict>("stateDict"),
                                        InstanceMethod<&JsNetwork::LoadStateDict>("loadStateDict"),
                                        InstanceMethod<&JsNetwork::Forward>("forward"),
                                        InstanceMethod<&JsNetwork::CreateOptimizer>("createOptimizer"),
                                        InstanceMethod<&JsNetwork::TrainStep>("trainStep"),
                                        InstanceMethod<&JsNetwork::TrainStepAsync>("trainStepAsync"),
                                        InstanceMethod<&JsNetwork::TrainBatchAsync>("trainBatchAsync"),
                                        InstanceMethod<&JsNetwork::EvaluateAsync>("evaluateAsync"),
                                        InstanceMethod<&JsNetwork::SetBatchNormMode>("setBatchNormMode"),
                                        InstanceMethod<&JsNetwork::Dispose>("dispose"),
                                        InstanceMethod<&JsNetwork::TimeOptimizerSteps>("timeOptimizerSteps"),
                                        InstanceMethod<&JsNetwork::To>("to"),
                                        InstanceMethod<&JsNetwork::SetChannelsLast>("setChannelsLast"),
                                        InstanceMethod<&JsNetwork::TrainBatch>("trainBatch"),
                                        InstanceMethod<&JsNetwork::TakeTrainMetrics>("takeTrainMetrics"),
                                        InstanceMethod<&JsNetwork::Evaluate>("evaluate"),
                                        InstanceMethod<&JsNetwork::Calibrate>("calibrate"),
                                        InstanceMethod<&JsNetwork::CalibrateAsync>("calibrateAsync"),
                                        InstanceMethod<&JsNetwork::SetQuantRanges>("setQuantRanges"),
                                        InstanceMethod<&JsNetwork::QuantParams>("quantParams"),
                                        InstanceMethod<&JsNetwork::SetFakeQuant>("setFakeQuant"),
                                        InstanceMethod<&JsNetwork::EvaluateInt8>("evaluateInt8"),
                                        InstanceMethod<&JsNetwork::EvaluateInt8Async>("evaluateInt8Async"),
                                        InstanceMethod<&JsNetwork::ForwardInt8>("forwardInt8"),
                                        InstanceMethod<&JsNetwork::QuantizedWeights>("quantizedWeights"),
                                    });
  exports.Set("Network", ctor);
}

JsNetwork::JsNetwork(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsNetwork>(info) {
  guarded(info.Env(), [&] {
    Args args(info, "Network");
    args.expectCount(1, 2);
    NetworkConfig config = parseNetworkConfig(Fields(info.Env(), args.object(0, "spec"), "Network", "spec"));
    at::ScalarType dtype = at::kFloat;
    if (args.has(1)) {
      Fields options(info.Env(), args.object(1, "options"), "Network", "options");
      const std::string precision = options.string("precision", "float32");
      if (precision != "float32" && precision != "float64") options.fail("precision", "must be 'float32' or 'float64'", true);
      dtype = precision == "float64" ? at::kDouble : at::kFloat;
      if (options.has("seed")) torch::manual_seed(uint64_t(options.integer("seed", 0, (int64_t(1) << 53) - 1)));
    }
    network_ = std::make_shared<Network>(config);
    if (dtype != at::kFloat) network_->to(at::kCPU, dtype);
    info.This().As<Napi::Object>().TypeTag(&kNetworkTag);
  });
}

Network& JsNetwork::idle(const char* fn) const {
  if (!network_) throw Napi::Error::New(Env(), std::string(fn) + ": the network has been disposed");
  if (*busy_) throw Napi::Error::New(Env(), std::string(fn) + ": an asynchronous step is running on this network; await it first");
  return *network_;
}

Napi::Value JsNetwork::Device(const Napi::CallbackInfo& info) {
  requireReceiver(info, kNetworkTag, "Network.device");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), idle("Network.device").device().str()); });
}

Napi::Value JsNetwork::Dtype(const Napi::CallbackInfo& info) {
  requireReceiver(info, kNetworkTag, "Network.dtype");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), dtypeName(idle("Network.dtype").dtype())); });
}

Napi::Value JsNetwork::StateDict(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.stateDict");
    args.expectCount(0, 0);
    Network& net = idle(args.fn());
    auto out = Napi::Object::New(info.Env());
    for (const auto& [name, t] : net.stateDict()) out.Set(name, Tensor::Wrap(info.Env(), t.detach().clone()));
    return out;
  });
}

Napi::Value JsNetwork::LoadStateDict(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.loadStateDict");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    Napi::Object state = args.object(0, "state");
    // Key -> tensor in the object's order; a value that is not a Tensor as an undefined tensor (the
    // core names it), an undefined value as no entry.
    NamedTensors entries;
    Napi::Array keys = state.GetPropertyNames();
    for (uint32_t k = 0; k < keys.Length(); ++k) {
      std::string key = keys.Get(k).ToString().Utf8Value();
      Napi::Value v = state.Get(key);
      if (v.IsUndefined()) continue;
      const at::Tensor* t = Tensor::TryGet(v, args.fn());
      entries.emplace_back(std::move(key), t ? *t : at::Tensor());
    }
    try {
      net.loadStateDict(entries);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), std::string(args.fn()) + ": " + messageOf(e));
    }
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::Forward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.forward");
    args.expectCount(2, 2);
    Network& net = idle(args.fn());
    const at::Tensor& x = Tensor::Get(args, 0, "input");
    const std::string mode = args.string(1, "mode");
    if (mode != "train" && mode != "eval") args.rangeError("mode", "must be 'train' or 'eval', got '" + mode + "'");
    checkInput(args, net, x);
    net.train(mode == "train");
    at::NoGradGuard noGrad;
    return Tensor::Wrap(info.Env(), net.forward(x.to(net.device(), net.dtype())));
  });
}

Napi::Value JsNetwork::CreateOptimizer(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.createOptimizer");
    args.expectCount(1, 1);
    idle(args.fn());
    Fields spec(info.Env(), args.object(0, "spec"), args.fn(), "spec");
    return JsOptimizer::Wrap(info.Env(), buildOptimizer(network_, readOptimizerConfig(spec)));
  });
}

namespace {
struct StepArgs {
  std::shared_ptr<OptimizerHandle> optimizer;
  at::Tensor input, labels;
  StepOptions options;
};

StepArgs readStepArgs(const Args& args, const Network& net) {
  args.expectCount(3, 4);
  StepArgs s{JsOptimizer::Get(args, 0, "optimizer"), {}, {}, {}};
  if (s.optimizer->network.get() != &net) args.rangeError("optimizer", "belongs to another network");
  std::tie(s.input, s.labels) = prepareBatch(args, net, Tensor::Get(args, 1, "input"), Tensor::Get(args, 2, "labels"));
  if (args.has(3)) {
    s.options.labelSmoothing = args.number(3, "labelSmoothing");
    if (!(s.options.labelSmoothing >= 0 && s.options.labelSmoothing <= 1)) args.rangeError("labelSmoothing", "must be in [0, 1]");
  }
  return s;
}

// trainBatch(optimizer, dataset, permutation, batchIndex, batchSize, options?, count?)
struct BatchArgs {
  std::shared_ptr<OptimizerHandle> optimizer;
  std::shared_ptr<DeviceDataset> dataset;
  at::Tensor permutation;
  int64_t batchIndex, batchSize, count;
  StepOptions options;
  std::shared_ptr<bool> emaBusy;  // the EMA network's busy flag, when there is one
};

// options.mix: one entry per step, null or { kind: 'mixup' | 'cutmix', lam, top, bottom, left, right }
// with the CutMix box inside the images.
std::vector<c10::optional<MixDraw>> readMix(const Fields& o, int64_t count, at::IntArrayRef imageShape) {
  Napi::Array list = o.array("mix");
  if (int64_t(list.Length()) != count)
    o.fail("mix", "must hold one entry per step (" + std::to_string(count) + "), got " + std::to_string(list.Length()), true);
  std::vector<c10::optional<MixDraw>> out;
  for (uint32_t k = 0; k < list.Length(); ++k) {
    if (list.Get(k).IsNull()) {
      out.emplace_back(c10::nullopt);
      continue;
    }
    Fields m = o.element(list, "mix", k);
    MixDraw d;
    const std::string kind = m.string("kind");
    if (kind != "mixup" && kind != "cutmix") m.fail("kind", "must be 'mixup' or 'cutmix', got '" + kind + "'", true);
    d.kind = kind == "mixup" ? MixDraw::Kind::Mixup : MixDraw::Kind::Cutmix;
    d.lam = m.number("lam");
    if (!(d.lam >= 0 && d.lam <= 1)) m.fail("lam", "must be in [0, 1]", true);
    if (d.kind == MixDraw::Kind::Cutmix) {
      const int64_t height = imageShape[1], width = imageShape[2];
      d.top = m.integer("top", 0, height);
      d.bottom = m.integer("bottom", d.top, height);
      d.left = m.integer("left", 0, width);
      d.right = m.integer("right", d.left, width);
    }
    out.emplace_back(d);
  }
  return out;
}

BatchArgs readBatchArgs(const Args& args, const Network& net) {
  args.expectCount(5, 7);
  BatchArgs b;
  b.optimizer = JsOptimizer::Get(args, 0, "optimizer");
  if (b.optimizer->network.get() != &net) args.rangeError("optimizer", "belongs to another network");
  b.dataset = JsDataset::Get(args, 1, "dataset");
  b.permutation = permutationArg(args, 2, *b.dataset);
  b.batchSize = args.integer(4, "batchSize", 1, 1 << 20);
  if (b.dataset->count() < b.batchSize) args.rangeError("batchSize", "is larger than the dataset (" + std::to_string(b.dataset->count()) + ")");
  const int64_t batches = b.dataset->count() / b.batchSize;
  b.batchIndex = args.integer(3, "batchIndex", 0, batches - 1);
  b.count = args.has(6) ? args.integer(6, "count", 1, batches - b.batchIndex) : 1;
  if (args.has(5)) {
    Fields o(args.env(), args.object(5, "options"), args.fn(), "options");
    b.options.augmentation = readAugmentation(o);
    b.options.autocast = readAutocast(o);
    b.options.skipNonFinite = o.boolean("skipNonFinite", false);
    b.options.labelSmoothing = o.number("labelSmoothing", 0.0);
    if (b.options.labelSmoothing < 0 || b.options.labelSmoothing > 1) o.fail("labelSmoothing", "must be in [0, 1]", true);
    b.options.clipNorm = o.number("clipNorm", 0.0);  // <= 0 (or NaN): no clipping
    if (o.has("accumulate")) {
      b.options.accumulate = o.integer("accumulate", 1, b.batchSize);
      if (b.batchSize % b.options.accumulate != 0)
        o.fail("accumulate", "must divide batchSize " + std::to_string(b.batchSize) + ", got " + std::to_string(b.options.accumulate), true);
      if (b.options.accumulate > 1 && net.hooks) o.fail("accumulate", "does not run on a network attached to a process group", true);
    }
    Napi::Value ema = o.raw("ema");
    if (!ema.IsUndefined()) {
      if (!ema.IsObject()) o.fail("ema", "must be { network, decay }");
      Fields e(args.env(), ema.As<Napi::Object>(), args.fn(), "options.ema");
      b.options.emaDecay = e.number("decay");
      if (!(b.options.emaDecay >= 0 && b.options.emaDecay <= 1)) e.fail("decay", "must be in [0, 1]", true);
      std::tie(b.options.ema, b.emaBusy) = JsNetwork::GetWithBusy(args, e.raw("network"), "options.ema.network");
      const std::string mismatch = b.options.ema->averageMismatch(net);
      if (!mismatch.empty()) e.fail("network", mismatch, true);
    }
    if (o.has("mix")) b.options.mix = readMix(o, b.count, b.dataset->imageShape());
  }
  return b;
}

// evaluate(dataset, batchSize, options?)
struct EvalArgs {
  std::shared_ptr<DeviceDataset> dataset;
  int64_t batchSize;
  c10::optional<at::ScalarType> autocast;
};

EvalArgs readEvalArgs(const Args& args) {
  args.expectCount(2, 3);
  EvalArgs e{JsDataset::Get(args, 0, "dataset"), args.integer(1, "batchSize", 1, 1 << 20), c10::nullopt};
  if (args.has(2)) e.autocast = readAutocast(Fields(args.env(), args.object(2, "options"), args.fn(), "options"));
  return e;
}

// A train step runs the network's process-group hooks (collectives): refused while an asynchronous
// step of another network attached to the same group runs.
void checkGroupIdle(const Network& net, const char* fn) {
  if (net.hooks && net.hooks->groupAsyncSteps && *net.hooks->groupAsyncSteps > 0) {
    throw std::runtime_error(std::string(fn) + ": an asynchronous step is running on another network attached to this network's process group; await it first");
  }
}
}  // namespace

AsyncClaim::AsyncClaim(std::shared_ptr<bool> network, const Network& net, std::shared_ptr<OptimizerHandle> optimizer, std::shared_ptr<DeviceDataset> dataset)
    : network_(std::move(network)), group_(net.hooks ? net.hooks->groupAsyncSteps : nullptr), optimizer_(std::move(optimizer)), dataset_(std::move(dataset)) {
  *network_ = true;
  if (group_) ++*group_;
  if (optimizer_) ++optimizer_->asyncUsers;
  if (dataset_) ++dataset_->asyncUsers;
}

void AsyncClaim::alsoClaim(std::shared_ptr<bool> network) {
  extra_ = std::move(network);
  *extra_ = true;
}

void AsyncClaim::release() {
  if (!held_) return;
  held_ = false;
  *network_ = false;
  if (extra_) *extra_ = false;
  if (group_) --*group_;
  if (optimizer_) --optimizer_->asyncUsers;
  if (dataset_) --dataset_->asyncUsers;
}

Napi::Value JsNetwork::TrainStep(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.trainStep");
    Network& net = idle(args.fn());
    StepArgs s = readStepArgs(args, net);
    checkGroupIdle(net, args.fn());
    return Napi::Number::New(info.Env(), trainStep(net, *s.optimizer, s.input, s.labels, s.options).loss.item<double>());
  });
}

Napi::Value JsNetwork::TrainStepAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.trainStepAsync");
    Network& net = idle(args.fn());
    StepArgs s = readStepArgs(args, net);
    checkGroupIdle(net, args.fn());
    auto claim = std::make_shared<AsyncClaim>(busy_, net, s.optimizer, nullptr);
    std::shared_ptr<Network> keep = network_;
    return PromiseWorker<double>::start(
        info.Env(), [keep, s]() { return trainStep(*keep, *s.optimizer, s.input, s.labels, s.options).loss.item<double>(); },
        [](Napi::Env env, double& loss) -> Napi::Value { return Napi::Number::New(env, loss); }, [claim]() { claim->release(); });
  });
}

Napi::Value JsNetwork::TimeOptimizerSteps(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.timeOptimizerSteps");
    args.expectCount(2, 2);
    Network& net = idle(args.fn());
    auto opt = JsOptimizer::Get(args, 0, "optimizer");
    if (opt->network.get() != &net) args.rangeError("optimizer", "belongs to another network");
    const int64_t steps = args.integer(1, "steps", 1, 100000);
    const std::vector<double> times = timeOptimizerSteps(net, *opt, steps);
    auto out = Napi::Float64Array::New(info.Env(), times.size());
    std::copy(times.begin(), times.end(), out.Data());
    return out;
  });
}

Napi::Value JsNetwork::To(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.to");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    at::Device device = parseDevice(args, 0, "device");
    // Optimizers hold buffers and GradMults on the old device: move first, then create them.
    if (network_.use_count() > 1) throw Napi::Error::New(info.Env(), "Network.to: optimizers exist for this network; move the network before creating them");
    net.to(device, net.dtype());
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::TrainBatch(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // `count` consecutive batches from batchIndex on, in one native loop (benchmarks compare it with one call per step).
    Args args(info, "Network.trainBatch");
    Network& net = idle(args.fn());
    BatchArgs b = readBatchArgs(args, net);
    checkGroupIdle(net, args.fn());
    trainer_->trainBatches(net, *b.optimizer, *b.dataset, b.permutation, b.batchIndex, b.batchSize, b.count, b.options);
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::TrainBatchAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.trainBatchAsync");
    Network& net = idle(args.fn());
    BatchArgs b = readBatchArgs(args, net);
    checkGroupIdle(net, args.fn());
    auto claim = std::make_shared<AsyncClaim>(busy_, net, b.optimizer, b.dataset);
    if (b.emaBusy) claim->alsoClaim(b.emaBusy);
    std::shared_ptr<Network> keep = network_;
    std::shared_ptr<Trainer> trainer = trainer_;
    return PromiseWorker<bool>::start(
        info.Env(),
        [keep, trainer, b]() {
          trainer->trainBatches(*keep, *b.optimizer, *b.dataset, b.permutation, b.batchIndex, b.batchSize, b.count, b.options);
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); }, [claim]() { claim->release(); });
  });
}

Napi::Value JsNetwork::TakeTrainMetrics(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.takeTrainMetrics");
    args.expectCount(0, 0);
    idle(args.fn());
    const TrainMetrics m = trainer_->takeMetrics();
    auto out = Napi::Object::New(info.Env());
    out.Set("count", m.count);
    out.Set("loss", m.loss);
    out.Set("accuracy", m.accuracy);
    out.Set("skipped", m.skipped);
    return out;
  });
}

Napi::Value JsNetwork::Evaluate(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.evaluate");
    Network& net = idle(args.fn());
    EvalArgs e = readEvalArgs(args);
    return metricsObject(info.Env(), evaluateNetwork(net, *e.dataset, e.batchSize, e.autocast));
  });
}

Napi::Value JsNetwork::EvaluateAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.evaluateAsync");
    Network& net = idle(args.fn());
    EvalArgs e = readEvalArgs(args);
    auto claim = std::make_shared<AsyncClaim>(busy_, net, nullptr, e.dataset);
    std::shared_ptr<Network> keep = network_;
    return PromiseWorker<EvalMetrics>::start(
        info.Env(), [keep, e]() { return evaluateNetwork(*keep, *e.dataset, e.batchSize, e.autocast); },
        [](Napi::Env env, EvalMetrics& m) -> Napi::Value { return metricsObject(env, m); }, [claim]() { claim->release(); });
  });
}

Napi::Value JsNetwork::SetChannelsLast(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.setChannelsLast");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    const bool on = args.boolean(0, "on");
    if (network_.use_count() > 1)
      throw Napi::Error::New(info.Env(), "Network.setChannelsLast: optimizers exist for this network; set the memory format before creating them");
    net.setMemoryFormat(on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::SetBatchNormMode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // setBatchNormMode('batch' | 'frozen'): per-process batch statistics (default) or eval-mode BN
    // while training. ('sync' comes with ProcessGroup.attach.)
    Args args(info, "Network.setBatchNormMode");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    const std::string mode = args.string(0, "mode");
    if (mode == "sync") args.rangeError("mode", "'sync' is set by ProcessGroup.attach(network, { syncBatchNorm: true })");
    if (mode != "batch" && mode != "frozen") args.rangeError("mode", "must be 'batch' or 'frozen', got '" + mode + "'");
    if (net.batchNormMode() == BatchNormMode::Sync)
      throw Napi::RangeError::New(info.Env(), "Network.setBatchNormMode: the network uses SyncBatchNorm; detach it from its process group first");
    net.setBatchNormMode(mode == "frozen" ? BatchNormMode::Frozen : BatchNormMode::Batch);
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::Dispose(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (*busy_) throw Napi::Error::New(info.Env(), "Network.dispose: an asynchronous step is running on this network; await it first");
    network_.reset();
    return info.Env().Undefined();
  });
}

std::shared_ptr<Network> JsNetwork::Get(const Args& args, size_t i, const char* name) { return GetWithBusy(args, args[i], name).first; }

std::pair<std::shared_ptr<Network>, std::shared_ptr<bool>> JsNetwork::GetWithBusy(const Args& args, Napi::Value v, const char* name) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kNetworkTag)) args.typeError(name, "a Network");
  JsNetwork* self = Unwrap(v.As<Napi::Object>());
  self->idle(args.fn());
  return {self->network_, self->busy_};
}

Napi::Object metricsObject(Napi::Env env, const EvalMetrics& m) {
  auto out = Napi::Object::New(env);
  out.Set("count", m.count);
  out.Set("loss", m.loss);
  out.Set("accuracy", m.accuracy);
  return out;
}

}  // namespace repopt

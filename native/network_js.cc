#include "network_js.h"

#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/utils.h>

#include <chrono>
#include <set>

#include "addon.h"
#include "async.h"
#include "autocast.h"
#include "dataset_js.h"
#include "errors.h"
#include "evaluate.h"
#include "optimizer_js.h"
#include "repopt_adamw.h"
#include "repopt_sgd.h"
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
  int64_t channels = c.inChannels;
  for (uint32_t k = 0; k < blocks.Length(); ++k) {
    Fields b = spec.element(blocks, "blocks", k);
    BlockConfig block{b.string("name"), b.integer("inChannels", 1, 1 << 20), b.integer("outChannels", 1, 1 << 20), b.integer("stride", 1, 2),
                      b.number("scaleInit", 1.0)};
    if (block.inChannels != channels) b.fail("inChannels", "is " + std::to_string(block.inChannels) + " but the previous block gives " + std::to_string(channels), true);
    channels = block.outChannels;
    c.blocks.push_back(block);
  }
  return c;
}

struct GroupSettings {
  double lr, momentum, dampening, weightDecay, beta1, beta2, eps;
  bool nesterov;
};

GroupSettings readSettings(const Fields& f, const GroupSettings& defaults) {
  GroupSettings s = defaults;
  s.lr = f.number("lr", defaults.lr);
  s.momentum = f.number("momentum", defaults.momentum);
  s.dampening = f.number("dampening", defaults.dampening);
  s.weightDecay = f.number("weightDecay", defaults.weightDecay);
  s.nesterov = f.boolean("nesterov", defaults.nesterov);
  return s;
}

std::unique_ptr<torch::optim::OptimizerOptions> makeOptions(const std::string& kind, const GroupSettings& s) {
  if (kind == "sgd")
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(s.lr).momentum(s.momentum).dampening(s.dampening).weight_decay(s.weightDecay).nesterov(s.nesterov));
  if (kind == "adamw")
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weightDecay));
  if (kind == "repopt-sgd")
    return std::make_unique<RepOptSGDOptions>(
        RepOptSGDOptions(s.lr).momentum(s.momentum).dampening(s.dampening).weight_decay(s.weightDecay).nesterov(s.nesterov));
  return std::make_unique<RepOptAdamWOptions>(RepOptAdamWOptions(s.lr).beta1(s.beta1).beta2(s.beta2).eps(s.eps).weight_decay(s.weightDecay));
}

// Builds the optimizer a spec describes over net's parameters; checks everything before building.
std::shared_ptr<OptimizerHandle> buildOptimizer(const std::shared_ptr<Network>& net, const Fields& spec) {
  const std::string type = spec.string("type");
  if (type != "sgd" && type != "adamw") spec.fail("type", "must be 'sgd' or 'adamw', got '" + type + "'", true);
  const bool withGradMults = spec.has("gradMults");
  const std::string kind = withGradMults ? "repopt-" + type : type;

  GroupSettings defaults{0, 0, 0, type == "adamw" ? 1e-2 : 0.0, 0.9, 0.999, 1e-8, false};
  defaults = readSettings(spec, defaults);
  if (spec.has("betas")) {
    Napi::Array betas = spec.array("betas");
    if (betas.Length() != 2 || !betas.Get(0u).IsNumber() || !betas.Get(1u).IsNumber()) spec.fail("betas", "must be two numbers", true);
    defaults.beta1 = betas.Get(0u).As<Napi::Number>().DoubleValue();
    defaults.beta2 = betas.Get(1u).As<Napi::Number>().DoubleValue();
  }
  defaults.eps = spec.number("eps", defaults.eps);
  if (!spec.has("lr")) spec.fail("lr", "is required", true);

  // Parameters by name; groups default to every trainable parameter.
  std::map<std::string, at::Tensor> byName;
  for (const auto& [name, p] : net->namedParameters()) byName.emplace(name, p);
  std::vector<std::pair<std::vector<at::Tensor>, GroupSettings>> groups;
  if (spec.has("groups")) {
    Napi::Array list = spec.array("groups");
    std::set<std::string> seen;
    for (uint32_t k = 0; k < list.Length(); ++k) {
      Fields g = spec.element(list, "groups", k);
      std::vector<at::Tensor> params;
      for (const auto& name : g.strings("params")) {
        auto it = byName.find(name);
        if (it == byName.end()) g.fail("params", "names '" + name + "', which is not a parameter of the network", true);
        if (!it->second.requires_grad()) g.fail("params", "names '" + name + "', which is a constant (not trainable)", true);
        if (!seen.insert(name).second) g.fail("params", "names '" + name + "', which is already in another group", true);
        params.push_back(it->second);
      }
      groups.emplace_back(std::move(params), readSettings(g, defaults));
    }
  } else {
    groups.emplace_back(net->trainableParameters(), defaults);
  }

  // GradMults, by parameter.
  std::vector<std::pair<at::Tensor, std::shared_ptr<GradMult>>> mults;
  if (withGradMults) {
    const std::string storage = spec.string("gradMultStorage", "compact");
    if (storage != "compact" && storage != "full") spec.fail("gradMultStorage", "must be 'compact' or 'full', got '" + storage + "'", true);
    Napi::Array list = spec.array("gradMults");
    std::set<std::string> seen;
    for (uint32_t k = 0; k < list.Length(); ++k) {
      Fields m = spec.element(list, "gradMults", k);
      const std::string name = m.string("param");
      bool inOptimizer = false;
      auto it = byName.find(name);
      if (it != byName.end())
        for (const auto& [params, _] : groups)
          for (const auto& p : params) inOptimizer = inOptimizer || p.is_same(it->second);
      if (!inOptimizer) m.fail("param", "names '" + name + "', which is not a parameter this optimizer updates", true);
      if (!seen.insert(name).second) m.fail("param", "names '" + name + "' a second time", true);
      auto base = m.float64Array("base"), centre = m.float64Array("centre");
      auto toTensor = [](const Napi::Float64Array& a) {
        return at::from_blob(const_cast<double*>(a.Data()), {int64_t(a.ElementLength())}, at::TensorOptions().dtype(at::kDouble)).clone();
      };
      const at::Tensor& p = it->second;
      mults.emplace_back(p, std::make_shared<GradMult>(toTensor(base), toTensor(centre), m.boolean("identity", false),
                                                      m.integer("groups", 1, 1 << 20), p.sizes(),
                                                      storage == "full" ? GradMultStorage::Full : GradMultStorage::Compact, p.options()));
    }
  }

  std::vector<torch::optim::OptimizerParamGroup> paramGroups;
  for (auto& [params, settings] : groups) paramGroups.emplace_back(params, makeOptions(kind, settings));
  auto handle = std::make_shared<OptimizerHandle>();
  handle->kind = kind;
  handle->network = net;
  std::unique_ptr<torch::optim::OptimizerOptions> defaultOptions = makeOptions(kind, defaults);
  if (kind == "sgd") {
    handle->optimizer = std::make_shared<torch::optim::SGD>(paramGroups, static_cast<torch::optim::SGDOptions&>(*defaultOptions));
  } else if (kind == "adamw") {
    handle->optimizer = std::make_shared<torch::optim::AdamW>(paramGroups, static_cast<torch::optim::AdamWOptions&>(*defaultOptions));
  } else if (kind == "repopt-sgd") {
    auto opt = std::make_shared<RepOptSGD>(paramGroups, static_cast<RepOptSGDOptions&>(*defaultOptions));
    for (auto& [p, m] : mults) opt->setGradMult(p, m);
    const std::string impl = spec.string("implementation", "fused");
    auto named = RepOptSGD::implementationNamed(impl);
    if (!named) spec.fail("implementation", "must be 'fused', 'foreach' or 'reference', got '" + impl + "'", true);
    opt->setImplementation(*named);
    handle->optimizer = opt;
  } else {
    auto opt = std::make_shared<RepOptAdamW>(paramGroups, static_cast<RepOptAdamWOptions&>(*defaultOptions));
    for (auto& [p, m] : mults) opt->setGradMult(p, m);
    handle->optimizer = opt;
  }
  return handle;
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

// Gradients of one batch (train mode, label-smoothed cross-entropy); returns logits and loss.
std::pair<at::Tensor, at::Tensor> lossAndGradients(Network& net, const at::Tensor& x, const at::Tensor& y, double labelSmoothing,
                                                   c10::optional<at::ScalarType> autocast) {
  net.train(true);
  net.clearGradients();
  if (net.hooks) net.hooks->beforeForward(net);
  at::Tensor logits, loss;
  {
    AutocastScope mixed(net.device(), autocast);
    logits = net.forward(x);
    namespace F = torch::nn::functional;
    loss = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().label_smoothing(labelSmoothing));
  }
  if (net.hooks) net.hooks->beforeBackward(net);
  loss.backward();  // with hooks (data parallel): the gradients are averaged over all processes here
  if (net.hooks) net.hooks->afterBackward(net);
  return {logits, loss};
}

double trainStepImpl(Network& net, OptimizerHandle& opt, const at::Tensor& x, const at::Tensor& y, double labelSmoothing) {
  at::Tensor loss = lossAndGradients(net, x, y, labelSmoothing, c10::nullopt).second;
  opt.step();
  return loss.item<double>();
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
                                        InstanceMethod<&JsNetwork::Dispose>("dispose"),
                                        InstanceMethod<&JsNetwork::TimeOptimizerSteps>("timeOptimizerSteps"),
                                        InstanceMethod<&JsNetwork::To>("to"),
                                        InstanceMethod<&JsNetwork::SetChannelsLast>("setChannelsLast"),
                                        InstanceMethod<&JsNetwork::TrainBatch>("trainBatch"),
                                        InstanceMethod<&JsNetwork::TakeTrainMetrics>("takeTrainMetrics"),
                                        InstanceMethod<&JsNetwork::Evaluate>("evaluate"),
                                        InstanceMethod<&JsNetwork::Calibrate>("calibrate"),
                                        InstanceMethod<&JsNetwork::SetQuantRanges>("setQuantRanges"),
                                        InstanceMethod<&JsNetwork::QuantParams>("quantParams"),
                                        InstanceMethod<&JsNetwork::SetFakeQuant>("setFakeQuant"),
                                        InstanceMethod<&JsNetwork::EvaluateInt8>("evaluateInt8"),
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
  if (busy_) throw Napi::Error::New(Env(), std::string(fn) + ": an asynchronous train step is running on this network; await it first");
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

namespace {
std::string listed(const std::vector<std::string>& items) {
  std::string out;
  for (size_t k = 0; k < items.size() && k < 12; ++k) out += (k ? ", " : "") + items[k];
  if (items.size() > 12) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}
}  // namespace

Napi::Value JsNetwork::LoadStateDict(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.loadStateDict");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    Napi::Object state = args.object(0, "state");
    NamedTensors targets = net.stateDict();
    // Check every key and shape first, report all problems at once, and load nothing if any.
    std::vector<std::string> missing, misshaped, unexpected, notTensors;
    std::vector<std::pair<at::Tensor, at::Tensor>> copies;
    std::set<std::string> expected;
    for (const auto& [name, target] : targets) {
      expected.insert(name);
      Napi::Value v = state.Get(name);
      if (v.IsUndefined()) {
        missing.push_back(name);
        continue;
      }
      const at::Tensor* src = Tensor::TryGet(v, args.fn());
      if (src == nullptr) {
        notTensors.push_back(name);
      } else if (src->sizes() != target.sizes()) {
        misshaped.push_back(name + " (" + c10::str(src->sizes()) + " for " + c10::str(target.sizes()) + ")");
      } else {
        copies.emplace_back(target, *src);
      }
    }
    Napi::Array keys = state.GetPropertyNames();
    for (uint32_t k = 0; k < keys.Length(); ++k) {
      std::string key = keys.Get(k).ToString().Utf8Value();
      if (!expected.count(key)) unexpected.push_back(key);
    }
    std::string problems;
    if (!missing.empty()) problems += "\n  missing: " + listed(missing);
    if (!unexpected.empty()) problems += "\n  unexpected: " + listed(unexpected);
    if (!misshaped.empty()) problems += "\n  wrong shape: " + listed(misshaped);
    if (!notTensors.empty()) problems += "\n  not a Tensor: " + listed(notTensors);
    if (!problems.empty()) throw Napi::Error::New(info.Env(), "Network.loadStateDict: the state does not fit this network; nothing was loaded" + problems);
    at::NoGradGuard noGrad;
    for (auto& [target, src] : copies) target.copy_(src);
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
    return JsOptimizer::Wrap(info.Env(), buildOptimizer(network_, spec));
  });
}

namespace {
struct StepArgs {
  std::shared_ptr<OptimizerHandle> optimizer;
  at::Tensor input, labels;
  double labelSmoothing;
};

StepArgs readStepArgs(const Args& args, const Network& net) {
  args.expectCount(3, 4);
  StepArgs s{JsOptimizer::Get(args, 0, "optimizer"), {}, {}, 0.0};
  if (s.optimizer->network.get() != &net) args.rangeError("optimizer", "belongs to another network");
  std::tie(s.input, s.labels) = prepareBatch(args, net, Tensor::Get(args, 1, "input"), Tensor::Get(args, 2, "labels"));
  if (args.has(3)) {
    s.labelSmoothing = args.number(3, "labelSmoothing");
    if (!(s.labelSmoothing >= 0 && s.labelSmoothing <= 1)) args.rangeError("labelSmoothing", "must be in [0, 1]");
  }
  return s;
}
}  // namespace

Napi::Value JsNetwork::TrainStep(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.trainStep");
    Network& net = idle(args.fn());
    StepArgs s = readStepArgs(args, net);
    return Napi::Number::New(info.Env(), trainStepImpl(net, *s.optimizer, s.input, s.labels, s.labelSmoothing));
  });
}

Napi::Value JsNetwork::TrainStepAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.trainStepAsync");
    Network& net = idle(args.fn());
    StepArgs s = readStepArgs(args, net);
    busy_ = true;
    std::shared_ptr<Network> keep = network_;
    return PromiseWorker<double>::start(
        info.Env(), [keep, s]() { return trainStepImpl(*keep, *s.optimizer, s.input, s.labels, s.labelSmoothing); },
        [](Napi::Env env, double& loss) -> Napi::Value { return Napi::Number::New(env, loss); }, [this]() { busy_ = false; });
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
    // Benchmark only: fixed random gradients, then `steps` optimizer steps timed one by one.
    for (auto& p : net.trainableParameters()) p.mutable_grad() = at::randn_like(p).mul_(1e-3);
    auto times = Napi::Float64Array::New(info.Env(), size_t(steps));
    for (int64_t k = 0; k < steps; ++k) {
      auto start = std::chrono::steady_clock::now();
      opt->step();
      times[size_t(k)] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    }
    return times;
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
    // trainBatch(optimizer, dataset, permutation, batchIndex, batchSize, options?, count?): `count`
    // consecutive batches from batchIndex on, in one native loop (benchmarks compare it with one call per step).
    Args args(info, "Network.trainBatch");
    args.expectCount(5, 7);
    Network& net = idle(args.fn());
    auto opt = JsOptimizer::Get(args, 0, "optimizer");
    if (opt->network.get() != &net) args.rangeError("optimizer", "belongs to another network");
    auto ds = JsDataset::Get(args, 1, "dataset");
    const at::Tensor& perm = permutationArg(args, 2, *ds);
    const int64_t batchSize = args.integer(4, "batchSize", 1, 1 << 20);
    if (ds->count() < batchSize) args.rangeError("batchSize", "is larger than the dataset (" + std::to_string(ds->count()) + ")");
    const int64_t batches = ds->count() / batchSize;
    const int64_t batchIndex = args.integer(3, "batchIndex", 0, batches - 1);
    const int64_t count = args.has(6) ? args.integer(6, "count", 1, batches - batchIndex) : 1;
    Augmentation aug;
    double labelSmoothing = 0, clipNorm = 0;
    c10::optional<at::ScalarType> autocast;
    bool skipNonFinite = false;
    if (args.has(5)) {
      Fields o(info.Env(), args.object(5, "options"), args.fn(), "options");
      aug = readAugmentation(o);
      autocast = readAutocast(o);
      skipNonFinite = o.boolean("skipNonFinite", false);
      labelSmoothing = o.number("labelSmoothing", 0.0);
      if (labelSmoothing < 0 || labelSmoothing > 1) o.fail("labelSmoothing", "must be in [0, 1]", true);
      clipNorm = o.number("clipNorm", 0.0);
      if (clipNorm < 0) o.fail("clipNorm", "must be >= 0 (0: no clipping)", true);
    }
    for (int64_t k = 0; k < count; ++k) {
      auto [x, y] = ds->batch(perm.narrow(0, (batchIndex + k) * batchSize, batchSize), aug, net.dtype());
      x = x.to(net.device());
      if (channelsLast_) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      y = y.to(net.device());
      auto [logits, loss] = lossAndGradients(net, x, y, labelSmoothing, autocast);
      if (clipNorm > 0) torch::nn::utils::clip_grad_norm_(net.trainableParameters(), clipNorm);
      if (skipNonFinite) {
        // Opted in: one host-device synchronisation per step to leave the weights untouched.
        at::NoGradGuard noGrad;
        bool finite = at::isfinite(loss).all().item<bool>();
        for (const auto& p : net.trainableParameters())
          if (finite && p.grad().defined()) finite = at::isfinite(p.grad()).all().item<bool>();
        if (!finite) {
          net.clearGradients();
          ++skipped_;
          continue;
        }
      }
      opt->step();
      at::NoGradGuard noGrad;
      at::Tensor batchLoss = loss.detach().to(at::kDouble) * double(batchSize);
      at::Tensor batchCorrect = logits.argmax(1).eq(y).sum();
      if (!lossSum_.defined()) {
        lossSum_ = batchLoss;
        correct_ = batchCorrect;
      } else {
        lossSum_.add_(batchLoss);
        correct_.add_(batchCorrect);
      }
      seen_ += batchSize;
    }
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::TakeTrainMetrics(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.takeTrainMetrics");
    args.expectCount(0, 0);
    idle(args.fn());
    auto out = Napi::Object::New(info.Env());
    // The one host-device synchronisation of a reporting interval.
    out.Set("count", double(seen_));
    out.Set("loss", seen_ ? lossSum_.item<double>() / double(seen_) : NAN);
    out.Set("accuracy", seen_ ? double(correct_.item<int64_t>()) / double(seen_) : NAN);
    out.Set("skipped", double(skipped_));
    lossSum_ = correct_ = at::Tensor();
    seen_ = 0;
    skipped_ = 0;
    return out;
  });
}

Napi::Value JsNetwork::Evaluate(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.evaluate");
    args.expectCount(2, 3);
    Network& net = idle(args.fn());
    auto ds = JsDataset::Get(args, 0, "dataset");
    const int64_t batchSize = args.integer(1, "batchSize", 1, 1 << 20);
    c10::optional<at::ScalarType> autocast;
    if (args.has(2)) autocast = readAutocast(Fields(info.Env(), args.object(2, "options"), args.fn(), "options"));
    net.train(false);
    at::NoGradGuard noGrad;
    AutocastScope mixed(net.device(), autocast);
    return metricsObject(info.Env(), evaluateDataset(*ds, batchSize, net.dtype(), [&](const at::Tensor& batch) {
                           at::Tensor x = batch.to(net.device());
                           return net.forward(channelsLast_ ? x.contiguous(at::MemoryFormat::ChannelsLast) : x);
                         }));
  });
}

Napi::Value JsNetwork::SetChannelsLast(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Network.setChannelsLast");
    args.expectCount(1, 1);
    Network& net = idle(args.fn());
    const bool on = args.boolean(0, "on");
    if (network_.use_count() > 1) throw Napi::Error::New(info.Env(), "Network.setChannelsLast: optimizers exist for this network; set the memory format before creating them");
    net.setMemoryFormat(on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    channelsLast_ = on;
    return info.Env().Undefined();
  });
}

Napi::Value JsNetwork::Dispose(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (busy_) throw Napi::Error::New(info.Env(), "Network.dispose: an asynchronous train step is running on this network; await it first");
    network_.reset();
    return info.Env().Undefined();
  });
}

}  // namespace repopt

namespace repopt {

std::shared_ptr<Network> JsNetwork::Get(const Args& args, size_t i, const char* name) {
  Napi::Value v = args[i];
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kNetworkTag)) args.typeError(name, "a Network");
  JsNetwork* self = Unwrap(v.As<Napi::Object>());
  self->idle(args.fn());
  return self->network_;
}

}  // namespace repopt

#include "optimizer_js.h"

#include <torch/serialize/archive.h>

#include <sstream>

#include "addon.h"
#include "optim_common.h"
#include "repopt_sgd.h"

namespace repopt {

namespace {
const napi_type_tag kOptimizerTag = {0x2b6e4f1d8c3a5e97ULL, 0x91d07c4b3e2a6f15ULL};
}

int64_t OptimizerHandle::steps() const {
  if (auto* g = dynamic_cast<GradMultOptimizer*>(optimizer.get())) return g->steps();
  return plainSteps;
}

void OptimizerHandle::step() {
  optimizer->step();
  if (!dynamic_cast<GradMultOptimizer*>(optimizer.get())) ++plainSteps;
}

void JsOptimizer::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Optimizer",
                                    {
                                        InstanceAccessor<&JsOptimizer::Kind>("kind"),
                                        InstanceAccessor<&JsOptimizer::Steps>("steps"),
                                        InstanceAccessor<&JsOptimizer::Implementation>("implementation"),
                                        InstanceAccessor<&JsOptimizer::GradMultBytes>("gradMultBytes"),
                                        InstanceMethod<&JsOptimizer::SetLr>("setLr"),
                                        InstanceMethod<&JsOptimizer::SetImplementation>("setImplementation"),
                                        InstanceMethod<&JsOptimizer::StateBytes>("stateBytes"),
                                        InstanceMethod<&JsOptimizer::LoadStateBytes>("loadStateBytes"),
                                        InstanceMethod<&JsOptimizer::Dispose>("dispose"),
                                    });
  addon.optimizerConstructor = Napi::Persistent(ctor);
  exports.Set("Optimizer", ctor);
}

JsOptimizer::JsOptimizer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsOptimizer>(info) {
  Addon& addon = Addon::of(info.Env());
  if (addon.pendingOptimizer == nullptr) throw Napi::TypeError::New(info.Env(), "Optimizer: use network.createOptimizer(spec)");
  handle_ = *addon.pendingOptimizer;
  addon.pendingOptimizer = nullptr;
  info.This().As<Napi::Object>().TypeTag(&kOptimizerTag);
}

Napi::Object JsOptimizer::Wrap(Napi::Env env, std::shared_ptr<OptimizerHandle> handle) {
  Addon& addon = Addon::of(env);
  return constructFromSlot(addon.optimizerConstructor, addon.pendingOptimizer, handle);
}

std::shared_ptr<OptimizerHandle> JsOptimizer::Get(const Args& args, size_t i, const char* name) {
  if (i >= args.count() || !args[i].IsObject() || !args[i].As<Napi::Object>().CheckTypeTag(&kOptimizerTag)) {
    args.typeError(name, "an Optimizer");
  }
  JsOptimizer* self = Napi::ObjectWrap<JsOptimizer>::Unwrap(args[i].As<Napi::Object>());
  self->live(args.fn());
  return self->handle_;
}

OptimizerHandle& JsOptimizer::live(const char* fn) const {
  if (!handle_) throw Napi::Error::New(Env(), std::string(fn) + ": the optimizer has been disposed");
  return *handle_;
}

Napi::Value JsOptimizer::Kind(const Napi::CallbackInfo& info) {
  requireReceiver(info, kOptimizerTag, "Optimizer.kind");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), live("Optimizer.kind").kind); });
}

Napi::Value JsOptimizer::Steps(const Napi::CallbackInfo& info) {
  requireReceiver(info, kOptimizerTag, "Optimizer.steps");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(live("Optimizer.steps").steps())); });
}

Napi::Value JsOptimizer::GradMultBytes(const Napi::CallbackInfo& info) {
  requireReceiver(info, kOptimizerTag, "Optimizer.gradMultBytes");
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto* g = dynamic_cast<GradMultOptimizer*>(live("Optimizer.gradMultBytes").optimizer.get());
    return Napi::Number::New(info.Env(), g ? double(g->gradMults().bytes()) : 0.0);
  });
}

Napi::Value JsOptimizer::SetLr(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.setLr");
    args.expectCount(1, 2);
    double lr = args.number(0, "lr");
    if (!std::isfinite(lr) || lr < 0) args.rangeError("lr", "must be a finite non-negative number");
    auto& groups = live(args.fn()).optimizer->param_groups();
    if (args.has(1)) {
      int64_t g = args.integer(1, "group", 0, int64_t(groups.size()) - 1);
      groups[size_t(g)].options().set_lr(lr);
    } else {
      for (auto& g : groups) g.options().set_lr(lr);
    }
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::Implementation(const Napi::CallbackInfo& info) {
  requireReceiver(info, kOptimizerTag, "Optimizer.implementation");
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.implementation");
    auto* sgd = dynamic_cast<RepOptSGD*>(live(args.fn()).optimizer.get());
    if (!sgd) return info.Env().Null();
    switch (sgd->implementation()) {
      case RepOptSGD::Implementation::Reference: return Napi::String::New(info.Env(), "reference");
      case RepOptSGD::Implementation::Foreach: return Napi::String::New(info.Env(), "foreach");
      case RepOptSGD::Implementation::Fused: break;
    }
    return Napi::String::New(info.Env(), "fused");
  });
}

Napi::Value JsOptimizer::SetImplementation(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.setImplementation");
    args.expectCount(1, 1);
    std::string impl = args.string(0, "implementation");
    auto* sgd = dynamic_cast<RepOptSGD*>(live(args.fn()).optimizer.get());
    if (!sgd) throw Napi::Error::New(info.Env(), "Optimizer.setImplementation: only repopt-sgd has several step implementations");
    auto named = RepOptSGD::implementationNamed(impl);
    if (!named) args.rangeError("implementation", "must be 'fused', 'foreach' or 'reference', got '" + impl + "'");
    sgd->setImplementation(*named);
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::StateBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.stateBytes");
    args.expectCount(0, 0);
    OptimizerHandle& h = live(args.fn());
    torch::serialize::OutputArchive archive;
    h.optimizer->save(archive);
    archive.write("repopt_kind", c10::IValue(h.kind));
    archive.write("repopt_plain_steps", c10::IValue(h.plainSteps));
    // libtorch's SGD / AdamW load() keeps the current group options: save them ourselves.
    auto& groups = h.optimizer->param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      torch::serialize::OutputArchive options;
      groups[g].options().serialize(options);
      archive.write("repopt_group_options_" + std::to_string(g), options);
    }
    std::ostringstream out;
    archive.save_to(out);
    const std::string bytes = out.str();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  });
}

Napi::Value JsOptimizer::LoadStateBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.loadStateBytes");
    args.expectCount(1, 1);
    auto bytes = args.uint8Array(0, "bytes");
    OptimizerHandle& h = live(args.fn());
    torch::serialize::InputArchive archive;
    archive.load_from(reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
    c10::IValue kind, steps;
    archive.read("repopt_kind", kind);
    if (kind.toStringRef() != h.kind) {
      throw Napi::Error::New(info.Env(), "Optimizer.loadStateBytes: the state is of a " + kind.toStringRef() + " optimizer, this is " + h.kind);
    }
    archive.read("repopt_plain_steps", steps);
    auto& groups = h.optimizer->param_groups();
    std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
    for (size_t g = 0; g < groups.size(); ++g) {
      torch::serialize::InputArchive saved;
      if (!archive.try_read("repopt_group_options_" + std::to_string(g), saved)) {
        throw Napi::Error::New(info.Env(), "Optimizer.loadStateBytes: the state has fewer parameter groups than this optimizer");
      }
      options.push_back(groups[g].options().clone());
      options.back()->serialize(saved);
    }
    h.optimizer->load(archive);
    for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move(options[g]));
    h.plainSteps = steps.toInt();
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::Dispose(const Napi::CallbackInfo& info) {
  handle_.reset();
  return info.Env().Undefined();
}

}  // namespace repopt

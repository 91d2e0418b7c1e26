#include "optimizer_js.h"

#include "addon.h"

namespace repopt {

namespace {
const napi_type_tag kOptimizerTag = {0x2b6e4f1d8c3a5e97ULL, 0x91d07c4b3e2a6f15ULL};
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
  if (handle_->asyncUsers > 0) throw Napi::Error::New(Env(), std::string(fn) + ": an asynchronous step is running on this optimizer; await it first");
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
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(live("Optimizer.gradMultBytes").gradMultBytes())); });
}

Napi::Value JsOptimizer::SetLr(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.setLr");
    args.expectCount(1, 2);
    double lr = args.number(0, "lr");
    if (!std::isfinite(lr) || lr < 0) args.rangeError("lr", "must be a finite non-negative number");
    OptimizerHandle& h = live(args.fn());
    h.setLr(lr, args.has(1) ? args.integer(1, "group", 0, int64_t(h.optimizer->param_groups().size()) - 1) : -1);
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::Implementation(const Napi::CallbackInfo& info) {
  requireReceiver(info, kOptimizerTag, "Optimizer.implementation");
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto impl = live("Optimizer.implementation").implementation();
    return impl ? Napi::Value(Napi::String::New(info.Env(), implementationName(*impl))) : info.Env().Null();
  });
}

Napi::Value JsOptimizer::SetImplementation(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.setImplementation");
    args.expectCount(1, 1);
    std::string impl = args.string(0, "implementation");
    OptimizerHandle& h = live(args.fn());
    if (!h.implementation()) throw Napi::Error::New(info.Env(), "Optimizer.setImplementation: only repopt-sgd has several step implementations");
    auto named = RepOptSGD::implementationNamed(impl);
    if (!named) args.rangeError("implementation", "must be 'fused', 'foreach' or 'reference', got '" + impl + "'");
    h.setImplementation(*named);
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::StateBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.stateBytes");
    args.expectCount(0, 0);
    const std::string bytes = live(args.fn()).saveState();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  });
}

Napi::Value JsOptimizer::LoadStateBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Optimizer.loadStateBytes");
    args.expectCount(1, 1);
    auto bytes = args.uint8Array(0, "bytes");
    OptimizerHandle& h = live(args.fn());
    try {
      h.loadState(reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), std::string("Optimizer.loadStateBytes: ") + messageOf(e));
    }
    return info.Env().Undefined();
  });
}

Napi::Value JsOptimizer::Dispose(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (handle_ && handle_->asyncUsers > 0) {
      throw Napi::Error::New(info.Env(), "Optimizer.dispose: an asynchronous step is running on this optimizer; await it first");
    }
    handle_.reset();
    return info.Env().Undefined();
  });
}

}  // namespace repopt

#include "distributed_js.h"

#include "addon.h"
#include "network_js.h"
#include "tensor.h"

namespace repopt {

namespace {
const napi_type_tag kProcessGroupTag = {0x6c1f9e2a4d7b3058ULL, 0xb83e5a0c2f914d76ULL};
}

void JsProcessGroup::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "ProcessGroup",
                                    {
                                        InstanceAccessor<&JsProcessGroup::Rank>("rank"),
                                        InstanceAccessor<&JsProcessGroup::WorldSize>("worldSize"),
                                        InstanceAccessor<&JsProcessGroup::Backend>("backend"),
                                        InstanceMethod<&JsProcessGroup::Allreduce>("allreduce"),
                                        InstanceMethod<&JsProcessGroup::Broadcast>("broadcast"),
                                        InstanceMethod<&JsProcessGroup::Barrier>("barrier"),
                                        InstanceMethod<&JsProcessGroup::BroadcastState>("broadcastState"),
                                        InstanceMethod<&JsProcessGroup::Attach>("attach"),
                                        InstanceMethod<&JsProcessGroup::Detach>("detach"),
                                        InstanceMethod<&JsProcessGroup::Dispose>("dispose"),
                                    });
  exports.Set("ProcessGroup", ctor);
}

JsProcessGroup::JsProcessGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsProcessGroup>(info) {
  guarded(info.Env(), [&] {
    Args args(info, "ProcessGroup");
    args.expectCount(1, 1);
    Fields f(info.Env(), args.object(0, "options"), "ProcessGroup", "options");
    GroupOptions& o = options_;
    o.worldSize = f.integer("worldSize", 1, 1 << 20);
    o.rank = f.integer("rank", 0, o.worldSize - 1);
    o.masterAddr = f.string("masterAddr", "127.0.0.1");
    if (o.masterAddr.empty()) f.fail("masterAddr", "must not be empty", true);
    o.masterPort = f.integer("masterPort", 1, 65535);
    o.backend = f.string("backend", "gloo");
    if (o.backend != "gloo" && o.backend != "nccl") f.fail("backend", "must be 'gloo' or 'nccl', got '" + o.backend + "'", true);
    if (f.has("timeoutMs")) o.timeout = std::chrono::milliseconds(f.integer("timeoutMs", 1, int64_t(1) << 40));
    o.connectTimeout = f.has("connectTimeoutMs") ? std::chrono::milliseconds(f.integer("connectTimeoutMs", 1, int64_t(1) << 40)) : o.timeout;
    o.interface = f.string("interface", "");
    o.hostname = f.string("hostname", "");
    o.storeFile = f.string("storeFile", "");
    if (f.has("reportEveryMs")) o.reportEvery = std::chrono::milliseconds(f.integer("reportEveryMs", 1, int64_t(1) << 40));
    JoinObserver observer;
    if (f.has("onWaiting")) {
      if (!f.raw("onWaiting").IsFunction()) f.fail("onWaiting", "must be a function", false);
      // Called on this (the JS) thread, inside this constructor: a throw in it ends the wait with its error.
      observer = [env = info.Env(), fn = f.raw("onWaiting").As<Napi::Function>()](const JoinStatus& s) {
        auto joined = Napi::Array::New(env, s.joined.size());
        for (size_t i = 0; i < s.joined.size(); ++i) joined.Set(uint32_t(i), double(s.joined[i]));
        auto status = Napi::Object::New(env);
        status.Set("joined", joined);
        status.Set("waitedMs", double(s.waited.count()));
        status.Set("timedOut", s.timedOut);
        fn.Call({status});
      };
    }
    group_ = std::make_unique<ProcessGroupHandle>(o, observer);
    info.This().As<Napi::Object>().TypeTag(&kProcessGroupTag);
  });
}

ProcessGroupHandle& JsProcessGroup::live(const char* fn) const {
  if (!group_) throw Napi::Error::New(Env(), std::string(fn) + ": the process group has been disposed");
  checkIdle(fn);
  return *group_;
}

void JsProcessGroup::checkIdle(const char* fn) const {
  if (group_ && group_->asyncSteps() > 0) {
    throw Napi::Error::New(Env(), std::string(fn) + ": an asynchronous step is running on a network attached to this group; await it first");
  }
}

Napi::Value JsProcessGroup::Rank(const Napi::CallbackInfo& info) {
  requireReceiver(info, kProcessGroupTag, "ProcessGroup.rank");
  return Napi::Number::New(info.Env(), double(options_.rank));
}

Napi::Value JsProcessGroup::WorldSize(const Napi::CallbackInfo& info) {
  requireReceiver(info, kProcessGroupTag, "ProcessGroup.worldSize");
  return Napi::Number::New(info.Env(), double(options_.worldSize));
}

Napi::Value JsProcessGroup::Backend(const Napi::CallbackInfo& info) {
  requireReceiver(info, kProcessGroupTag, "ProcessGroup.backend");
  return Napi::String::New(info.Env(), options_.backend);
}

Napi::Value JsProcessGroup::Allreduce(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // allreduce(tensor, op = 'sum' | 'mean' | 'max' | 'min'): a new tensor with the result.
    Args args(info, "ProcessGroup.allreduce");
    args.expectCount(1, 2);
    ProcessGroupHandle& pg = live(args.fn());
    const at::Tensor& t = Tensor::Get(args, 0, "tensor");
    const std::string op = args.has(1) ? args.string(1, "op") : "sum";
    Reduction r = Reduction::Sum;
    if (op == "sum")
      r = Reduction::Sum;
    else if (op == "mean")
      r = Reduction::Mean;
    else if (op == "max")
      r = Reduction::Max;
    else if (op == "min")
      r = Reduction::Min;
    else
      args.rangeError("op", "must be 'sum', 'mean', 'max' or 'min', got '" + op + "'");
    if (op == "mean" && !t.is_floating_point()) args.typeError("tensor", "a floating-point tensor for op 'mean'");
    return Tensor::Wrap(info.Env(), pg.allreduce(t, r));
  });
}

Napi::Value JsProcessGroup::Broadcast(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // broadcast(tensor, root = 0): a new tensor holding root's values (same shape and dtype on every rank).
    Args args(info, "ProcessGroup.broadcast");
    args.expectCount(1, 2);
    ProcessGroupHandle& pg = live(args.fn());
    const at::Tensor& t = Tensor::Get(args, 0, "tensor");
    const int64_t root = args.has(1) ? args.integer(1, "root", 0, options_.worldSize - 1) : 0;
    return Tensor::Wrap(info.Env(), pg.broadcast(t, root));
  });
}

Napi::Value JsProcessGroup::Barrier(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "ProcessGroup.barrier");
    args.expectCount(0, 0);
    live(args.fn()).barrier();
    return info.Env().Undefined();
  });
}

Napi::Value JsProcessGroup::BroadcastState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // broadcastState(network, root = 0): every parameter and buffer takes root's value, in place.
    Args args(info, "ProcessGroup.broadcastState");
    args.expectCount(1, 2);
    ProcessGroupHandle& pg = live(args.fn());
    auto net = JsNetwork::Get(args, 0, "network");
    const int64_t root = args.has(1) ? args.integer(1, "root", 0, options_.worldSize - 1) : 0;
    pg.broadcastState(*net, root);
    return info.Env().Undefined();
  });
}

Napi::Value JsProcessGroup::Attach(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // attach(network, { bucketCapMb = 25, firstBucketCapMb = 1, broadcastBuffers = true, syncBatchNorm = false }):
    // rank 0's weights to every rank, then every train step of the network averages its gradients
    // over the group before the optimizer step. Returns { buckets }.
    Args args(info, "ProcessGroup.attach");
    args.expectCount(1, 2);
    ProcessGroupHandle& pg = live(args.fn());
    auto net = JsNetwork::Get(args, 0, "network");
    if (net->hooks) args.rangeError("network", "is already attached to a process group (detach it first)");
    double bucketMb = 25, firstMb = 1;
    AttachOptions a;
    if (args.has(1)) {
      Fields o(info.Env(), args.object(1, "options"), args.fn(), "options");
      bucketMb = o.number("bucketCapMb", bucketMb);
      firstMb = o.number("firstBucketCapMb", firstMb);
      if (!(bucketMb > 0 && bucketMb <= 1 << 20)) o.fail("bucketCapMb", "must be in (0, 1048576]", true);
      if (!(firstMb > 0 && firstMb <= 1 << 20)) o.fail("firstBucketCapMb", "must be in (0, 1048576]", true);
      a.broadcastBuffers = o.boolean("broadcastBuffers", true);
      a.syncBatchNorm = o.boolean("syncBatchNorm", false);
    }
    if (a.syncBatchNorm && net->batchNormMode() == BatchNormMode::Frozen) args.rangeError("options", "syncBatchNorm and frozen BatchNorm exclude each other");
    a.bucketBytes = int64_t(bucketMb * 1024 * 1024);
    a.firstBucketBytes = int64_t(firstMb * 1024 * 1024);
    auto out = Napi::Object::New(info.Env());
    out.Set("buckets", double(pg.attach(*net, a)));
    return out;
  });
}

Napi::Value JsProcessGroup::Detach(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "ProcessGroup.detach");
    args.expectCount(1, 1);
    checkIdle(args.fn());
    auto net = JsNetwork::Get(args, 0, "network");
    ProcessGroupHandle::detach(*net);
    return info.Env().Undefined();
  });
}

Napi::Value JsProcessGroup::Dispose(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // Networks still attached keep the c10d group alive until they are detached.
    checkIdle("ProcessGroup.dispose");
    group_.reset();
    return info.Env().Undefined();
  });
}

void InitDistributed(Napi::Env env, Napi::Object exports, Addon& addon) { JsProcessGroup::Init(env, exports, addon); }

}  // namespace repopt

#pragma once
// The JS ProcessGroup over core/distributed.h: argument conversion and wrapping only.
#include <napi.h>

#include <memory>

#include "core/distributed.h"
#include "errors.h"

namespace repopt {

class Addon;

class JsProcessGroup : public Napi::ObjectWrap<JsProcessGroup> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  // new ProcessGroup({ rank, worldSize, masterAddr, masterPort, backend?, timeoutMs?, connectTimeoutMs?, interface?, hostname?,
  //                    storeFile?, reportEveryMs?, onWaiting?({ joined, waitedMs, timedOut }) })
  explicit JsProcessGroup(const Napi::CallbackInfo& info);

 private:
  Napi::Value Rank(const Napi::CallbackInfo& info);
  Napi::Value WorldSize(const Napi::CallbackInfo& info);
  Napi::Value Backend(const Napi::CallbackInfo& info);
  Napi::Value Allreduce(const Napi::CallbackInfo& info);
  Napi::Value Broadcast(const Napi::CallbackInfo& info);
  Napi::Value Barrier(const Napi::CallbackInfo& info);
  Napi::Value BroadcastState(const Napi::CallbackInfo& info);
  Napi::Value Attach(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  // The group, checked to be alive and idle.
  ProcessGroupHandle& live(const char* fn) const;
  // Throws while an asynchronous step runs on a network attached to this group: its collectives run
  // on a worker thread, and c10d groups take collectives from one thread at a time.
  void checkIdle(const char* fn) const;

  GroupOptions options_;
  std::unique_ptr<ProcessGroupHandle> group_;
};

void InitDistributed(Napi::Env env, Napi::Object exports, Addon& addon);

}  // namespace repopt

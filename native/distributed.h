#pragma once
// Data-parallel training on PyTorch's c10d: the JS ProcessGroup (rendezvous through a TCPStore, a
// Gloo process group on CPU or NCCL on CUDA builds), collectives for JS, and the attachment of a group
// to a Network: gradients averaged by c10d's Reducer (bucketed, overlapped with the backward pass),
// buffers broadcast from rank 0 before each forward (as DDP), optional SyncBatchNorm.
#include <napi.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

#include "errors.h"

namespace repopt {

class Addon;

struct GroupOptions {
  int64_t rank = 0, worldSize = 1;
  std::string masterAddr = "127.0.0.1";
  int64_t masterPort = 29500;
  std::string backend = "gloo";  // "gloo" | "nccl"
  // Collectives (and the Gloo connection set-up) fail after this long instead of waiting forever.
  std::chrono::milliseconds timeout{300000};
  // How long a rank tries to reach the store (rank 0: waits for the others to connect).
  std::chrono::milliseconds connectTimeout{60000};
  // Gloo: the network interface (GLOO_SOCKET_IFNAME) or host name/address to bind; default: loopback
  // when the master address is a loopback address, else this machine's host name.
  std::string interface, hostname;
};

class JsProcessGroup : public Napi::ObjectWrap<JsProcessGroup> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  // new ProcessGroup({ rank, worldSize, masterAddr, masterPort, backend?, timeoutMs?, connectTimeoutMs?, interface?, hostname? })
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

  c10d::ProcessGroup& live(const char* fn) const;

  GroupOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

// setBatchNormMode(network, 'batch' | 'frozen'): per-process batch statistics (default) or eval-mode
// BN while training. ('sync' comes with ProcessGroup.attach.)
void InitDistributed(Napi::Env env, Napi::Object exports, Addon& addon);

}  // namespace repopt

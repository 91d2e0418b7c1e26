#pragma once
// Data-parallel training on PyTorch's c10d, without Node: a process group (rendezvous through a
// TCPStore, or a FileStore on one host; a Gloo process group on CPU or NCCL on CUDA builds),
// collectives, and the attachment of a group to a Network: gradients averaged by c10d's Reducer
// (bucketed, overlapped with the backward pass), buffers broadcast from rank 0 before each forward (as
// DDP), optional SyncBatchNorm.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "network.h"

namespace repopt {

struct GroupOptions {
  int64_t rank = 0, worldSize = 1;
  std::string masterAddr = "127.0.0.1";
  int64_t masterPort = 29500;
  std::string backend = "gloo";  // "gloo" | "nccl"
  // Collectives (and the Gloo connection set-up) fail after this long instead of waiting forever.
  std::chrono::milliseconds timeout{300000};
  // How long a rank waits for the store and for every rank to join it.
  std::chrono::milliseconds connectTimeout{60000};
  // While ranks are missing, how often the join observer hears of it.
  std::chrono::milliseconds reportEvery{10000};
  // One host: the store is this file (a c10d FileStore), so nothing listens on the network for it.
  // Empty: a TCPStore that rank 0 serves at masterAddr:masterPort.
  std::string storeFile;
  // Gloo: the network interface (GLOO_SOCKET_IFNAME) or host name/address to bind; default: loopback
  // when the master address is a loopback address, else this machine's host name.
  std::string interface, hostname;
};

struct AttachOptions {
  int64_t bucketBytes = 25 * 1024 * 1024, firstBucketBytes = 1024 * 1024;
  bool broadcastBuffers = true, syncBatchNorm = false;
};

enum class Reduction { Sum, Mean, Max, Min };

// The ranks registered in the store so far, while a rank waits for all of them.
struct JoinStatus {
  std::vector<int64_t> joined;
  std::chrono::milliseconds waited{0};
  // connectTimeout has passed: the wait ends with an error after this report.
  bool timedOut = false;
};
// Hears of the join every reportEvery while ranks are missing, and once at the timeout; it may throw to
// end the wait with a message of its own.
using JoinObserver = std::function<void(const JoinStatus&)>;

class ProcessGroupHandle {
 public:
  // Rendezvous (every rank registers in the store, then waits for all) and connection set-up; throws
  // with a message naming what failed.
  explicit ProcessGroupHandle(const GroupOptions& options, const JoinObserver& observer = {});

  const GroupOptions& options() const { return options_; }
  // A new tensor with the element-wise reduction over all ranks.
  at::Tensor allreduce(const at::Tensor& t, Reduction op);
  // A new tensor holding root's values.
  at::Tensor broadcast(const at::Tensor& t, int64_t root);
  void barrier();
  // Every parameter and buffer of net takes root's value, in place.
  void broadcastState(Network& net, int64_t root);
  // Rank 0's weights to every rank; then every train step averages the gradients over the group.
  // Returns the number of gradient buckets.
  int64_t attach(Network& net, const AttachOptions& options);
  static void detach(Network& net);
  // Asynchronous steps running now on networks attached to this group (their hooks share the count;
  // the JS layer refuses the group's calls meanwhile).
  int asyncSteps() const { return *asyncSteps_; }

 private:
  GroupOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::shared_ptr<int> asyncSteps_ = std::make_shared<int>(0);
};

}  // namespace repopt

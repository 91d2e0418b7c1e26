#include "distributed.h"

// GCC 14 at -O3 reports false -Warray-bounds / -Wstringop-overflow in std::vector<bool>::reserve as
// inlined into libtorch 2.6's Function::apply; silenced for that header's code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#include <torch/csrc/autograd/custom_function.h>
#pragma GCC diagnostic pop
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/utils/tensor_flatten.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "message.h"
#include "network.h"

namespace repopt {

namespace {

std::string where(const GroupOptions& o) { return o.masterAddr + ":" + std::to_string(o.masterPort); }

// The store's address, or its file on one host.
std::string storeWhere(const GroupOptions& o) { return o.storeFile.empty() ? where(o) : o.storeFile; }

// 2000 ms -> "2", 1500 ms -> "1.5"
std::string secondsText(std::chrono::milliseconds ms) {
  std::ostringstream s;
  s << double(ms.count()) / 1000.0;
  return s.str();
}

[[maybe_unused]] bool isLoopback(const std::string& addr) { return addr == "localhost" || addr == "::1" || addr.rfind("127.", 0) == 0; }

// Waits for a collective; its failure (a peer that exited, a timeout) becomes one clear message.
void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const char* what, const GroupOptions& o) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " failed on rank " + std::to_string(o.rank) + " of " + std::to_string(o.worldSize) +
                             " (another worker exited, or did not answer within " + secondsText(o.timeout) + " s): " + messageOf(e));
  }
}

// Broadcasts tensors in place from root, one flat buffer per dtype (few collectives for many small tensors).
void broadcastCoalesced(c10d::ProcessGroup& pg, const std::vector<at::Tensor>& tensors, int64_t root, const GroupOptions& o) {
  at::NoGradGuard noGrad;
  std::map<at::ScalarType, std::vector<at::Tensor>> byType;
  for (const auto& t : tensors) byType[t.scalar_type()].push_back(t);
  for (auto& [_, group] : byType) {
    std::vector<at::Tensor> flat{torch::utils::flatten_dense_tensors(group)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    waitFor(pg.broadcast(flat, opts), "broadcast", o);
    auto parts = torch::utils::unflatten_dense_tensors(flat[0], group);
    for (size_t k = 0; k < group.size(); ++k) group[k].copy_(parts[k]);
  }
}

void allreduceSum(c10d::ProcessGroup& pg, at::Tensor& t, const GroupOptions& o) {
  std::vector<at::Tensor> v{t};
  waitFor(pg.allreduce(v), "all-reduce", o);
}

// SyncBatchNorm (as torch.nn.SyncBatchNorm): batch statistics over all processes in the forward pass,
// the two per-channel sums of the input gradient over all processes in the backward pass. Weight and
// bias gradients stay local: the Reducer averages them with the other gradients.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  struct Group {
    c10::intrusive_ptr<c10d::ProcessGroup> pg;
    GroupOptions options;
  };

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            torch::nn::BatchNorm2dImpl* bn, Group* group) {
    at::NoGradGuard noGrad;
    const int64_t channels = x.size(1);
    const at::Tensor xd = x.to(at::kDouble);
    at::Tensor stats = at::cat({xd.sum({0, 2, 3}), xd.square().sum({0, 2, 3}), at::full({1}, double(x.numel() / channels), xd.options())});
    allreduceSum(*group->pg, stats, group->options);
    const double count = stats[2 * channels].item<double>();
    at::Tensor mean = stats.narrow(0, 0, channels) / count;
    at::Tensor var = (stats.narrow(0, channels, channels) / count - mean.square()).clamp_min(0);
    const double eps = bn->options.eps();
    at::Tensor invstd = (var + eps).rsqrt();
    if (bn->options.track_running_stats()) {
      const double momentum = bn->options.momentum().value_or(0.1);
      bn->running_mean.mul_(1 - momentum).add_(mean.to(bn->running_mean.scalar_type()), momentum);
      bn->running_var.mul_(1 - momentum).add_((var * (count / std::max(count - 1, 1.0))).to(bn->running_var.scalar_type()), momentum);
      bn->num_batches_tracked.add_(1);
    }
    const auto shape = std::vector<int64_t>{1, channels, 1, 1};
    mean = mean.to(x.scalar_type()).view(shape);
    invstd = invstd.to(x.scalar_type()).view(shape);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["group"] = int64_t(reinterpret_cast<intptr_t>(group));
    return (x - mean) * invstd * weight.view(shape) + bias.view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    auto* group = reinterpret_cast<Group*>(intptr_t(ctx->saved_data["group"].toInt()));
    const at::Tensor& dy = grads[0];
    const int64_t channels = x.size(1);
    const at::Tensor xmu = x - mean;
    at::Tensor sumDy = dy.sum({0, 2, 3});
    at::Tensor sumDyXmu = (dy * xmu).sum({0, 2, 3});
    at::Tensor gradWeight = sumDyXmu * invstd.view({-1});
    at::Tensor gradBias = sumDy.clone();
    at::Tensor sums = at::cat({sumDy, sumDyXmu});
    allreduceSum(*group->pg, sums, group->options);
    const auto shape = std::vector<int64_t>{1, channels, 1, 1};
    at::Tensor meanDy = (sums.narrow(0, 0, channels) / count).view(shape);
    at::Tensor meanDyXmu = (sums.narrow(0, channels, channels) / count).view(shape);
    at::Tensor dx = (dy - meanDy - xmu * invstd.square() * meanDyXmu) * invstd * weight.view(shape);
    return {dx, gradWeight, gradBias, at::Tensor(), at::Tensor()};
  }
};

// The Reducer warns (once) when a gradient's strides differ from its bucket view's. Convolutions over
// one input channel ([C, 1, k, k] weights) get gradients whose stride of the size-1 dimension differs:
// the same memory layout, a false alarm. That one message is dropped; all others pass on.
bool isStrideWarning(const std::string& msg) { return msg.rfind("Grad strides do not match bucket view strides", 0) == 0; }

// libtorch 2.x hands the handler a c10::Warning and keeps the getter and setter in c10::WarningUtils.
#if TORCH_VERSION_MAJOR >= 2
c10::WarningHandler* warningHandler() { return c10::WarningUtils::get_warning_handler(); }
void setWarningHandler(c10::WarningHandler* h) { c10::WarningUtils::set_warning_handler(h); }
#else
c10::WarningHandler* warningHandler() { return c10::Warning::get_warning_handler(); }
void setWarningHandler(c10::WarningHandler* h) { c10::Warning::set_warning_handler(h); }
#endif

class StrideWarningFilter : public c10::WarningHandler {
 public:
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override {
    if (!isStrideWarning(warning.msg()) && next) next->process(warning);
  }
#else
  void process(const c10::SourceLocation& where, const std::string& msg, const bool verbatim) override {
    if (!isStrideWarning(msg) && next) next->process(where, msg, verbatim);
  }
#endif
  static void install() {
    static StrideWarningFilter filter;  // never destroyed while a thread may point at it
    c10::WarningHandler* current = warningHandler();
    if (current == &filter) return;
    filter.next = current;
    setWarningHandler(&filter);
  }
  c10::WarningHandler* next = nullptr;
};

// Averages gradients over the group during the backward pass (c10d's Reducer, as DDP uses it) and
// broadcasts buffers from rank 0 before each forward (DDP's broadcast_buffers).
class DataParallelHooks : public TrainHooks {
 public:
  DataParallelHooks(c10::intrusive_ptr<c10d::ProcessGroup> pg, const GroupOptions& options, Network& net, int64_t bucketBytes, int64_t firstBucketBytes,
                    bool broadcastBuffers)
      : pg_(std::move(pg)), options_(options), broadcastBuffers_(broadcastBuffers) {
    std::vector<at::Tensor> params;
    std::unordered_map<size_t, std::string> names;
    for (const auto& [name, p] : net.namedParameters()) {
      if (!p.requires_grad()) continue;
      names[params.size()] = name;
      params.push_back(p);
    }
    TORCH_CHECK(!params.empty(), "the network has no trainable parameters");
    std::vector<bool> sparse(params.size(), false);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(params, {size_t(firstBucketBytes), size_t(bucketBytes)}, sparse);
    // Last parameters first: their gradients are ready first in the backward pass.
    std::reverse(buckets.begin(), buckets.end());
    std::reverse(limits.begin(), limits.end());
    buckets_ = int64_t(buckets.size());
    reducer_ = std::make_unique<c10d::Reducer>(params, buckets, limits, pg_, sparse, bucketBytes, /*find_unused_parameters=*/false,
                                               /*gradient_as_bucket_view=*/false, names, firstBucketBytes);
    for (const auto& [_, b] : net.namedBuffers()) buffers_.push_back(b);
  }

  void beforeForward(Network& net) override {
    reducer_->rebuild_buckets();  // once, after the first backward (bucket order = gradient order)
    if (broadcastBuffers_ && !buffers_.empty()) broadcastCoalesced(*pg_, buffers_, 0, options_);
  }
  void beforeBackward(Network& net) override {
    StrideWarningFilter::install();  // on the thread that runs this backward pass
    reducer_->prepare_for_backward({});
  }

  int64_t buckets() const { return buckets_; }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  GroupOptions options_;
  bool broadcastBuffers_;
  std::unique_ptr<c10d::Reducer> reducer_;
  std::vector<at::Tensor> buffers_;
  int64_t buckets_ = 0;
};

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)
// libtorch 2.x: Gloo and NCCL are c10d::Backends, which a ProcessGroup holds per device type (Gloo
// takes CPU and CUDA tensors, NCCL CUDA tensors), as torch.distributed sets them up.
template <typename B>
[[maybe_unused]] c10::intrusive_ptr<c10d::ProcessGroup> asProcessGroup(const c10::intrusive_ptr<c10d::Store>& store, const GroupOptions& o,
                                                                       c10::intrusive_ptr<B> backend, const std::string& name) {
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, int(o.rank), int(o.worldSize));
  const auto type = name == "nccl" ? c10d::ProcessGroup::BackendType::NCCL : c10d::ProcessGroup::BackendType::GLOO;
  const std::vector<c10::DeviceType> devices =
      name == "nccl" ? std::vector<c10::DeviceType>{c10::DeviceType::CUDA} : std::vector<c10::DeviceType>{c10::DeviceType::CPU, c10::DeviceType::CUDA};
  for (auto d : devices) pg->setBackend(d, type, c10::intrusive_ptr<c10d::Backend>(backend));
  pg->setDefaultBackend(type);
  return pg;
}
#elif TORCH_VERSION_MAJOR >= 2
#error "repopt's c10d code supports libtorch 1.13 and 2.6 or later (the ProcessGroup constructor differs in 2.0-2.5)"
#else
// libtorch 1.x: ProcessGroupGloo and ProcessGroupNCCL are ProcessGroups themselves.
template <typename B>
[[maybe_unused]] c10::intrusive_ptr<c10d::ProcessGroup> asProcessGroup(const c10::intrusive_ptr<c10d::Store>&, const GroupOptions&,
                                                                       c10::intrusive_ptr<B> backend, const std::string&) {
  return backend;
}
#endif

#if TORCH_VERSION_MAJOR >= 2
// A socket bound to host:port only, for the TCPStore server to listen on (its own socket would listen on
// every interface of the machine).
int bindTo(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, freeaddrinfo);
  int error = 0;
  for (const addrinfo* a = found; a; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = errno;
      continue;
    }
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    error = errno;
    close(fd);
  }
  throw std::runtime_error("cannot bind " + host + ":" + std::to_string(port) + ": " + std::strerror(error) +
                           (error == EADDRNOTAVAIL ? " (not an address of this host)" : ""));
}
#endif

c10::intrusive_ptr<c10d::Store> openStore(const GroupOptions& o) {
  if (!o.storeFile.empty()) {
    try {
      // numWorkers -1: the launcher that made the file removes it.
      auto store = c10::make_intrusive<c10d::FileStore>(o.storeFile, -1);
      store->setTimeout(o.connectTimeout);
      return store;
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(o.rank) + " could not open the rendezvous store file " + o.storeFile + ": " + messageOf(e));
    }
  }
  c10d::TCPStoreOptions so;
  so.port = uint16_t(o.masterPort);
  so.isServer = o.rank == 0;
  // The ranks register themselves and wait for each other afterwards (joinAll), which can say who is
  // missing; the store's own wait for workers says only "timeout".
  so.waitWorkers = false;
  so.timeout = o.connectTimeout;
#if TORCH_VERSION_MAJOR >= 2
  // 2.x defaults to a libuv server, which builds without libuv (Debian's) refuse; the classic server
  // is in every build.
  so.useLibUV = false;
#endif
  try {
#if TORCH_VERSION_MAJOR >= 2
    // The server listens on the master address only. (libtorch 1.x has no such option: its server
    // listens on every interface.)
    if (so.isServer) so.masterListenFd = bindTo(o.masterAddr, so.port);
#endif
    return c10::make_intrusive<c10d::TCPStore>(o.masterAddr, so);
  } catch (const std::exception& e) {
    const std::string secs = secondsText(o.connectTimeout);
    if (o.rank == 0) {
      throw std::runtime_error("rank 0 could not serve the rendezvous store on " + where(o) +
                               " (MASTER_ADDR/MASTER_PORT; is the port in use?): " + messageOf(e));
    }
    throw std::runtime_error("rank " + std::to_string(o.rank) + " could not reach the rendezvous store at " + where(o) + " within " + secs +
                             " s (MASTER_ADDR/MASTER_PORT; is rank 0 running and the address reachable?): " + messageOf(e));
  }
}

// "0-2, 5"
std::string rankList(const std::vector<int64_t>& ranks) {
  std::ostringstream s;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    s << (i ? ", " : "") << ranks[i];
    if (j > i) s << "-" << ranks[j];
    i = j + 1;
  }
  return s.str();
}

// Every rank registers in the store, then waits until all have: a rank that never comes is named
// (to the observer, and in the timeout error) instead of surfacing as a socket timeout in Gloo.
void joinAll(c10d::Store& store, const GroupOptions& o, const JoinObserver& observer) {
  const std::string count = "repopt/joined";
  const auto key = [](int64_t rank) { return "repopt/joined/" + std::to_string(rank); };
  const auto lost = [&](const std::exception& e) {
    return std::runtime_error("rank " + std::to_string(o.rank) + " lost the rendezvous store at " + storeWhere(o) +
                              " while waiting for the other ranks (did rank 0 exit?): " + messageOf(e));
  };
  const auto start = std::chrono::steady_clock::now();
  auto nextReport = start + o.reportEvery;
  int64_t sameRank = 0;
  try {
    sameRank = store.add(key(o.rank), 1);
    if (sameRank == 1) store.add(count, 1);
  } catch (const std::exception& e) {
    throw lost(e);
  }
  // Two workers with one RANK would make the count complete while a rank is missing.
  if (sameRank > 1)
    throw std::runtime_error("rank " + std::to_string(o.rank) + ": another worker already joined the rendezvous at " + storeWhere(o) + " as rank " +
                             std::to_string(o.rank) + " (every worker needs its own RANK; on several hosts, each host its own --node-rank or NODE_RANK)");
  for (;;) {
    JoinStatus status;
    const auto now = std::chrono::steady_clock::now();
    status.waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
    status.timedOut = status.waited >= o.connectTimeout;
    try {
      if (store.add(count, 0) >= o.worldSize) return;
      if (!status.timedOut && now < nextReport) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      for (int64_t r = 0; r < o.worldSize; ++r)
        if (store.check({key(r)})) status.joined.push_back(r);
    } catch (const std::exception& e) {
      throw lost(e);
    }
    nextReport += o.reportEvery;
    if (observer) observer(status);
    if (status.timedOut) {
      std::vector<int64_t> missing;
      for (int64_t r = 0, k = 0; r < o.worldSize; ++r) {
        if (k < int64_t(status.joined.size()) && status.joined[k] == r)
          ++k;
        else
          missing.push_back(r);
      }
      throw std::runtime_error("rank " + std::to_string(o.rank) + ": rank(s) " + rankList(missing) + " did not join the rendezvous at " + storeWhere(o) +
                               " within " + secondsText(o.connectTimeout) + " s (joined: " + rankList(status.joined) + ")");
    }
  }
}

c10::intrusive_ptr<c10d::ProcessGroup> createGroup(const GroupOptions& o, const JoinObserver& observer, c10::intrusive_ptr<c10d::Store>& storeOut) {
  c10::intrusive_ptr<c10d::Store> base = openStore(o);
  joinAll(*base, o, observer);
  base->setTimeout(o.timeout);
  storeOut = base;
  auto store = c10::make_intrusive<c10d::PrefixStore>("repopt/" + o.backend, base);
  if (o.backend == "nccl") {
#ifdef USE_C10D_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = o.timeout;
    return asProcessGroup(store, o, c10::make_intrusive<c10d::ProcessGroupNCCL>(store, int(o.rank), int(o.worldSize), opts), "nccl");
#else
    TORCH_CHECK(false, "backend 'nccl' is not in this build: it needs a CUDA libtorch and nccl.h at compile time (use backend 'gloo')");
#endif
  }
#ifndef USE_C10D_GLOO
  TORCH_CHECK(false,
              "backend 'gloo' is not in this build: gloo's headers were missing when it was compiled (Debian: apt-get install libgloo-dev, then rebuild)");
#else
  auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
  if (!o.interface.empty()) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o.interface));
  } else if (!o.hostname.empty()) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.hostname));
  } else if (!o.storeFile.empty() || isLoopback(o.masterAddr)) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  opts->threads = 2;
  try {
    return asProcessGroup(store, o, c10::make_intrusive<c10d::ProcessGroupGloo>(store, int(o.rank), int(o.worldSize), opts), "gloo");
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(o.rank) + ": the Gloo connections between the " + std::to_string(o.worldSize) +
                             " workers failed (rendezvous at " + where(o) + "): " + messageOf(e));
  }
#endif
}

}  // namespace

ProcessGroupHandle::ProcessGroupHandle(const GroupOptions& options, const JoinObserver& observer) : options_(options) {
  group_ = createGroup(options_, observer, store_);
}

at::Tensor ProcessGroupHandle::allreduce(const at::Tensor& t, Reduction op) {
  c10d::AllreduceOptions opts;
  switch (op) {
    case Reduction::Sum:
    case Reduction::Mean: opts.reduceOp = c10d::ReduceOp::SUM; break;
    case Reduction::Max: opts.reduceOp = c10d::ReduceOp::MAX; break;
    case Reduction::Min: opts.reduceOp = c10d::ReduceOp::MIN; break;
  }
  TORCH_CHECK(op != Reduction::Mean || t.is_floating_point(), "all-reduce 'mean' needs a floating-point tensor");
  std::vector<at::Tensor> v{t.contiguous().clone()};
  waitFor(group_->allreduce(v, opts), "all-reduce", options_);
  if (op == Reduction::Mean) v[0].div_(double(options_.worldSize));
  return v[0];
}

at::Tensor ProcessGroupHandle::broadcast(const at::Tensor& t, int64_t root) {
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  std::vector<at::Tensor> v{t.contiguous().clone()};
  waitFor(group_->broadcast(v, opts), "broadcast", options_);
  return v[0];
}

void ProcessGroupHandle::barrier() { waitFor(group_->barrier(), "barrier", options_); }

void ProcessGroupHandle::broadcastState(Network& net, int64_t root) {
  std::vector<at::Tensor> tensors;
  for (const auto& [_, t] : net.stateDict()) tensors.push_back(t);
  broadcastCoalesced(*group_, tensors, root, options_);
}

int64_t ProcessGroupHandle::attach(Network& net, const AttachOptions& o) {
  TORCH_CHECK(!net.hooks, "the network is already attached to a process group (detach it first)");
  TORCH_CHECK(!(o.syncBatchNorm && net.batchNormMode() == BatchNormMode::Frozen), "syncBatchNorm and frozen BatchNorm exclude each other");
  broadcastState(net, 0);
  auto hooks = std::make_shared<DataParallelHooks>(group_, options_, net, o.bucketBytes, o.firstBucketBytes, o.broadcastBuffers);
  if (o.syncBatchNorm) {
    auto group = std::make_shared<SyncBatchNormFunction::Group>(SyncBatchNormFunction::Group{group_, options_});
    net.setBatchNormMode(BatchNormMode::Sync, [group](torch::nn::BatchNorm2dImpl& bn, const at::Tensor& x) {
      return SyncBatchNormFunction::apply(x, bn.weight, bn.bias, &bn, group.get());
    });
  }
  hooks->groupAsyncSteps = asyncSteps_;
  net.hooks = hooks;
  return hooks->buckets();
}

void ProcessGroupHandle::detach(Network& net) {
  net.hooks.reset();
  if (net.batchNormMode() == BatchNormMode::Sync) net.setBatchNormMode(BatchNormMode::Batch);
}

}  // namespace repopt

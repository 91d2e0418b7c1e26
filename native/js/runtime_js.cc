#include "runtime_js.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <torch/version.h>

#ifdef REPOPT_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "addon.h"
#include "async.h"
#include "errors.h"

namespace repopt {

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "info");
    args.expectCount(0, 0);
    Napi::Env env = info.Env();
    auto out = Napi::Object::New(env);
    out.Set("torchVersion", TORCH_VERSION);
    bool cuda = torch::cuda::is_available();
    out.Set("cuda", cuda);
    out.Set("deviceCount", double(cuda ? torch::cuda::device_count() : 0));
    const auto& hooks = at::detail::getCUDAHooks();
    out.Set("cudnnVersion", cuda && hooks.hasCuDNN() ? Napi::Value(Napi::Number::New(env, double(hooks.versionCuDNN()))) : env.Null());
    out.Set("threads", double(at::get_num_threads()));
    out.Set("interopThreads", double(at::get_num_interop_threads()));
    out.Set("cxx11Abi", bool(_GLIBCXX_USE_CXX11_ABI));
#ifdef REPOPT_CUDA
    out.Set("cudaBuild", true);
#else
    out.Set("cudaBuild", false);
#endif
    return out;
  });
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "memory");
    args.expectCount(0, 0);
    auto out = Napi::Object::New(info.Env());
    out.Set("tensorBytes", double(Addon::of(info.Env()).tensorBytes));
    out.Set("v8ExternalBytes", double(Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0)));
    return out;
  });
}

#ifdef REPOPT_CUDA
// The statistics' index of "all pools": StatType moved to c10::CachingDeviceAllocator in libtorch 2.6.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)
constexpr size_t aggregateStat = size_t(c10::CachingDeviceAllocator::StatType::AGGREGATE);
#else
constexpr size_t aggregateStat = size_t(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE);
#endif
#endif

// Peak and current bytes of the CUDA caching allocator on one device (CUDA builds only).
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "cudaMemory");
    args.expectCount(0, 2);
    const int64_t device = args.has(0) ? args.integer(0, "device", 0, 1023) : 0;
    const bool resetPeak = args.has(1) && args.boolean(1, "resetPeak");
#ifdef REPOPT_CUDA
    if (!torch::cuda::is_available() || device >= int64_t(torch::cuda::device_count())) args.rangeError("device", "is not a visible CUDA device");
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const auto stats = alloc::getDeviceStats(int(device));
    const auto& allocated = stats.allocated_bytes[aggregateStat];
    const auto& reserved = stats.reserved_bytes[aggregateStat];
    auto out = Napi::Object::New(info.Env());
    out.Set("allocated", double(allocated.current));
    out.Set("peakAllocated", double(allocated.peak));
    out.Set("reserved", double(reserved.current));
    if (resetPeak) alloc::resetPeakStats(int(device));
    return out;
#else
    (void)device, (void)resetPeak;
    throw Napi::Error::New(info.Env(), "cudaMemory: this addon was built without CUDA");
#endif
  });
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "setNumThreads");
    args.expectCount(1, 1);
    at::set_num_threads(int(args.integer(0, "threads", 1, 1024)));
    return info.Env().Undefined();
  });
}

// at::get_num_threads() as asynchronous work sees it on a libuv pool thread (tests: setNumThreads
// reaches the threads that run asynchronous steps).
Napi::Value ThreadsAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "threadsAsync");
    args.expectCount(0, 0);
    return PromiseWorker<int>::start(
        info.Env(), []() { return at::get_num_threads(); }, [](Napi::Env env, int& n) -> Napi::Value { return Napi::Number::New(env, double(n)); });
  });
}

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "manualSeed");
    args.expectCount(1, 1);
    uint64_t seed;
    if (args[0].IsBigInt()) {
      bool lossless = false;
      seed = args[0].As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) args.rangeError("seed", "must fit in an unsigned 64-bit integer");
    } else {
      seed = uint64_t(args.integer(0, "seed", 0, (int64_t(1) << 53) - 1));
    }
    at::manual_seed(seed);  // seeds the CPU generator and, when present, every CUDA device
    return info.Env().Undefined();
  });
}

// CUDA math settings (torch.backends.cudnn.allow_tf32 / .deterministic / .benchmark and
// torch.backends.cuda.matmul.allow_tf32): libtorch's global switches, harmless on CPU builds.
Napi::Value SetCudaMath(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "setCudaMath");
    args.expectCount(1, 1);
    Fields f(info.Env(), args.object(0, "options"), "setCudaMath", "options");
    auto& ctx = at::globalContext();
    // All options are checked before any is applied.
    const bool tf32 = f.boolean("tf32", ctx.allowTF32CuDNN() && ctx.allowTF32CuBLAS());
    const bool deterministic = f.boolean("deterministic", ctx.deterministicCuDNN());
    const bool benchmark = f.boolean("benchmark", ctx.benchmarkCuDNN());
    if (f.has("tf32")) ctx.setAllowTF32CuDNN(tf32), ctx.setAllowTF32CuBLAS(tf32);
    ctx.setDeterministicCuDNN(deterministic);
    ctx.setBenchmarkCuDNN(benchmark);
    auto out = Napi::Object::New(info.Env());
    out.Set("tf32", ctx.allowTF32CuDNN() && ctx.allowTF32CuBLAS());
    out.Set("deterministic", ctx.deterministicCuDNN());
    out.Set("benchmark", ctx.benchmarkCuDNN());
    return out;
  });
}

}  // namespace

void InitRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New<Info>(env, "info"));
  exports.Set("memory", Napi::Function::New<Memory>(env, "memory"));
  exports.Set("cudaMemory", Napi::Function::New<CudaMemory>(env, "cudaMemory"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("threadsAsync", Napi::Function::New<ThreadsAsync>(env, "threadsAsync"));
  exports.Set("manualSeed", Napi::Function::New<ManualSeed>(env, "manualSeed"));
  exports.Set("setCudaMath", Napi::Function::New<SetCudaMath>(env, "setCudaMath"));
}

}  // namespace repopt

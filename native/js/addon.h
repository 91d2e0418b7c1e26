#pragma once
// Per-environment state of the addon. jest and worker_threads load the module several times in one
// process, so nothing here may live in statics.
#include <napi.h>

#include <memory>

namespace at {
class Tensor;
}

namespace repopt {

struct OptimizerHandle;

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

  Napi::FunctionReference tensorConstructor;
  // Set by Tensor::Wrap for the duration of one constructor call, so that JS code cannot construct
  // Tensors without data.
  at::Tensor* pendingTensor = nullptr;
  Napi::FunctionReference optimizerConstructor;
  // Like pendingTensor, for optimizers made by Network.createOptimizer.
  std::shared_ptr<OptimizerHandle>* pendingOptimizer = nullptr;
  // Bytes of live JS-owned tensors, as reported to V8 (AdjustExternalMemory).
  int64_t tensorBytes = 0;

  static Addon& of(Napi::Env env) { return *env.GetInstanceData<Addon>(); }
};

// Constructs a JS object with `ctor` while `slot` points at `value`; the C++ constructor takes the
// value from the slot. JS code calling the constructor directly finds the slot empty.
template <typename T>
Napi::Object constructFromSlot(Napi::FunctionReference& ctor, T*& slot, T& value) {
  slot = &value;
  try {
    Napi::Object obj = ctor.New({});
    slot = nullptr;
    return obj;
  } catch (...) {
    slot = nullptr;
    throw;
  }
}

}  // namespace repopt

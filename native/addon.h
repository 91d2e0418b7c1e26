#pragma once
// Per-environment state of the addon. jest and worker_threads load the module several times in one
// process, so nothing here may live in statics.
#include <napi.h>

namespace at {
class Tensor;
}

namespace repopt {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

  Napi::FunctionReference tensorConstructor;
  // Set by Tensor::Wrap for the duration of one constructor call, so that JS code cannot construct
  // Tensors without data.
  at::Tensor* pendingTensor = nullptr;
  Napi::FunctionReference optimizerConstructor;
  Napi::FunctionReference networkConstructor;
  // Like pendingTensor, for optimizers made by Network.createOptimizer.
  void* pendingOptimizer = nullptr;
  // Bytes of live JS-owned tensors, as reported to V8 (AdjustExternalMemory).
  int64_t tensorBytes = 0;

  static Addon& of(Napi::Env env) { return *env.GetInstanceData<Addon>(); }
};

}  // namespace repopt

#include "addon.h"

#include "runtime.h"
#include "tensor.h"

namespace repopt {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  Tensor::Init(env, exports, *this);
  InitRuntime(env, exports);
}

}  // namespace repopt

using repopt::Addon;
NODE_API_ADDON(Addon)

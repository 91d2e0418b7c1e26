#include "addon.h"

#include "dataset_js.h"
#include "distributed_js.h"
#include "image_loader_js.h"
#include "network_js.h"
#include "optimizer_js.h"
#include "randaugment_js.h"
#include "runtime_js.h"
#include "tensor.h"

namespace repopt {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  Tensor::Init(env, exports, *this);
  JsNetwork::Init(env, exports, *this);
  JsDataset::Init(env, exports, *this);
  JsOptimizer::Init(env, exports, *this);
  InitRuntime(env, exports);
  InitQuantFunctions(env, exports);
  InitDistributed(env, exports, *this);
  InitRandAugment(env, exports);
  InitImageLoader(env, exports);
}

}  // namespace repopt

using repopt::Addon;
NODE_API_ADDON(Addon)

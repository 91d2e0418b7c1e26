#pragma once
// The JS Dataset: images and labels uploaded once to a device, batches gathered and augmented there.
#include <napi.h>

#include <memory>

#include "core/dataset.h"
#include "errors.h"

namespace repopt {

class Addon;

class JsDataset : public Napi::ObjectWrap<JsDataset> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static std::shared_ptr<DeviceDataset> Get(const Args& args, size_t i, const char* name);
  // new Dataset(images: Uint8Array, shape: [N, C, H, W], labels: Int32Array, { device?, mean, std, augmentSeed? })
  explicit JsDataset(const Napi::CallbackInfo& info);

 private:
  Napi::Value Count(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Permutation(const Napi::CallbackInfo& info);
  Napi::Value Batch(const Napi::CallbackInfo& info);
  Napi::Value RngState(const Napi::CallbackInfo& info);
  Napi::Value SetRngState(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  DeviceDataset& live(const char* fn) const;
  std::shared_ptr<DeviceDataset> dataset_;
};

// Argument i as ds's epoch permutation: an int64 Tensor of ds.count() indices.
const at::Tensor& permutationArg(const Args& args, size_t i, const DeviceDataset& ds);

// Reads { pad?, flip? } from an options object.
Augmentation readAugmentation(const Fields& f);

}  // namespace repopt

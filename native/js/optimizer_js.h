#pragma once
// The JS Optimizer: one libtorch optimizer (plain SGD / AdamW, RepOptSGD, RepOptAdamW) over a
// network's parameters. Created by Network.createOptimizer.
#include <napi.h>

#include <memory>
#include <string>

#include "core/optimizer.h"
#include "errors.h"

namespace repopt {

class Addon;

class JsOptimizer : public Napi::ObjectWrap<JsOptimizer> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<OptimizerHandle> handle);
  static std::shared_ptr<OptimizerHandle> Get(const Args& args, size_t i, const char* name);

  explicit JsOptimizer(const Napi::CallbackInfo& info);

 private:
  Napi::Value Kind(const Napi::CallbackInfo& info);
  Napi::Value Steps(const Napi::CallbackInfo& info);
  Napi::Value Implementation(const Napi::CallbackInfo& info);
  Napi::Value GradMultBytes(const Napi::CallbackInfo& info);
  Napi::Value SetLr(const Napi::CallbackInfo& info);
  Napi::Value SetImplementation(const Napi::CallbackInfo& info);
  Napi::Value StateBytes(const Napi::CallbackInfo& info);
  Napi::Value LoadStateBytes(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  OptimizerHandle& live(const char* fn) const;
  std::shared_ptr<OptimizerHandle> handle_;
};

}  // namespace repopt

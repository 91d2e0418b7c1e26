#pragma once
// The JS Tensor: owns one at::Tensor, reports its bytes to V8, and can be disposed explicitly.
#include <napi.h>

#include <ATen/ATen.h>

#include <string>

#include "core/device.h"
#include "errors.h"

namespace repopt {

class Addon;

at::ScalarType parseDtype(const Args& args, size_t i, const char* name);
const char* dtypeName(at::ScalarType t);
at::Device parseDevice(const Args& args, size_t i, const char* name);
// A device from its name; errors say "<fn>: <what> ..." (CUDA unavailable, unknown name).
at::Device deviceFromName(Napi::Env env, const std::string& fn, const std::string& what, const std::string& name);

class Tensor : public Napi::ObjectWrap<Tensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  // A new JS Tensor that owns t.
  static Napi::Object Wrap(Napi::Env env, at::Tensor t);
  // The live at::Tensor behind a JS argument; TypeError for non-Tensors, Error when disposed.
  static const at::Tensor& Get(const Args& args, size_t i, const char* name);
  // The live at::Tensor behind v, or nullptr when v is not a Tensor; throws when it is disposed.
  static const at::Tensor* TryGet(Napi::Value v, const char* fn);

  explicit Tensor(const Napi::CallbackInfo& info);
  void Finalize(Napi::Env env) override;

 private:
  static Napi::Value FromArray(const Napi::CallbackInfo& info);
  static Napi::Value Zeros(const Napi::CallbackInfo& info);
  static Napi::Value Randn(const Napi::CallbackInfo& info);

  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value Nbytes(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Matmul(const Napi::CallbackInfo& info);
  Napi::Value MatmulAsync(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  const at::Tensor& live(const char* fn) const;
  void release(Napi::Env env);

  at::Tensor tensor_;
  int64_t externalBytes_ = 0;
  bool disposed_ = false;
};

}  // namespace repopt

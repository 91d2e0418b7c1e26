#include "tensor.h"

#include <torch/version.h>

#include <cstring>

#include "addon.h"
#include "async.h"

#include <ATen/detail/CUDAHooksInterface.h>

namespace repopt {

namespace {

const napi_type_tag kTensorTag = {0x7e3d1c5a9b2f4e61ULL, 0x8a4c2d1e6f0b3957ULL};

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  napi_typedarray_type array;
};
const DtypeEntry kDtypes[] = {
    {"float32", at::kFloat, napi_float32_array}, {"float64", at::kDouble, napi_float64_array}, {"int32", at::kInt, napi_int32_array},
    {"int64", at::kLong, napi_bigint64_array},   {"uint8", at::kByte, napi_uint8_array},
};

const DtypeEntry* entryFor(at::ScalarType t) {
  for (const auto& e : kDtypes)
    if (e.type == t) return &e;
  return nullptr;
}

const DtypeEntry* entryFor(napi_typedarray_type a) {
  for (const auto& e : kDtypes)
    if (e.array == a) return &e;
  return nullptr;
}

int64_t bytesOf(const at::Tensor& t) { return t.defined() ? int64_t(t.numel() * t.element_size()) : 0; }

}  // namespace

at::ScalarType parseDtype(const Args& args, size_t i, const char* name) {
  std::string s = args.string(i, name);
  for (const auto& e : kDtypes)
    if (s == e.name) return e.type;
  args.rangeError(name, "must be one of float32, float64, int32, int64, uint8; got '" + s + "'");
}

const char* dtypeName(at::ScalarType t) {
  const DtypeEntry* e = entryFor(t);
  return e ? e->name : c10::toString(t);
}

at::Device deviceFromName(Napi::Env env, const std::string& fn, const std::string& what, const std::string& s) {
  at::Device device(at::kCPU);
  try {
    device = at::Device(s);
  } catch (const c10::Error&) {
    throw Napi::RangeError::New(env, fn + ": " + what + " is not a device name like 'cpu', 'cuda' or 'cuda:0': '" + s + "'");
  }
  if (device.is_cuda()) {
    if (!at::hasCUDA()) throw Napi::Error::New(env, fn + ": " + cudaUnavailableReason());
    const int64_t visible = at::detail::getCUDAHooks().getNumGPUs();
    if (device.has_index() && device.index() >= visible) {
      throw Napi::RangeError::New(env, fn + ": " + what + " names " + s + " but only " + std::to_string(visible) + " CUDA device(s) are visible");
    }
  } else if (!device.is_cpu()) {
    throw Napi::RangeError::New(env, fn + ": " + what + " must be 'cpu' or a CUDA device, got '" + s + "'");
  }
  return device;
}

at::Device parseDevice(const Args& args, size_t i, const char* name) {
  return deviceFromName(args.env(), args.fn(), std::string("argument '") + name + "'", args.string(i, name));
}

void Tensor::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Tensor",
                                    {
                                        StaticMethod<&Tensor::FromArray>("fromArray"),
                                        StaticMethod<&Tensor::Zeros>("zeros"),
                                        StaticMethod<&Tensor::Randn>("randn"),
                                        InstanceAccessor<&Tensor::Shape>("shape"),
                                        InstanceAccessor<&Tensor::Dtype>("dtype"),
                                        InstanceAccessor<&Tensor::DeviceName>("device"),
                                        InstanceAccessor<&Tensor::Nbytes>("nbytes"),
                                        InstanceAccessor<&Tensor::IsDisposed>("isDisposed"),
                                        InstanceMethod<&Tensor::ToArray>("toArray"),
                                        InstanceMethod<&Tensor::To>("to"),
                                        InstanceMethod<&Tensor::Matmul>("matmul"),
                                        InstanceMethod<&Tensor::MatmulAsync>("matmulAsync"),
                                        InstanceMethod<&Tensor::Dispose>("dispose"),
                                    });
  addon.tensorConstructor = Napi::Persistent(ctor);
  exports.Set("Tensor", ctor);
}

Tensor::Tensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tensor>(info) {
  Addon& addon = Addon::of(info.Env());
  if (addon.pendingTensor == nullptr) {
    throw Napi::TypeError::New(info.Env(), "Tensor: use Tensor.fromArray, Tensor.zeros or Tensor.randn to create tensors");
  }
  tensor_ = std::move(*addon.pendingTensor);
  addon.pendingTensor = nullptr;
  info.This().As<Napi::Object>().TypeTag(&kTensorTag);
  externalBytes_ = bytesOf(tensor_);
  addon.tensorBytes += externalBytes_;
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), externalBytes_);
}

Napi::Object Tensor::Wrap(Napi::Env env, at::Tensor t) {
  Addon& addon = Addon::of(env);
  return constructFromSlot(addon.tensorConstructor, addon.pendingTensor, t);
}

const at::Tensor* Tensor::TryGet(Napi::Value v, const char* fn) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTensorTag)) return nullptr;
  return &Napi::ObjectWrap<Tensor>::Unwrap(v.As<Napi::Object>())->live(fn);
}

const at::Tensor& Tensor::Get(const Args& args, size_t i, const char* name) {
  const at::Tensor* t = i < args.count() ? TryGet(args[i], args.fn()) : nullptr;
  if (t == nullptr) args.typeError(name, "a Tensor");
  return *t;
}

const at::Tensor& Tensor::live(const char* fn) const {
  if (disposed_) throw Napi::Error::New(Env(), std::string(fn) + ": the tensor has been disposed");
  return tensor_;
}

void Tensor::release(Napi::Env env) {
  if (disposed_) return;
  disposed_ = true;
  tensor_ = at::Tensor();
  Addon::of(env).tensorBytes -= externalBytes_;
  Napi::MemoryManagement::AdjustExternalMemory(env, -externalBytes_);
  externalBytes_ = 0;
}

void Tensor::Finalize(Napi::Env env) { release(env); }

Napi::Value Tensor::FromArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.fromArray");
    args.expectCount(1, 2);
    if (!args[0].IsTypedArray()) args.typeError("data", "a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
    auto data = args[0].As<Napi::TypedArray>();
    const DtypeEntry* entry = entryFor(data.TypedArrayType());
    if (entry == nullptr) args.typeError("data", "a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
    int64_t length = int64_t(data.ElementLength());
    std::vector<int64_t> shape = args.has(1) ? args.shape(1, "shape") : std::vector<int64_t>{length};
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    if (numel != length) {
      args.rangeError("shape", "describes " + std::to_string(numel) + " elements but 'data' holds " + std::to_string(length));
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(entry->type));
    if (length > 0) {
      // Through napi_get_typedarray_info, which (unlike Napi::ArrayBuffer) also reads a SharedArrayBuffer;
      // its pointer already includes the byte offset. The bytes are copied, so later writes do not reach the tensor.
      void* src = nullptr;
      if (napi_get_typedarray_info(info.Env(), data, nullptr, nullptr, &src, nullptr, nullptr) != napi_ok || src == nullptr) {
        args.typeError("data", "a typed array whose memory can be read");
      }
      std::memcpy(t.data_ptr(), src, size_t(length) * t.element_size());
    }
    return Wrap(info.Env(), std::move(t));
  });
}

Napi::Value Tensor::Zeros(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.zeros");
    args.expectCount(1, 2);
    auto shape = args.shape(0, "shape");
    at::ScalarType dtype = args.has(1) ? parseDtype(args, 1, "dtype") : at::kFloat;
    return Wrap(info.Env(), at::zeros(shape, at::TensorOptions().dtype(dtype)));
  });
}

Napi::Value Tensor::Randn(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.randn");
    args.expectCount(1, 2);
    auto shape = args.shape(0, "shape");
    at::ScalarType dtype = args.has(1) ? parseDtype(args, 1, "dtype") : at::kFloat;
    if (!at::isFloatingType(dtype)) args.rangeError("dtype", std::string("must be float32 or float64 for randn, got ") + dtypeName(dtype));
    return Wrap(info.Env(), at::randn(shape, at::TensorOptions().dtype(dtype)));
  });
}

Napi::Value Tensor::Shape(const Napi::CallbackInfo& info) {
  requireReceiver(info, kTensorTag, "Tensor.shape");
  return guarded(info.Env(), [&]() -> Napi::Value {
    const at::Tensor& t = live("Tensor.shape");
    auto arr = Napi::Array::New(info.Env(), t.dim());
    for (int64_t k = 0; k < t.dim(); ++k) arr.Set(uint32_t(k), Napi::Number::New(info.Env(), double(t.size(k))));
    return arr;
  });
}

Napi::Value Tensor::Dtype(const Napi::CallbackInfo& info) {
  requireReceiver(info, kTensorTag, "Tensor.dtype");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), dtypeName(live("Tensor.dtype").scalar_type())); });
}

Napi::Value Tensor::DeviceName(const Napi::CallbackInfo& info) {
  requireReceiver(info, kTensorTag, "Tensor.device");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), live("Tensor.device").device().str()); });
}

Napi::Value Tensor::Nbytes(const Napi::CallbackInfo& info) {
  requireReceiver(info, kTensorTag, "Tensor.nbytes");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(bytesOf(live("Tensor.nbytes")))); });
}

Napi::Value Tensor::IsDisposed(const Napi::CallbackInfo& info) {
  requireReceiver(info, kTensorTag, "Tensor.isDisposed");
  return Napi::Boolean::New(info.Env(), disposed_);
}

Napi::Value Tensor::ToArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.toArray");
    args.expectCount(0, 0);
    const at::Tensor& t = live(args.fn());
    const DtypeEntry* entry = entryFor(t.scalar_type());
    if (entry == nullptr) throw Napi::TypeError::New(info.Env(), std::string("Tensor.toArray: no typed array for dtype ") + dtypeName(t.scalar_type()));
    at::Tensor host = t.to(at::kCPU).contiguous();
    size_t n = size_t(host.numel());
    auto buffer = Napi::ArrayBuffer::New(info.Env(), n * host.element_size());
    if (n > 0) std::memcpy(buffer.Data(), host.data_ptr(), n * host.element_size());
    return Napi::TypedArray(info.Env(), [&]() -> napi_value {
      napi_value out;
      napi_status s = napi_create_typedarray(info.Env(), entry->array, n, buffer, 0, &out);
      NAPI_THROW_IF_FAILED(info.Env(), s, nullptr);
      return out;
    }());
  });
}

Napi::Value Tensor::To(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.to");
    args.expectCount(1, 2);
    const at::Tensor& t = live(args.fn());
    at::Device device = parseDevice(args, 0, "device");
    at::ScalarType dtype = args.has(1) ? parseDtype(args, 1, "dtype") : t.scalar_type();
    // Always a new tensor (copy=true), so disposing one never invalidates the other.
    return Wrap(info.Env(), t.to(device, dtype, /*non_blocking=*/false, /*copy=*/true));
  });
}

Napi::Value Tensor::Matmul(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.matmul");
    args.expectCount(1, 1);
    const at::Tensor& other = Get(args, 0, "other");
    return Wrap(info.Env(), at::matmul(live(args.fn()), other));
  });
}

Napi::Value Tensor::MatmulAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Tensor.matmulAsync");
    args.expectCount(1, 1);
    at::Tensor a = live(args.fn());
    at::Tensor b = Get(args, 0, "other");
    return PromiseWorker<at::Tensor>::start(
        info.Env(), [a, b]() { return at::matmul(a, b); }, [](Napi::Env env, at::Tensor& out) -> Napi::Value { return Wrap(env, std::move(out)); });
  });
}

Napi::Value Tensor::Dispose(const Napi::CallbackInfo& info) {
  release(info.Env());
  return info.Env().Undefined();
}

}  // namespace repopt

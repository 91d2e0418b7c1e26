#include "errors.h"

#include <cmath>

namespace repopt {

namespace {
std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsNumber()) return "the number " + v.ToString().Utf8Value();
  if (v.IsBigInt()) return "a bigint";
  if (v.IsString()) return "a string";
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  if (v.IsSymbol()) return "a symbol";
  return "an object";
}
}  // namespace

void Args::expectCount(size_t min, size_t max) const {
  size_t n = count();
  if (n < min || n > max) {
    std::string want = min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
    throw Napi::TypeError::New(env(), std::string(fn_) + ": expected " + want + " argument(s), got " + std::to_string(n));
  }
}

void Args::typeError(const char* name, const std::string& expected) const {
  throw Napi::TypeError::New(env(), std::string(fn_) + ": argument '" + name + "' must be " + expected);
}

void Args::rangeError(const char* name, const std::string& what) const {
  throw Napi::RangeError::New(env(), std::string(fn_) + ": argument '" + name + "' " + what);
}

double Args::number(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsNumber()) typeError(name, "a number, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  return info_[i].As<Napi::Number>().DoubleValue();
}

int64_t Args::integer(size_t i, const char* name, int64_t min, int64_t max) const {
  if (i >= info_.Length() || !info_[i].IsNumber()) typeError(name, "an integer, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  double d = info_[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d)) rangeError(name, "must be an integer, got " + info_[i].ToString().Utf8Value());
  if (d < double(min) || d > double(max)) {
    rangeError(name, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + info_[i].ToString().Utf8Value());
  }
  return int64_t(d);
}

bool Args::boolean(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsBoolean()) typeError(name, "a boolean, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  return info_[i].As<Napi::Boolean>().Value();
}

std::string Args::string(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsString()) typeError(name, "a string, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  return info_[i].As<Napi::String>().Utf8Value();
}

Napi::Object Args::object(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsObject()) typeError(name, "an object, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  return info_[i].As<Napi::Object>();
}

Napi::Uint8Array Args::uint8Array(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsTypedArray() || info_[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    typeError(name, "a Uint8Array");
  }
  return info_[i].As<Napi::Uint8Array>();
}

std::vector<int64_t> Args::shape(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsArray())
    typeError(name, "an array of non-negative integers, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
  auto arr = info_[i].As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > 64) rangeError(name, "has " + std::to_string(n) + " dimensions; at most 64 are supported");
  std::vector<int64_t> dims;
  dims.reserve(n);
  int64_t numel = 1;
  for (uint32_t k = 0; k < n; ++k) {
    Napi::Value v = arr.Get(k);
    if (!v.IsNumber()) typeError(name, "an array of non-negative integers, got " + describe(v) + " at index " + std::to_string(k));
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < 0 || d != std::floor(d)) {
      rangeError(name, "must hold non-negative integers, got " + v.ToString().Utf8Value() + " at index " + std::to_string(k));
    }
    if (d > double(kMaxNumel)) rangeError(name, "dimension " + std::to_string(k) + " is too large");
    int64_t dim = int64_t(d);
    if (dim != 0 && numel > kMaxNumel / dim) rangeError(name, "describes more than 2^48 elements");
    numel *= dim;
    dims.push_back(dim);
  }
  return dims;
}

void Fields::fail(const char* key, const std::string& what, bool range) const {
  std::string msg = fn_ + ": " + path_ + "." + key + " " + what;
  if (range) throw Napi::RangeError::New(env_, msg);
  throw Napi::TypeError::New(env_, msg);
}

bool Fields::has(const char* key) const { return !get(key).IsUndefined(); }

double Fields::number(const char* key) const {
  Napi::Value v = get(key);
  if (!v.IsNumber()) fail(key, "must be a number, got " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) fail(key, "must be finite, got " + v.ToString().Utf8Value(), true);
  return d;
}

double Fields::number(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }

int64_t Fields::integer(const char* key, int64_t min, int64_t max) const {
  double d = number(key);
  if (d != std::floor(d) || d < double(min) || d > double(max)) {
    fail(key, "must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + get(key).ToString().Utf8Value(), true);
  }
  return int64_t(d);
}

bool Fields::boolean(const char* key, bool fallback) const { return has(key) ? boolean(key) : fallback; }

bool Fields::boolean(const char* key) const {
  Napi::Value v = get(key);
  if (!v.IsBoolean()) fail(key, "must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

std::string Fields::string(const char* key) const {
  Napi::Value v = get(key);
  if (!v.IsString()) fail(key, "must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

std::string Fields::string(const char* key, const std::string& fallback) const { return has(key) ? string(key) : fallback; }

Napi::Array Fields::array(const char* key) const {
  Napi::Value v = get(key);
  if (!v.IsArray()) fail(key, "must be an array, got " + describe(v));
  return v.As<Napi::Array>();
}

Napi::Float64Array Fields::float64Array(const char* key) const {
  Napi::Value v = get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) fail(key, "must be a Float64Array, got " + describe(v));
  return v.As<Napi::Float64Array>();
}

Fields Fields::element(const Napi::Array& array, const char* key, uint32_t k) const {
  Napi::Value v = array.Get(k);
  std::string at = std::string(key) + "[" + std::to_string(k) + "]";
  if (!v.IsObject() || v.IsArray()) fail(at.c_str(), "must be an object, got " + describe(v));
  return Fields(env_, v.As<Napi::Object>(), fn_, path_ + "." + at);
}

std::vector<std::string> Fields::strings(const char* key) const {
  Napi::Array a = array(key);
  std::vector<std::string> out;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    if (!v.IsString()) fail((std::string(key) + "[" + std::to_string(k) + "]").c_str(), "must be a string, got " + describe(v));
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

}  // namespace repopt

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

std::vector<int64_t> Args::shape(size_t i, const char* name) const {
  if (i >= info_.Length() || !info_[i].IsArray()) typeError(name, "an array of non-negative integers, got " + describe(i < info_.Length() ? info_[i] : env().Undefined()));
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

}  // namespace repopt

#pragma once
// Conversion of C++ / libtorch failures into JS errors, and argument checking that names the argument.
#include <napi.h>

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>
#include <vector>

#include "core/message.h"

namespace repopt {

// Runs fn and rethrows anything that is not already a JS error as one. Every native entry point
// runs its body through this, so no C++ exception can reach N-API and abort the process.
template <typename F>
auto guarded(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, messageOf(e));
  } catch (...) {
    throw Napi::Error::New(env, "unknown native error");
  }
}

// Reads and checks the arguments of one call. Errors say "<fn>: argument '<name>' ...".
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn) {}

  Napi::Env env() const { return info_.Env(); }
  // Arguments passed, not counting trailing undefined ones (f(x, undefined) is f(x), as in JS).
  size_t count() const {
    size_t n = info_.Length();
    while (n > 0 && info_[n - 1].IsUndefined()) --n;
    return n;
  }
  bool has(size_t i) const { return i < info_.Length() && !info_[i].IsUndefined(); }
  Napi::Value operator[](size_t i) const { return info_[i]; }

  void expectCount(size_t min, size_t max) const;
  [[noreturn]] void typeError(const char* name, const std::string& expected) const;
  [[noreturn]] void rangeError(const char* name, const std::string& what) const;

  int64_t integer(size_t i, const char* name, int64_t min, int64_t max) const;
  double number(size_t i, const char* name) const;
  bool boolean(size_t i, const char* name) const;
  std::string string(size_t i, const char* name) const;
  Napi::Object object(size_t i, const char* name) const;
  std::vector<int64_t> shape(size_t i, const char* name) const;
  Napi::Uint8Array uint8Array(size_t i, const char* name) const;

  const char* fn() const { return fn_; }

 private:
  const Napi::CallbackInfo& info_;
  const char* fn_;
};

// Reads the fields of a JS object argument. Errors say "<fn>: <path>.<key> must be ...".
class Fields {
 public:
  Fields(Napi::Env env, Napi::Object obj, std::string fn, std::string path) : env_(env), obj_(obj), fn_(std::move(fn)), path_(std::move(path)) {}

  bool has(const char* key) const;
  // The field as it is (undefined when absent).
  Napi::Value raw(const char* key) const { return obj_.Get(key); }
  double number(const char* key) const;
  double number(const char* key, double fallback) const;
  int64_t integer(const char* key, int64_t min, int64_t max) const;
  bool boolean(const char* key) const;
  bool boolean(const char* key, bool fallback) const;
  std::string string(const char* key) const;
  std::string string(const char* key, const std::string& fallback) const;
  Napi::Array array(const char* key) const;
  // A Float64Array field.
  Napi::Float64Array float64Array(const char* key) const;
  // The element k of an array field, as a nested reader.
  Fields element(const Napi::Array& array, const char* key, uint32_t k) const;
  std::vector<std::string> strings(const char* key) const;
  [[noreturn]] void fail(const char* key, const std::string& what, bool range = false) const;

 private:
  Napi::Value get(const char* key) const { return obj_.Get(key); }
  Napi::Env env_;
  Napi::Object obj_;
  std::string fn_, path_;
};

// Getters are not receiver-checked by V8 (methods are): a getter of one class called on an object of
// another would read the wrong C++ object. Every getter starts with this check, before touching `this`.
inline void requireReceiver(const Napi::CallbackInfo& info, const napi_type_tag& tag, const char* what) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&tag)) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + ": called on an object of another class");
  }
}

// Largest element count we accept from JS: far above any real tensor, far below int64 overflow.
constexpr int64_t kMaxNumel = int64_t(1) << 48;

}  // namespace repopt

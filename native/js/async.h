#pragma once
// Runs libtorch work off the JS thread and settles a Promise with the result. The work function must
// only touch values it owns (copied at::Tensor handles share storage by refcount, so a JS dispose()
// during the call cannot free what the worker uses).
#include <ATen/Parallel.h>
#include <napi.h>

#include <functional>
#include <memory>
#include <utility>

#include "errors.h"

namespace repopt {

template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;
  using Finally = std::function<void()>;

  // finally runs on the JS thread once the work has ended, before the promise settles. If start
  // throws (the async work could not be created or queued), finally never runs and is destroyed:
  // whatever it owns is released by its destructor.
  static Napi::Promise start(Napi::Env env, Work work, Convert convert, Finally finally = nullptr) {
    std::unique_ptr<PromiseWorker> w(new PromiseWorker(env, std::move(work), std::move(convert)));
    w->finally_ = std::move(finally);
    // libtorch sets each thread's OpenMP thread count once, lazily: a pool thread that already ran
    // work would keep an old count after setNumThreads. The work runs with the JS thread's count.
    w->threads_ = at::get_num_threads();
    Napi::Promise promise = w->deferred_.Promise();
    w->Queue();
    w.release();  // queued: the worker deletes itself once it has settled the promise
    return promise;
  }

 protected:
  void Execute() override {
    try {
      if (at::get_num_threads() != threads_) at::set_num_threads(threads_);
      result_ = work_();
    } catch (const std::exception& e) {
      SetError(messageOf(e));
    } catch (...) {
      SetError("unknown native error");
    }
  }
  void OnOK() override {
    if (finally_) finally_();
    try {
      deferred_.Resolve(convert_(Env(), result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (finally_) finally_();
    deferred_.Reject(e.Value());
  }

 private:
  PromiseWorker(Napi::Env env, Work work, Convert convert)
      : Napi::AsyncWorker(env, "repopt"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), convert_(std::move(convert)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  Finally finally_;
  int threads_ = 1;
  Result result_{};
};

}  // namespace repopt

#pragma once
// The JS Network: a native RepOpt-VGG-family model (core/network.h) with whole-step methods (forward,
// train steps, evaluation, state dict) and its optimizers. Arguments are converted here; the work is
// done by the core. While an asynchronous step runs, every call on the network, its optimizer and the
// dataset it reads is refused.
#include <napi.h>

#include <memory>
#include <utility>

#include "core/evaluate.h"
#include "core/network.h"
#include "core/training.h"
#include "errors.h"

namespace repopt {

class Addon;
class Args;
class DeviceDataset;
struct OptimizerHandle;

// Argument 'input' must be an [N, inChannels, H, W] batch for net.
void checkInput(const Args& args, const Network& net, const at::Tensor& x);

// { count, loss, accuracy } as a JS object.
Napi::Object metricsObject(Napi::Env env, const EvalMetrics& m);

// Module functions of quant_js.cc: observeRange, channelScales.
void InitQuantFunctions(Napi::Env env, Napi::Object exports);

// Marks the objects an asynchronous step uses as busy (their JS methods refuse to run) until the
// step has ended: the network, the optimizer, the dataset and, for a network attached to a process
// group, that group (its collectives would run on the JS thread while the step's run on a worker).
// The worker's finally callback releases it; if the worker never starts (start threw), the claim's
// destructor does. JS thread only.
class AsyncClaim {
 public:
  // optimizer and dataset may be null (not used by the step).
  AsyncClaim(std::shared_ptr<bool> network, const Network& net, std::shared_ptr<OptimizerHandle> optimizer, std::shared_ptr<DeviceDataset> dataset);
  AsyncClaim(const AsyncClaim&) = delete;
  AsyncClaim& operator=(const AsyncClaim&) = delete;
  ~AsyncClaim() { release(); }
  // Also marks this network busy (an EMA network the step updates).
  void alsoClaim(std::shared_ptr<bool> network);
  // Idempotent.
  void release();

 private:
  bool held_ = true;
  std::shared_ptr<bool> network_, extra_;
  std::shared_ptr<int> group_;
  std::shared_ptr<OptimizerHandle> optimizer_;
  std::shared_ptr<DeviceDataset> dataset_;
};

class JsNetwork : public Napi::ObjectWrap<JsNetwork> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  // new Network(spec, { precision?, seed? })
  explicit JsNetwork(const Napi::CallbackInfo& info);
  // The live, idle network behind a JS argument (TypeError for anything else).
  static std::shared_ptr<Network> Get(const Args& args, size_t i, const char* name);
  // The live, idle network behind a JS value and its busy flag (TypeError naming `name` for anything else).
  static std::pair<std::shared_ptr<Network>, std::shared_ptr<bool>> GetWithBusy(const Args& args, Napi::Value v, const char* name);

 private:
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value StateDict(const Napi::CallbackInfo& info);
  Napi::Value LoadStateDict(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value CreateOptimizer(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value TrainStepAsync(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value TimeOptimizerSteps(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value SetChannelsLast(const Napi::CallbackInfo& info);
  Napi::Value SetBatchNormMode(const Napi::CallbackInfo& info);
  Napi::Value TrainBatch(const Napi::CallbackInfo& info);
  Napi::Value TrainBatchAsync(const Napi::CallbackInfo& info);
  Napi::Value TakeTrainMetrics(const Napi::CallbackInfo& info);
  Napi::Value Evaluate(const Napi::CallbackInfo& info);
  Napi::Value EvaluateAsync(const Napi::CallbackInfo& info);
  // Quantization (quant_js.cc).
  Napi::Value Calibrate(const Napi::CallbackInfo& info);
  Napi::Value CalibrateAsync(const Napi::CallbackInfo& info);
  Napi::Value SetQuantRanges(const Napi::CallbackInfo& info);
  Napi::Value QuantParams(const Napi::CallbackInfo& info);
  Napi::Value SetFakeQuant(const Napi::CallbackInfo& info);
  Napi::Value EvaluateInt8(const Napi::CallbackInfo& info);
  Napi::Value EvaluateInt8Async(const Napi::CallbackInfo& info);
  Napi::Value ForwardInt8(const Napi::CallbackInfo& info);
  Napi::Value QuantizedWeights(const Napi::CallbackInfo& info);

  // The network, checked to be alive and not inside an asynchronous step.
  Network& idle(const char* fn) const;

  std::shared_ptr<Network> network_;
  // True while an asynchronous step runs (shared with the step, which may outlive this object).
  std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
  // The training metrics accumulated since the last takeTrainMetrics.
  std::shared_ptr<Trainer> trainer_ = std::make_shared<Trainer>();
};

}  // namespace repopt

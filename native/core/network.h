#pragma once
// The RepOpt-VGG family as libtorch modules: blocks in four modes (target, hs, csla, repvgg), a
// global-average-pool + linear head, parameters named with the official state_dict keys.
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace repopt {

enum class BlockMode { Target, HS, CSLA, RepVGG, Deploy };

BlockMode parseBlockMode(const std::string& mode);

struct BlockConfig {
  std::string name;
  int64_t inChannels, outChannels, stride;
  double scaleInit = 1.0;
  bool identity() const { return inChannels == outChannels && stride == 1; }
};

struct NetworkConfig {
  BlockMode mode;
  int64_t inChannels, numClasses;
  std::vector<BlockConfig> blocks;
};

// A per-output-channel scale: y = x * weight.view(1, C, 1, 1).
class ScaleLayerImpl : public torch::nn::Module {
 public:
  ScaleLayerImpl(int64_t channels, double init);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
};
TORCH_MODULE(ScaleLayer);

class Network;

// How BatchNorm normalises in training mode: over this process's batch (PyTorch's default, also the
// default under data parallelism), with the running statistics (frozen: eval-mode BN while training,
// statistics not updated), or over the batches of all processes (SyncBatchNorm, set by distributed.cc).
enum class BatchNormMode { Batch, Frozen, Sync };

struct BatchNormContext {
  BatchNormMode mode = BatchNormMode::Batch;
  // BatchNormMode::Sync: normalises x with statistics over all processes, updates bn's running stats.
  std::function<at::Tensor(torch::nn::BatchNorm2dImpl& bn, const at::Tensor& x)> sync;
};

// Work around one training step's forward and backward (distributed.cc: gradient averaging).
struct TrainHooks {
  virtual ~TrainHooks() = default;
  virtual void beforeForward(Network& net) {}
  virtual void beforeBackward(Network& net) {}
  virtual void afterBackward(Network& net) {}
  // Asynchronous steps running now on networks whose hooks use the same process group (shared with
  // that group; the JS layer refuses the group's collectives meanwhile). Null when there is none.
  std::shared_ptr<int> groupAsyncSteps;
};

// One conv3x3 -> [BN] -> ReLU layer of a plain network (target or deploy blocks).
struct PlainLayer {
  std::string weightKey;    // e.g. 'stage1.0.conv.weight'
  at::Tensor weight, bias;  // bias: deploy blocks only
  // Target blocks: the block's BN as it normalises now (training, frozen or synchronised); empty for deploy blocks.
  std::function<at::Tensor(const at::Tensor&)> norm;
  int64_t stride;
};

class QuantState;

class Block : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // The block as a plain layer (weightKey without the block's prefix); nullopt for multi-branch blocks.
  virtual c10::optional<PlainLayer> plain() const { return c10::nullopt; }
  std::shared_ptr<BatchNormContext> batchNormContext;

 protected:
  // bn(x), or its frozen / synchronised form in training mode.
  at::Tensor batchNorm(torch::nn::BatchNorm2d& bn, const at::Tensor& x);
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class Network {
 public:
  explicit Network(const NetworkConfig& config);

  // The float forward, or the quantized one while `quant` is in calibration or fake-quant mode.
  at::Tensor forward(const at::Tensor& x);
  at::Tensor floatForward(const at::Tensor& x);
  void train(bool on);
  bool isTraining() const;
  // In the official registration order, with full keys ('stage1.0.conv.weight', 'linear.bias').
  NamedTensors namedParameters() const;
  NamedTensors namedBuffers() const;
  // Parameters and buffers in PyTorch's state_dict order (each module's own, then its children's).
  NamedTensors stateDict() const;
  // Copies `state` (key -> tensor, in any order; an undefined tensor stands for a value that is not a
  // tensor) into the parameters and buffers. Every key and shape is checked first: if any is missing,
  // unexpected, of another shape or not a tensor, nothing is loaded and the message lists them all.
  void loadStateDict(const NamedTensors& state);
  std::vector<at::Tensor> trainableParameters() const;
  // Drops every gradient (PyTorch's zero_grad(set_to_none=True)): backward then writes fresh gradients
  // instead of adding to zeroed ones, one memory pass less per parameter.
  void clearGradients();
  // Looks a parameter up by key; undefined tensor when absent.
  at::Tensor parameter(const std::string& name) const;
  // EMA of the weights: every floating parameter and buffer becomes decay * this + (1 - decay) * source,
  // integer buffers (num_batches_tracked) are copied. `source` must pass averageMismatch.
  void updateAverage(const Network& source, double decay);
  // Why `source` cannot be averaged into this network (another architecture, device or dtype); empty when it can.
  std::string averageMismatch(const Network& source) const;
  void to(at::Device device, at::ScalarType dtype);
  // Lays 4-D parameters (conv weights) out in `format`.
  void setMemoryFormat(at::MemoryFormat format);
  at::MemoryFormat memoryFormat() const { return memoryFormat_; }
  // A batch on the network's device, in its memory format (channels-last when set).
  at::Tensor prepareInput(const at::Tensor& x) const;
  const NetworkConfig& config() const { return config_; }
  at::Device device() const;
  at::ScalarType dtype() const;
  // The blocks as plain layers; throws for hs, csla and repvgg networks (fold them first).
  std::vector<PlainLayer> plainLayers() const;
  const torch::nn::Linear& linear() const { return linear_; }

  std::shared_ptr<QuantState> quant;
  void setBatchNormMode(BatchNormMode mode, std::function<at::Tensor(torch::nn::BatchNorm2dImpl&, const at::Tensor&)> sync = nullptr);
  BatchNormMode batchNormMode() const { return batchNorm_->mode; }
  // Set while the network trains data-parallel (distributed.cc); the train step calls them.
  std::shared_ptr<TrainHooks> hooks;

 private:
  at::MemoryFormat memoryFormat_ = at::MemoryFormat::Contiguous;
  std::shared_ptr<BatchNormContext> batchNorm_ = std::make_shared<BatchNormContext>();
  NetworkConfig config_;
  std::vector<std::shared_ptr<Block>> blocks_;
  torch::nn::Linear linear_{nullptr};
};

}  // namespace repopt

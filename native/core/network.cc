#include "network.h"

#include <torch/nn/functional/batchnorm.h>
#include <torch/nn/functional/pooling.h>

#include <map>
#include <set>
#include <stdexcept>

#include "quant.h"

namespace repopt {

namespace nn = torch::nn;

BlockMode parseBlockMode(const std::string& mode) {
  if (mode == "target") return BlockMode::Target;
  if (mode == "hs") return BlockMode::HS;
  if (mode == "csla") return BlockMode::CSLA;
  if (mode == "repvgg") return BlockMode::RepVGG;
  if (mode == "deploy") return BlockMode::Deploy;
  TORCH_CHECK(false, "unknown block mode '", mode, "' (expected target, hs, csla, repvgg or deploy)");
}

ScaleLayerImpl::ScaleLayerImpl(int64_t channels, double init) { weight = register_parameter("weight", at::full({channels}, init)); }

at::Tensor ScaleLayerImpl::forward(const at::Tensor& x) { return x * weight.view({1, -1, 1, 1}); }

at::Tensor Block::batchNorm(nn::BatchNorm2d& bn, const at::Tensor& x) {
  if (!bn->is_training() || !batchNormContext || batchNormContext->mode == BatchNormMode::Batch) return bn->forward(x);
  if (batchNormContext->mode == BatchNormMode::Frozen) {
    namespace F = torch::nn::functional;
    return F::batch_norm(x, bn->running_mean, bn->running_var,
                         F::BatchNormFuncOptions().weight(bn->weight).bias(bn->bias).training(false).eps(bn->options.eps()));
  }
  return batchNormContext->sync(*bn, x);
}

namespace {

nn::Conv2d conv(const BlockConfig& b, int64_t kernel) {
  return nn::Conv2d(nn::Conv2dOptions(b.inChannels, b.outChannels, kernel).stride(b.stride).padding(kernel / 2).bias(false));
}

// conv3x3 -> BN -> ReLU
class TargetBlock : public Block {
 public:
  explicit TargetBlock(const BlockConfig& b) {
    conv_ = register_module("conv", conv(b, 3));
    bn_ = register_module("bn", nn::BatchNorm2d(b.outChannels));
  }
  at::Tensor forward(const at::Tensor& x) override { return batchNorm(bn_, conv_->forward(x)).relu_(); }
  c10::optional<PlainLayer> plain() const override {
    auto* self = const_cast<TargetBlock*>(this);
    return PlainLayer{"conv.weight", conv_->weight, at::Tensor(), [self](const at::Tensor& x) { return self->batchNorm(self->bn_, x); },
                      conv_->options.stride()->at(0)};
  }

 private:
  nn::Conv2d conv_{nullptr};
  nn::BatchNorm2d bn_{nullptr};
};

// s ⊙ conv3x3(x) + t ⊙ conv1x1(x) [+ g ⊙ x] -> BN -> ReLU  (hs: s, t trainable; csla: constant)
class LinearAddBlock : public Block {
 public:
  LinearAddBlock(const BlockConfig& b, bool constantScales) {
    conv_ = register_module("conv", conv(b, 3));
    scaleConv_ = register_module("scale_conv", ScaleLayer(b.outChannels, b.scaleInit));
    conv1x1_ = register_module("conv_1x1", conv(b, 1));
    scale1x1_ = register_module("scale_1x1", ScaleLayer(b.outChannels, b.scaleInit));
    if (b.identity()) scaleIdentity_ = register_module("scale_identity", ScaleLayer(b.outChannels, 1.0));
    bn_ = register_module("bn", nn::BatchNorm2d(b.outChannels));
    if (constantScales) {
      scaleConv_->weight.set_requires_grad(false);
      scale1x1_->weight.set_requires_grad(false);
    }
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor out = scaleConv_->forward(conv_->forward(x)) + scale1x1_->forward(conv1x1_->forward(x));
    if (scaleIdentity_) out = out + scaleIdentity_->forward(x);
    return batchNorm(bn_, out).relu_();
  }

 private:
  nn::Conv2d conv_{nullptr}, conv1x1_{nullptr};
  ScaleLayer scaleConv_{nullptr}, scale1x1_{nullptr}, scaleIdentity_{nullptr};
  nn::BatchNorm2d bn_{nullptr};
};

// BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x)] -> ReLU
class RepVGGBlock : public Block {
 public:
  explicit RepVGGBlock(const BlockConfig& b) {
    conv3x3_ = register_module("conv_3x3", conv(b, 3));
    bn3x3_ = register_module("bn_3x3", nn::BatchNorm2d(b.outChannels));
    conv1x1_ = register_module("conv_1x1", conv(b, 1));
    bn1x1_ = register_module("bn_1x1", nn::BatchNorm2d(b.outChannels));
    if (b.identity()) bnIdentity_ = register_module("bn_identity", nn::BatchNorm2d(b.outChannels));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor out = batchNorm(bn3x3_, conv3x3_->forward(x)) + batchNorm(bn1x1_, conv1x1_->forward(x));
    if (bnIdentity_) out = out + batchNorm(bnIdentity_, x);
    return out.relu_();
  }

 private:
  nn::Conv2d conv3x3_{nullptr}, conv1x1_{nullptr};
  nn::BatchNorm2d bn3x3_{nullptr}, bn1x1_{nullptr}, bnIdentity_{nullptr};
};

// conv3x3 with bias -> ReLU: a folded repvgg block (official name rbr_reparam).
class DeployBlock : public Block {
 public:
  explicit DeployBlock(const BlockConfig& b) {
    conv_ = register_module("rbr_reparam", nn::Conv2d(nn::Conv2dOptions(b.inChannels, b.outChannels, 3).stride(b.stride).padding(1).bias(true)));
  }
  at::Tensor forward(const at::Tensor& x) override { return conv_->forward(x).relu_(); }
  c10::optional<PlainLayer> plain() const override {
    return PlainLayer{"rbr_reparam.weight", conv_->weight, conv_->bias, nullptr, conv_->options.stride()->at(0)};
  }

 private:
  nn::Conv2d conv_{nullptr};
};

std::shared_ptr<Block> makeBlock(BlockMode mode, const BlockConfig& b) {
  switch (mode) {
    case BlockMode::Target: return std::make_shared<TargetBlock>(b);
    case BlockMode::HS: return std::make_shared<LinearAddBlock>(b, false);
    case BlockMode::CSLA: return std::make_shared<LinearAddBlock>(b, true);
    case BlockMode::RepVGG: return std::make_shared<RepVGGBlock>(b);
    case BlockMode::Deploy: return std::make_shared<DeployBlock>(b);
  }
  TORCH_CHECK(false, "unreachable block mode");
}

}  // namespace

Network::Network(const NetworkConfig& config) : config_(config) {
  TORCH_CHECK(!config.blocks.empty(), "a network needs at least one block");
  for (const auto& b : config.blocks) {
    blocks_.push_back(makeBlock(config.mode, b));
    blocks_.back()->batchNormContext = batchNorm_;
  }
  linear_ = nn::Linear(config.blocks.back().outChannels, config.numClasses);
}

at::Tensor Network::forward(const at::Tensor& x) {
  if (quant && quant->mode != QuantState::Mode::Off) return quant->forward(*this, x);
  return floatForward(x);
}

at::Tensor Network::floatForward(const at::Tensor& x) {
  at::Tensor out = x;
  for (auto& b : blocks_) out = b->forward(out);
  return linear_->forward(out.mean({2, 3}));
}

void Network::train(bool on) {
  for (auto& b : blocks_) b->train(on);
  linear_->train(on);
}

bool Network::isTraining() const { return linear_->is_training(); }

NamedTensors Network::namedParameters() const {
  NamedTensors out;
  for (size_t i = 0; i < blocks_.size(); ++i)
    for (const auto& item : blocks_[i]->named_parameters()) out.emplace_back(config_.blocks[i].name + "." + item.key(), item.value());
  for (const auto& item : linear_->named_parameters()) out.emplace_back("linear." + item.key(), item.value());
  return out;
}

NamedTensors Network::namedBuffers() const {
  NamedTensors out;
  for (size_t i = 0; i < blocks_.size(); ++i)
    for (const auto& item : blocks_[i]->named_buffers()) out.emplace_back(config_.blocks[i].name + "." + item.key(), item.value());
  return out;
}

NamedTensors Network::stateDict() const {
  NamedTensors out;
  auto add = [&](const std::string& prefix, const torch::nn::Module& root) {
    for (const auto& item : root.named_modules()) {
      const std::string path = item.key().empty() ? prefix : prefix + "." + item.key();
      for (const auto& p : item.value()->named_parameters(false)) out.emplace_back(path + "." + p.key(), p.value());
      for (const auto& b : item.value()->named_buffers(false)) out.emplace_back(path + "." + b.key(), b.value());
    }
  };
  for (size_t i = 0; i < blocks_.size(); ++i) add(config_.blocks[i].name, *blocks_[i]);
  add("linear", *linear_);
  return out;
}

namespace {
// At most 12 items, then how many there are in all.
std::string listed(const std::vector<std::string>& items) {
  std::string out;
  for (size_t k = 0; k < items.size() && k < 12; ++k) out += (k ? ", " : "") + items[k];
  if (items.size() > 12) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}
}  // namespace

void Network::loadStateDict(const NamedTensors& state) {
  std::map<std::string, const at::Tensor*> given;
  for (const auto& [name, t] : state) given.emplace(name, &t);
  // Check every key and shape first, report all problems at once, and load nothing if any.
  std::vector<std::string> missing, misshaped, unexpected, notTensors;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  std::set<std::string> expected;
  for (const auto& [name, target] : stateDict()) {
    expected.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
    } else if (!it->second->defined()) {
      notTensors.push_back(name);
    } else if (it->second->sizes() != target.sizes()) {
      misshaped.push_back(name + " (" + c10::str(it->second->sizes()) + " for " + c10::str(target.sizes()) + ")");
    } else {
      copies.emplace_back(target, *it->second);
    }
  }
  for (const auto& [name, _] : state)
    if (!expected.count(name)) unexpected.push_back(name);
  std::string problems;
  if (!missing.empty()) problems += "\n  missing: " + listed(missing);
  if (!unexpected.empty()) problems += "\n  unexpected: " + listed(unexpected);
  if (!misshaped.empty()) problems += "\n  wrong shape: " + listed(misshaped);
  if (!notTensors.empty()) problems += "\n  not a Tensor: " + listed(notTensors);
  if (!problems.empty()) throw std::invalid_argument("the state does not fit this network; nothing was loaded" + problems);
  at::NoGradGuard noGrad;
  for (auto& [target, src] : copies) target.copy_(src);
}

std::vector<at::Tensor> Network::trainableParameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [_, p] : namedParameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

void Network::clearGradients() {
  for (auto& [_, p] : namedParameters())
    if (p.grad().defined()) p.mutable_grad().reset();
}

at::Tensor Network::parameter(const std::string& name) const {
  for (const auto& [key, p] : namedParameters())
    if (key == name) return p;
  return at::Tensor();
}

void Network::updateAverage(const Network& source, double decay) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> averages, values;
  const NamedTensors mine = stateDict(), theirs = source.stateDict();
  for (size_t k = 0; k < mine.size(); ++k) {
    if (mine[k].second.is_floating_point()) {
      averages.push_back(mine[k].second);
      values.push_back(theirs[k].second);
    } else {
      mine[k].second.copy_(theirs[k].second);
    }
  }
  // Two fused passes over all tensors instead of two kernel launches per tensor.
  at::_foreach_mul_(averages, decay);
  at::_foreach_add_(averages, values, 1.0 - decay);
}

std::string Network::averageMismatch(const Network& source) const {
  if (&source == this) return "is the trained network itself";
  const NamedTensors mine = stateDict(), theirs = source.stateDict();
  bool same = mine.size() == theirs.size();
  for (size_t k = 0; same && k < mine.size(); ++k) same = mine[k].first == theirs[k].first && mine[k].second.sizes() == theirs[k].second.sizes();
  if (!same) return "has another architecture than the trained network";
  if (source.device() != device() || source.dtype() != dtype())
    return "is on " + device().str() + " in " + std::string(c10::toString(dtype())) + ", the trained network on " + source.device().str() + " in " +
           c10::toString(source.dtype());
  return "";
}

void Network::to(at::Device device, at::ScalarType dtype) {
  // Module::to(device, dtype) would also convert num_batches_tracked (int64): convert by hand.
  at::NoGradGuard noGrad;
  auto convert = [&](at::Tensor t) { t.set_data(t.is_floating_point() ? t.to(device, dtype) : t.to(device)); };
  for (auto& [_, p] : namedParameters()) convert(p);
  for (auto& [_, b] : namedBuffers()) convert(b);
}

void Network::setMemoryFormat(at::MemoryFormat format) {
  at::NoGradGuard noGrad;
  memoryFormat_ = format;
  for (auto& [_, p] : namedParameters())
    if (p.dim() == 4) p.set_data(p.contiguous(format));
}

std::vector<PlainLayer> Network::plainLayers() const {
  std::vector<PlainLayer> out;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    auto layer = blocks_[i]->plain();
    TORCH_CHECK(layer, "only plain networks (target or deploy blocks) quantize; fold this ", (config_.mode == BlockMode::RepVGG ? "repvgg" : "multi-branch"),
                " network into deploy blocks first");
    layer->weightKey = config_.blocks[i].name + "." + layer->weightKey;
    out.push_back(*layer);
  }
  return out;
}

at::Device Network::device() const { return linear_->weight.device(); }

at::ScalarType Network::dtype() const { return linear_->weight.scalar_type(); }

}  // namespace repopt

namespace repopt {

void Network::setBatchNormMode(BatchNormMode mode, std::function<at::Tensor(torch::nn::BatchNorm2dImpl&, const at::Tensor&)> sync) {
  TORCH_CHECK(mode != BatchNormMode::Sync || sync, "SyncBatchNorm needs a process group");
  batchNorm_->mode = mode;
  batchNorm_->sync = std::move(sync);
}

}  // namespace repopt

namespace repopt {

at::Tensor Network::prepareInput(const at::Tensor& x) const {
  at::Tensor out = x.to(device());
  return memoryFormat_ == at::MemoryFormat::ChannelsLast ? out.contiguous(at::MemoryFormat::ChannelsLast) : out;
}

}  // namespace repopt

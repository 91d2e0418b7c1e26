#include "dataset.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorIndexing.h>

namespace repopt {

DeviceDataset::DeviceDataset(at::Tensor images, at::Tensor labels, at::Tensor mean, at::Tensor std, at::Device device, uint64_t augmentSeed)
    : generator_(at::detail::createCPUGenerator(augmentSeed)) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "dataset: images must be uint8 [N, C, H, W], got ", images.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images.size(0), "dataset: ", images.size(0), " images but ", labels.size(0), " labels");
  TORCH_CHECK(mean.numel() == images.size(1) && std.numel() == images.size(1), "dataset: mean and std need one value per channel (",
              images.size(1), ")");
  TORCH_CHECK(at::all(std > 0).item<bool>(), "dataset: std must be positive");
  images_ = images.to(device).contiguous();
  labels_ = labels.to(device, at::kLong);
  mean_ = mean.to(device, at::kFloat).view({1, -1, 1, 1});
  std_ = std.to(device, at::kFloat).view({1, -1, 1, 1});
}

at::Tensor DeviceDataset::permutation(uint64_t seed, int64_t epoch) const {
  // splitmix64 of (seed, epoch): independent, reproducible orders per epoch.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * uint64_t(epoch + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  at::Generator g = at::detail::createCPUGenerator(z);
  return at::randperm(count(), g, at::TensorOptions().dtype(at::kLong)).to(device());
}

std::pair<at::Tensor, at::Tensor> DeviceDataset::batch(const at::Tensor& indices, const Augmentation& augmentation, at::ScalarType dtype) {
  at::Tensor idx = indices.to(device(), at::kLong);
  at::Tensor x = images_.index_select(0, idx);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (augmentation.pad > 0 || augmentation.flip) {
    // One gather does crop and flip: row r of sample b reads padded row oy[b] + r, column c reads
    // ox[b] + c (or ox[b] + w - 1 - c when flipped).
    const int64_t p = augmentation.pad;
    auto cpuLong = at::TensorOptions().dtype(at::kLong);
    at::Tensor oy = p > 0 ? at::randint(0, 2 * p + 1, {n}, generator_, cpuLong) : at::zeros({n}, cpuLong);
    at::Tensor ox = p > 0 ? at::randint(0, 2 * p + 1, {n}, generator_, cpuLong) : at::zeros({n}, cpuLong);
    at::Tensor flip = augmentation.flip ? at::randint(0, 2, {n}, generator_, cpuLong).to(at::kBool) : at::zeros({n}, cpuLong.dtype(at::kBool));
    auto dev = at::TensorOptions().dtype(at::kLong).device(device());
    at::Tensor r = at::arange(h, dev), c = at::arange(w, dev);
    at::Tensor rows = oy.to(device()).view({n, 1}) + r.view({1, h});
    at::Tensor cols = ox.to(device()).view({n, 1}) + at::where(flip.to(device()).view({n, 1}), (w - 1 - c).view({1, w}), c.view({1, w}));
    at::Tensor padded = p > 0 ? at::constant_pad_nd(x, {p, p, p, p}, 0) : x;
    at::Tensor b = at::arange(n, dev).view({n, 1, 1});
    // padded[b, :, rows, cols] -> [n, h, w, C]
    x = padded.permute({0, 2, 3, 1}).index({b, rows.view({n, h, 1}), cols.view({n, 1, w})}).permute({0, 3, 1, 2});
  }
  at::Tensor out = x.to(at::kFloat).div_(255).sub_(mean_).div_(std_).to(dtype).contiguous();
  return {out, labels_.index_select(0, idx)};
}

at::Tensor DeviceDataset::rngState() const { return generator_.get_state(); }

void DeviceDataset::setRngState(const at::Tensor& state) { generator_.set_state(state); }

}  // namespace repopt

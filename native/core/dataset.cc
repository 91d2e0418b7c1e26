#include "dataset.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorIndexing.h>

#include <cmath>

namespace repopt {

DeviceDataset::DeviceDataset(at::Tensor images, at::Tensor labels, at::Tensor mean, at::Tensor std, at::Device device, uint64_t augmentSeed)
    : generator_(at::detail::createCPUGenerator(augmentSeed)) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "dataset: images must be uint8 [N, C, H, W], got ", images.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images.size(0), "dataset: ", images.size(0), " images but ", labels.size(0), " labels");
  TORCH_CHECK(mean.numel() == images.size(1) && std.numel() == images.size(1), "dataset: mean and std need one value per channel (", images.size(1), ")");
  TORCH_CHECK(at::all(std > 0).item<bool>(), "dataset: std must be positive");
  // On CUDA through pinned host memory, so that the copies are asynchronous DMA transfers.
  const bool pinned = device.is_cuda() && !images.is_cuda();
  images_ = (pinned ? images.contiguous().pin_memory() : images).to(device, /*non_blocking=*/pinned).contiguous();
  labels_ = (pinned ? labels.to(at::kLong).pin_memory() : labels).to(device, at::kLong, /*non_blocking=*/pinned);
  mean_ = mean.to(device, at::kFloat).view({1, -1, 1, 1});
  std_ = std.to(device, at::kFloat).view({1, -1, 1, 1});
}

at::Tensor samplePermutation(int64_t count, uint64_t seed, int64_t epoch) {
  // splitmix64 of (seed, epoch): independent, reproducible orders per epoch.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * uint64_t(epoch + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  at::Generator g = at::detail::createCPUGenerator(z);
  return at::randperm(count, g, at::TensorOptions().dtype(at::kLong));
}

at::Tensor DeviceDataset::permutation(uint64_t seed, int64_t epoch) const { return samplePermutation(count(), seed, epoch).to(device()); }

std::pair<at::Tensor, at::Tensor> DeviceDataset::batch(const at::Tensor& indices, const Augmentation& augmentation, at::ScalarType dtype) {
  at::Tensor idx = indices.to(device(), at::kLong);
  at::Tensor x = images_.index_select(0, idx);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (augmentation.pad > 0 || (augmentation.flip && !augmentation.resizedCrop)) {
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
  at::Tensor out = x.to(at::kFloat).div_(255).sub_(mean_).div_(std_);
  if (augmentation.resizedCrop) out = resizedCrop(out, augmentation);
  return {out.to(dtype).contiguous(), labels_.index_select(0, idx)};
}

at::Tensor DeviceDataset::resizedCrop(const at::Tensor& x, const Augmentation& a) {
  // Boxes drawn as torchvision does (10 tries, else the centre crop of the nearest allowed ratio),
  // then one batched affine resample: output pixel (u, v) in [-1, 1]^2 reads the box at
  // (cx + u * w / W, cy + v * h / H), mirrored in u for flipped samples.
  const int64_t n = x.size(0), height = x.size(2), width = x.size(3);
  const double area = double(height * width);
  at::Tensor theta = at::zeros({n, 2, 3}, at::TensorOptions().dtype(at::kFloat));
  auto th = theta.accessor<float, 3>();
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * at::rand({1}, generator_).item<double>(); };
  for (int64_t b = 0; b < n; ++b) {
    double w = width, h = height, top = 0, left = 0;
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const double target = area * uniform(a.scaleMin, a.scaleMax);
      const double ratio = std::exp(uniform(std::log(a.ratioMin), std::log(a.ratioMax)));
      const double cw = std::round(std::sqrt(target * ratio)), ch = std::round(std::sqrt(target / ratio));
      if (cw > 0 && ch > 0 && cw <= width && ch <= height) {
        w = cw, h = ch;
        top = std::floor(uniform(0, height - h + 1));
        left = std::floor(uniform(0, width - w + 1));
        found = true;
      }
    }
    if (!found) {
      const double ratio = double(width) / double(height);
      if (ratio < a.ratioMin)
        w = width, h = std::round(width / a.ratioMin);
      else if (ratio > a.ratioMax)
        h = height, w = std::round(height * a.ratioMax);
      top = std::floor((height - h) / 2), left = std::floor((width - w) / 2);
    }
    const double mirror = a.flip && uniform(0, 1) < 0.5 ? -1 : 1;
    th[b][0][0] = float(mirror * w / width);
    th[b][0][2] = float((left + w / 2) / width * 2 - 1);
    th[b][1][1] = float(h / height);
    th[b][1][2] = float((top + h / 2) / height * 2 - 1);
  }
  at::Tensor grid = at::affine_grid_generator(theta.to(x.device()), {n, x.size(1), height, width}, /*align_corners=*/false);
  return at::grid_sampler(x, grid, /*bilinear*/ 0, /*zeros*/ 0, /*align_corners=*/false);
}

at::Tensor DeviceDataset::rngState() const { return generator_.get_state(); }

void DeviceDataset::setRngState(const at::Tensor& state) { generator_.set_state(state); }

}  // namespace repopt

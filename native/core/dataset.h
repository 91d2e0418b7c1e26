#pragma once
// An image data set held on the training device as uint8 (uploaded once), with seeded shuffling and
// the official recipes' augmentations (random crop with zero padding, horizontal flip) done there too,
// so the data path never waits on the host.
#include <ATen/ATen.h>

#include <cstdint>
#include <utility>

namespace repopt {

struct Augmentation {
  int64_t pad = 0;    // random crop of the original size out of the zero-padded image
  bool flip = false;  // horizontal flip with probability 1/2
  // Random-resized crop (torchvision's RandomResizedCrop): a box of area fraction in [scaleMin,
  // scaleMax] and aspect ratio in [ratioMin, ratioMax], resized (bilinear) to the image size.
  bool resizedCrop = false;
  double scaleMin = 0.08, scaleMax = 1.0, ratioMin = 3.0 / 4.0, ratioMax = 4.0 / 3.0;
};

// The sample order of one epoch of `count` samples: a function of (count, seed, epoch) only, on the CPU.
at::Tensor samplePermutation(int64_t count, uint64_t seed, int64_t epoch);

class DeviceDataset {
 public:
  // images: uint8 [N, C, H, W]; labels: int64 [N]; mean / std: per channel, for (x / 255 - mean) / std.
  DeviceDataset(at::Tensor images, at::Tensor labels, at::Tensor mean, at::Tensor std, at::Device device, uint64_t augmentSeed);

  int64_t count() const { return images_.size(0); }
  // Asynchronous steps reading this dataset now (the JS layer refuses other calls meanwhile).
  int asyncUsers = 0;
  at::IntArrayRef imageShape() const { return images_.sizes().slice(1); }
  at::Device device() const { return images_.device(); }
  // The sample order of one epoch: a function of (seed, epoch) only.
  at::Tensor permutation(uint64_t seed, int64_t epoch) const;
  // Images (normalised, dtype) and labels of the given sample indices, augmented as asked.
  std::pair<at::Tensor, at::Tensor> batch(const at::Tensor& indices, const Augmentation& augmentation, at::ScalarType dtype);
  // The augmentation generator's state (for exact resume).
  at::Tensor rngState() const;
  void setRngState(const at::Tensor& state);

 private:
  at::Tensor resizedCrop(const at::Tensor& normalised, const Augmentation& augmentation);
  at::Tensor images_, labels_, mean_, std_;
  at::Generator generator_;
};

}  // namespace repopt

#pragma once
// The per-sample image pipeline of the streaming loader: torchvision's training transform
// (RandomResizedCrop, horizontal flip, optionally RandAugment) or evaluation transform (Resize of the
// shorter side, CenterCrop), applied to a decoded image and written as CHW uint8. Every random draw
// comes from the sample's own SampleRng(seed, epoch, index).
#include <cstdint>
#include <memory>
#include <string>

#include "core/image_decode.h"
#include "core/image_resample.h"
#include "core/randaugment.h"
#include "core/sample_rng.h"

namespace repopt {

struct ImageTransformSpec {
  bool train = false;
  // Output images are size x size.
  int size = 224;
  // Evaluation: the shorter side is resized to floor(size / cropFraction), then the centre is cropped.
  double cropFraction = 0.875;
  // Training: RandomResizedCrop's area fraction and aspect ratio ranges, then a flip with p 0.5.
  double scale[2] = {0.08, 1.0};
  double ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
  bool flip = true;
  // JPEG: decode at a DCT scale M/8 (M = 1, 2, 4 or 8) that still gives the crop at least `size`
  // pixels, and (upright images) only the crop's rows and columns.
  bool shrinkOnLoad = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
  // Training: applied to the resized, flipped crop when set.
  std::shared_ptr<const RandAugmentSpec> randAugment;
};

// A training crop in image pixels, and whether the result is mirrored.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool flip = false;
};

// torchvision 0.14's RandomResizedCrop.get_params on a width x height image, then the flip draw.
CropBox sampleCropBox(int width, int height, const ImageTransformSpec& spec, SampleRng& rng);

// The crop box of sample `index` (training spec).
CropBox cropBoxOf(int width, int height, int64_t index, const ImageTransformSpec& spec);

// Sample `index` from its file, into chw (3 * size * size bytes). Throws ImageError.
void loadSample(const std::string& path, int64_t index, const ImageTransformSpec& spec, uint8_t* chw);

// Sample `index` from decoded pixels (upright HWC RGB), into chw.
void transformPixels(const RgbView& image, int64_t index, const ImageTransformSpec& spec, uint8_t* chw);

}  // namespace repopt

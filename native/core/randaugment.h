#pragma once
// RandAugment (Cubuk et al. 2019) as timm's rand_augment_transform applies it, on an HWC uint8 RGB
// image in place, with Pillow's pixel semantics (ImageOps, ImageEnhance, Image.transform AFFINE), so
// that a recipe written for timm trains on the same augmented images. Plain uint8 code, no torch.
#include <cstdint>
#include <string>
#include <vector>

#include "core/sample_rng.h"

namespace repopt {

// timm's op names (_RAND_TRANSFORMS, _RAND_INCREASING_TRANSFORMS). The *Increasing ops map a larger
// magnitude to a stronger change where the plain ones do not (Posterize, Solarize, and the enhance
// ops, whose plain form draws a factor in [0.1, 1.9] regardless of sign).
enum class RandAugmentOp : uint8_t {
  AutoContrast,
  Equalize,
  Invert,
  Rotate,
  Posterize,
  Solarize,
  SolarizeAdd,
  Color,
  Contrast,
  Brightness,
  Sharpness,
  ShearX,
  ShearY,
  TranslateXRel,
  TranslateYRel,
  PosterizeIncreasing,
  SolarizeIncreasing,
  ColorIncreasing,
  ContrastIncreasing,
  BrightnessIncreasing,
  SharpnessIncreasing,
  // The official RepOptimizers raug15 policy's extra op (its cutout.py): a square of side
  // max(2, 4 * magnitude) pixels around a uniform random centre, clipped to the image, painted (125, 122, 113).
  Cutout,
};

// The op of a timm name ("Rotate", "SolarizeIncreasing"); throws std::invalid_argument on others.
RandAugmentOp randAugmentOpFromName(const std::string& name);

// Resampling of the affine ops (Rotate, Shear*, Translate*): Pillow's filters; Random draws bilinear or
// bicubic per application, as timm does when the transform's interpolation is 'random'.
enum class RandAugmentInterpolation : uint8_t { Bilinear, Bicubic, Random };

// How an application draws its magnitude: timm's gauss(magnitude, magnitudeStd) (fixed when the std is 0),
// timm's uniform in [0, magnitude] (its mstd > 100), or the raug15 policy's integer uniform in [0, magnitude).
enum class RandAugmentMagnitudeDraw : uint8_t { Gauss, Uniform, UniformInteger };

struct RandAugmentSpec {
  // Ops applied per image, each drawn uniformly with replacement from `ops`.
  int numLayers = 2;
  // Each drawn op is applied with this probability.
  double prob = 0.5;
  // Magnitude on timm's scale (10 = the ops' nominal maximum), drawn per application as magnitudeDraw
  // says, then clipped to [0, magnitudeMax].
  double magnitude = 9;
  double magnitudeStd = 0;
  double magnitudeMax = 10;
  RandAugmentMagnitudeDraw magnitudeDraw = RandAugmentMagnitudeDraw::Gauss;
  std::vector<RandAugmentOp> ops;
  // Pixels the affine ops bring in from outside the image (timm: hparams img_mean).
  uint8_t fill[3] = {124, 116, 104};
  RandAugmentInterpolation interpolation = RandAugmentInterpolation::Bilinear;
  // Largest value SolarizeAdd adds: timm caps it at 128 (reached above magnitude 11.6), the raug15
  // policy's copy of the op does not (255: no cap).
  int solarizeAddMax = 128;
};

// Applies one op at a given magnitude; `negate` flips the sign of signed ops (rotate, shear, translate,
// and the enhance factor of the *Increasing ops), which randAugment draws at random. Uses spec's fill,
// interpolation and solarizeAddMax; rng only for Cutout's centre and a Random interpolation.
void randAugmentApply(uint8_t* hwc, int height, int width, RandAugmentOp op, double magnitude, bool negate, const RandAugmentSpec& spec, SampleRng& rng);

// The full RandAugment of one image; every random draw comes from `rng`. The image is HWC RGB, row-major,
// height * width * 3 bytes, modified in place.
void randAugment(uint8_t* hwc, int height, int width, const RandAugmentSpec& spec, SampleRng& rng);

}  // namespace repopt

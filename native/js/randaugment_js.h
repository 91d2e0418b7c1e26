#pragma once
// RandAugment's JS side: the spec object lib/data/randaugment.ts normalises, read into the C++ struct
// (the image loader's binding calls this), and test functions applying one op or the whole policy.
#include <napi.h>

#include <string>

#include "core/randaugment.h"

namespace repopt {

// Reads a normalised RandAugmentSpec object; errors name `fn` and `path` ("<fn>: <path>.ops ...").
RandAugmentSpec randAugmentSpecFrom(const Napi::Object& obj, const std::string& fn = "randAugment", const std::string& path = "spec");

// randAugmentOp(hwc, height, width, op, magnitude, options?) and randAugment(hwc, height, width, spec,
// seed, epoch, index): each returns the augmented copy of an HWC uint8 RGB image.
void InitRandAugment(Napi::Env env, Napi::Object exports);

}  // namespace repopt

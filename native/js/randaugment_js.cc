#include "randaugment_js.h"

#include <cstring>
#include <stdexcept>

#include "errors.h"

namespace repopt {

namespace {

RandAugmentInterpolation interpolationFrom(const Fields& f, const char* key, bool allowRandom) {
  const std::string name = f.string(key, "bilinear");
  if (name == "bilinear") return RandAugmentInterpolation::Bilinear;
  if (name == "bicubic") return RandAugmentInterpolation::Bicubic;
  if (name == "random" && allowRandom) return RandAugmentInterpolation::Random;
  f.fail(key, std::string("must be 'bilinear', 'bicubic'") + (allowRandom ? " or 'random'" : "") + ", got '" + name + "'", true);
}

void readFill(const Fields& f, uint8_t fill[3]) {
  if (!f.has("fill")) return;
  const Napi::Array a = f.array("fill");
  bool ok = a.Length() == 3;
  for (uint32_t c = 0; ok && c < 3; c++) {
    const Napi::Value v = a.Get(c);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    ok = d >= 0 && d <= 255 && d == double(int(d));
    if (ok) fill[c] = uint8_t(d);
  }
  if (!ok) f.fail("fill", "must be 3 integers in [0, 255]", true);
}

struct Hwc {
  Napi::Uint8Array data;
  int height, width;
};

Hwc readHwc(const Args& args) {
  Hwc im{args.uint8Array(0, "hwc"), int(args.integer(1, "height", 1, 1 << 15)), int(args.integer(2, "width", 1, 1 << 15))};
  if (im.data.ElementLength() != size_t(im.height) * size_t(im.width) * 3) {
    args.rangeError("hwc", "has " + std::to_string(im.data.ElementLength()) +
                               " bytes, not height * width * 3 = " + std::to_string(size_t(im.height) * size_t(im.width) * 3));
  }
  return im;
}

Napi::Uint8Array copyOf(Napi::Env env, const Hwc& im) {
  auto out = Napi::Uint8Array::New(env, im.data.ElementLength());
  std::memcpy(out.Data(), im.data.Data(), im.data.ElementLength());
  return out;
}

Napi::Value RandAugmentOpFn(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "randAugmentOp");
    args.expectCount(5, 6);
    const Hwc im = readHwc(args);
    const std::string name = args.string(3, "op");
    const RandAugmentOp op = [&] {
      try {
        return randAugmentOpFromName(name);
      } catch (const std::invalid_argument&) {
        args.rangeError("op", "is not a RandAugment op: '" + name + "'");
      }
    }();
    const double magnitude = args.number(4, "magnitude");
    if (!(magnitude >= 0 && magnitude <= 100)) args.rangeError("magnitude", "must be in [0, 100]");
    RandAugmentSpec spec;
    bool negate = false;
    uint64_t seed = 0;
    if (args.has(5)) {
      const Fields f(info.Env(), args.object(5, "options"), "randAugmentOp", "options");
      const double sign = f.number("sign", 1);
      if (sign != 1 && sign != -1) f.fail("sign", "must be 1 or -1", true);
      negate = sign < 0;
      spec.interpolation = interpolationFrom(f, "interpolation", false);
      readFill(f, spec.fill);
      spec.solarizeAddMax = int(f.has("solarizeAddMax") ? f.integer("solarizeAddMax", 0, 255) : spec.solarizeAddMax);
      seed = uint64_t(f.has("seed") ? f.integer("seed", 0, int64_t(1) << 53) : 0);
    }
    Napi::Uint8Array out = copyOf(info.Env(), im);
    SampleRng rng(seed, 0, 0);
    randAugmentApply(out.Data(), im.height, im.width, op, magnitude, negate, spec, rng);
    return out;
  });
}

Napi::Value RandAugmentFn(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "randAugment");
    args.expectCount(7, 7);
    const Hwc im = readHwc(args);
    const RandAugmentSpec spec = randAugmentSpecFrom(args.object(3, "spec"), "randAugment", "spec");
    const int64_t seed = args.integer(4, "seed", 0, int64_t(1) << 53);
    const int64_t epoch = args.integer(5, "epoch", 0, int64_t(1) << 53);
    const int64_t index = args.integer(6, "index", 0, int64_t(1) << 53);
    Napi::Uint8Array out = copyOf(info.Env(), im);
    SampleRng rng(uint64_t(seed), epoch, index);
    randAugment(out.Data(), im.height, im.width, spec, rng);
    return out;
  });
}

}  // namespace

RandAugmentSpec randAugmentSpecFrom(const Napi::Object& obj, const std::string& fn, const std::string& path) {
  const Fields f(obj.Env(), obj, fn, path);
  RandAugmentSpec spec;
  for (const std::string& name : f.strings("ops")) {
    try {
      spec.ops.push_back(randAugmentOpFromName(name));
    } catch (const std::invalid_argument&) {
      f.fail("ops", "has an unknown op '" + name + "'", true);
    }
  }
  if (spec.ops.empty()) f.fail("ops", "must not be empty", true);
  spec.numLayers = int(f.integer("numLayers", 0, 64));
  spec.prob = f.number("prob");
  if (!(spec.prob >= 0 && spec.prob <= 1)) f.fail("prob", "must be in [0, 1]", true);
  spec.magnitude = f.number("magnitude");
  spec.magnitudeStd = f.number("magnitudeStd");
  spec.magnitudeMax = f.number("magnitudeMax");
  if (!(spec.magnitude >= 0 && spec.magnitude <= 100)) f.fail("magnitude", "must be in [0, 100]", true);
  if (!(spec.magnitudeStd >= 0)) f.fail("magnitudeStd", "must be >= 0", true);
  if (!(spec.magnitudeMax >= 0 && spec.magnitudeMax <= 100)) f.fail("magnitudeMax", "must be in [0, 100]", true);
  const std::string draw = f.string("magnitudeDraw");
  if (draw == "gauss") {
    spec.magnitudeDraw = RandAugmentMagnitudeDraw::Gauss;
  } else if (draw == "uniform") {
    spec.magnitudeDraw = RandAugmentMagnitudeDraw::Uniform;
  } else if (draw == "uniformInteger") {
    spec.magnitudeDraw = RandAugmentMagnitudeDraw::UniformInteger;
  } else {
    f.fail("magnitudeDraw", "must be 'gauss', 'uniform' or 'uniformInteger', got '" + draw + "'", true);
  }
  readFill(f, spec.fill);
  spec.interpolation = interpolationFrom(f, "interpolation", true);
  spec.solarizeAddMax = int(f.integer("solarizeAddMax", 0, 255));
  return spec;
}

void InitRandAugment(Napi::Env env, Napi::Object exports) {
  exports.Set("randAugmentOp", Napi::Function::New<RandAugmentOpFn>(env, "randAugmentOp"));
  exports.Set("randAugment", Napi::Function::New<RandAugmentFn>(env, "randAugment"));
}

}  // namespace repopt

#include "core/randaugment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace repopt {

namespace {

constexpr struct {
  const char* name;
  RandAugmentOp op;
} kOpNames[] = {
    {"AutoContrast", RandAugmentOp::AutoContrast},
    {"Equalize", RandAugmentOp::Equalize},
    {"Invert", RandAugmentOp::Invert},
    {"Rotate", RandAugmentOp::Rotate},
    {"Posterize", RandAugmentOp::Posterize},
    {"Solarize", RandAugmentOp::Solarize},
    {"SolarizeAdd", RandAugmentOp::SolarizeAdd},
    {"Color", RandAugmentOp::Color},
    {"Contrast", RandAugmentOp::Contrast},
    {"Brightness", RandAugmentOp::Brightness},
    {"Sharpness", RandAugmentOp::Sharpness},
    {"ShearX", RandAugmentOp::ShearX},
    {"ShearY", RandAugmentOp::ShearY},
    {"TranslateXRel", RandAugmentOp::TranslateXRel},
    {"TranslateYRel", RandAugmentOp::TranslateYRel},
    {"PosterizeIncreasing", RandAugmentOp::PosterizeIncreasing},
    {"SolarizeIncreasing", RandAugmentOp::SolarizeIncreasing},
    {"ColorIncreasing", RandAugmentOp::ColorIncreasing},
    {"ContrastIncreasing", RandAugmentOp::ContrastIncreasing},
    {"BrightnessIncreasing", RandAugmentOp::BrightnessIncreasing},
    {"SharpnessIncreasing", RandAugmentOp::SharpnessIncreasing},
    {"Cutout", RandAugmentOp::Cutout},
};

constexpr uint8_t kCutoutFill[3] = {125, 122, 113};

struct Image {
  uint8_t* px;
  int height, width;
  size_t count() const { return size_t(height) * size_t(width); }
};

// ---- Point ops: one 256-entry table per channel (Pillow's Image.point) ----

void applyLut(Image im, const uint8_t lut[3][256]) {
  uint8_t* p = im.px;
  for (size_t i = 0; i < im.count(); i++, p += 3) {
    p[0] = lut[0][p[0]];
    p[1] = lut[1][p[1]];
    p[2] = lut[2][p[2]];
  }
}

template <class F>
void applySameLut(Image im, F f) {
  uint8_t lut[3][256];
  for (int i = 0; i < 256; i++) lut[0][i] = lut[1][i] = lut[2][i] = uint8_t(std::clamp(f(i), 0, 255));
  applyLut(im, lut);
}

void histograms(Image im, int64_t h[3][256]) {
  std::memset(h, 0, sizeof(int64_t) * 3 * 256);
  const uint8_t* p = im.px;
  for (size_t i = 0; i < im.count(); i++, p += 3) {
    h[0][p[0]]++;
    h[1][p[1]]++;
    h[2][p[2]]++;
  }
}

// ImageOps.autocontrast (no cutoff): each channel's [lo, hi] stretched to [0, 255], truncating.
void autoContrast(Image im) {
  int64_t h[3][256];
  histograms(im, h);
  uint8_t lut[3][256];
  for (int c = 0; c < 3; c++) {
    int lo = 0, hi = 255;
    while (lo < 255 && !h[c][lo]) lo++;
    while (hi > 0 && !h[c][hi]) hi--;
    if (hi <= lo) {
      for (int i = 0; i < 256; i++) lut[c][i] = uint8_t(i);
      continue;
    }
    const double scale = 255.0 / (hi - lo), offset = -lo * scale;
    for (int i = 0; i < 256; i++) lut[c][i] = uint8_t(std::clamp(int(i * scale + offset), 0, 255));
  }
  applyLut(im, lut);
}

// ImageOps.equalize: the cumulative histogram in steps of (pixels not in the top bin) / 255.
void equalize(Image im) {
  int64_t h[3][256];
  histograms(im, h);
  uint8_t lut[3][256];
  for (int c = 0; c < 3; c++) {
    int64_t total = 0, last = 0;
    int nonzero = 0;
    for (int i = 0; i < 256; i++)
      if (h[c][i]) total += h[c][i], last = h[c][i], nonzero++;
    const int64_t step = (total - last) / 255;
    if (nonzero <= 1 || step == 0) {
      for (int i = 0; i < 256; i++) lut[c][i] = uint8_t(i);
      continue;
    }
    int64_t n = step / 2;
    for (int i = 0; i < 256; i++) {
      lut[c][i] = uint8_t(std::min<int64_t>(n / step, 255));
      n += h[c][i];
    }
  }
  applyLut(im, lut);
}

void posterize(Image im, int bits) {
  if (bits >= 8) return;
  const int mask = bits <= 0 ? 0 : ~((1 << (8 - bits)) - 1);
  applySameLut(im, [&](int i) { return i & mask; });
}

// ---- Enhance ops: Image.blend(degenerate, image, factor) with Pillow's float arithmetic ----

void blend(Image im, const uint8_t* degenerate, double factorIn) {
  const float alpha = float(factorIn);
  if (alpha == 1.0f) return;
  const size_t n = im.count() * 3;
  if (alpha == 0.0f) {
    std::memcpy(im.px, degenerate, n);
    return;
  }
  if (alpha >= 0 && alpha <= 1.0f) {
    for (size_t i = 0; i < n; i++) im.px[i] = uint8_t(int(degenerate[i]) + alpha * (int(im.px[i]) - int(degenerate[i])));
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const float t = float(int(degenerate[i]) + alpha * (int(im.px[i]) - int(degenerate[i])));
    im.px[i] = t <= 0.0f ? 0 : t >= 255.0f ? 255 : uint8_t(t);
  }
}

// Pillow's RGB -> L (ITU-R 601-2 luma in 16-bit fixed point).
inline int luma(const uint8_t* p) { return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16; }

void color(Image im, double factor) {
  std::vector<uint8_t> gray(im.count() * 3);
  for (size_t i = 0; i < im.count(); i++) gray[3 * i] = gray[3 * i + 1] = gray[3 * i + 2] = uint8_t(luma(im.px + 3 * i));
  blend(im, gray.data(), factor);
}

void contrast(Image im, double factor) {
  int64_t sum = 0;
  for (size_t i = 0; i < im.count(); i++) sum += luma(im.px + 3 * i);
  const int mean = int(double(sum) / double(im.count()) + 0.5);
  std::vector<uint8_t> flat(im.count() * 3, uint8_t(mean));
  blend(im, flat.data(), factor);
}

void brightness(Image im, double factor) {
  std::vector<uint8_t> black(im.count() * 3, 0);
  blend(im, black.data(), factor);
}

// ImageFilter.SMOOTH (3x3, centre 5, others 1, / 13) in Pillow's float arithmetic; border rows and
// columns are left as they are, and images under 3x3 are not filtered.
void sharpness(Image im, double factor) {
  std::vector<uint8_t> smooth(im.px, im.px + im.count() * 3);
  if (im.height >= 3 && im.width >= 3) {
    const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
    const size_t stride = size_t(im.width) * 3;
    for (int y = 1; y < im.height - 1; y++) {
      const uint8_t* up = im.px + (y - 1) * stride;
      const uint8_t* mid = im.px + y * stride;
      const uint8_t* down = im.px + (y + 1) * stride;
      uint8_t* out = smooth.data() + y * stride;
      for (size_t i = 3; i < stride - 3; i++) {
        float s = 0.5f;
        s += float(down[i - 3]) * k1 + float(down[i]) * k1 + float(down[i + 3]) * k1;
        s += float(mid[i - 3]) * k1 + float(mid[i]) * k5 + float(mid[i + 3]) * k1;
        s += float(up[i - 3]) * k1 + float(up[i]) * k1 + float(up[i + 3]) * k1;
        out[i] = s <= 0.0f ? 0 : s >= 255.0f ? 255 : uint8_t(s);
      }
    }
  }
  blend(im, smooth.data(), factor);
}

// ---- Affine ops: Image.transform(AFFINE) — output pixel centre (x + .5, y + .5) maps to the input point
// (a0 x' + a1 y' + a2, a3 x' + a4 y' + a5); points outside the input keep the fill colour ----

inline int clampIndex(int v, int n) { return v < 0 ? 0 : v < n ? v : n - 1; }

void affine(Image im, const double a[6], const uint8_t fill[3], bool bicubic) {
  const std::vector<uint8_t> src(im.px, im.px + im.count() * 3);
  const int w = im.width, h = im.height;
  const size_t stride = size_t(w) * 3;
  auto row = [&](int y) { return src.data() + size_t(y) * stride; };
  uint8_t* out = im.px;
  for (int y = 0; y < h; y++) {
    for (int x = 0; x < w; x++, out += 3) {
      const double xo = x + 0.5, yo = y + 0.5;
      double xin = a[0] * xo + a[1] * yo + a[2];
      double yin = a[3] * xo + a[4] * yo + a[5];
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) {
        std::memcpy(out, fill, 3);
        continue;
      }
      xin -= 0.5;
      yin -= 0.5;
      const int xi = int(std::floor(xin)), yi = int(std::floor(yin));
      const double dx = xin - xi, dy = yin - yi;
      if (!bicubic) {
        const int x0 = clampIndex(xi, w) * 3, x1 = clampIndex(xi + 1, w) * 3;
        const uint8_t* r0 = row(clampIndex(yi, h));
        const uint8_t* r1 = yi + 1 >= 0 && yi + 1 < h ? row(yi + 1) : nullptr;
        for (int c = 0; c < 3; c++) {
          double v1 = r0[x0 + c] + (int(r0[x1 + c]) - int(r0[x0 + c])) * dx;
          const double v2 = r1 ? r1[x0 + c] + (int(r1[x1 + c]) - int(r1[x0 + c])) * dx : v1;
          v1 = v1 + (v2 - v1) * dy;
          out[c] = uint8_t(v1);
        }
        continue;
      }
      // Pillow's cubic convolution with a = -1, its 4x4 neighbourhood starting one pixel up-left.
      auto cubic = [](double v1, double v2, double v3, double v4, double d) {
        const double p1 = v2, p2 = -v1 + v3, p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
        return p1 + d * (p2 + d * (p3 + d * p4));
      };
      int xs[4];
      for (int k = 0; k < 4; k++) xs[k] = clampIndex(xi - 1 + k, w) * 3;
      // The first row is clamped into the image; a later row outside it repeats the row before.
      const uint8_t* rows[4];
      rows[0] = row(clampIndex(yi - 1, h));
      for (int k = 1; k < 4; k++) rows[k] = yi - 1 + k >= 0 && yi - 1 + k < h ? row(yi - 1 + k) : rows[k - 1];
      for (int c = 0; c < 3; c++) {
        double v[4];
        for (int k = 0; k < 4; k++) v[k] = cubic(rows[k][xs[0] + c], rows[k][xs[1] + c], rows[k][xs[2] + c], rows[k][xs[3] + c], dx);
        const double s = cubic(v[0], v[1], v[2], v[3], dy);
        out[c] = s <= 0.0 ? 0 : s >= 255.0 ? 255 : uint8_t(s);
      }
    }
  }
}

// Python's round(v, 15): correctly rounded through decimal, as glibc's printf/strtod are.
double round15(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15f", v);
  return std::strtod(buf, nullptr);
}

// Image.rotate(degrees) about the centre (w/2, h/2), counter-clockwise, same size.
void rotate(Image im, double degrees, const uint8_t fill[3], bool bicubic) {
  double angle = std::fmod(degrees, 360.0);  // Python's float %: the result takes the divisor's sign
  if (angle != 0.0 && angle < 0.0) angle += 360.0;
  if (angle == 0.0) return;
  const double r = -(angle * (M_PI / 180.0));
  double a[6] = {round15(std::cos(r)), round15(std::sin(r)), 0.0, round15(-std::sin(r)), round15(std::cos(r)), 0.0};
  const double cx = im.width / 2.0, cy = im.height / 2.0;
  a[2] = a[0] * -cx + a[1] * -cy + a[2] + cx;
  a[5] = a[3] * -cx + a[4] * -cy + a[5] + cy;
  affine(im, a, fill, bicubic);
}

void cutout(Image im, int size, SampleRng& rng) {
  const int cx = int(rng.below(im.width)), cy = int(rng.below(im.height));
  const int x0 = std::max(0, cx - size / 2), x1 = std::min(im.width, cx + size / 2);
  const int y0 = std::max(0, cy - size / 2), y1 = std::min(im.height, cy + size / 2);
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) std::memcpy(im.px + (size_t(y) * im.width + x) * 3, kCutoutFill, 3);
}

}  // namespace

RandAugmentOp randAugmentOpFromName(const std::string& name) {
  for (const auto& entry : kOpNames)
    if (name == entry.name) return entry.op;
  throw std::invalid_argument("unknown RandAugment op '" + name + "'");
}

void randAugmentApply(uint8_t* hwc, int height, int width, RandAugmentOp op, double magnitude, bool negate, const RandAugmentSpec& spec, SampleRng& rng) {
  const Image im{hwc, height, width};
  if (im.count() == 0) return;
  // timm's level -> argument functions, on the fraction of the nominal maximum (magnitude 10).
  const double level = magnitude / 10.0;
  const double sign = negate ? -1.0 : 1.0;
  const double enhance = level * 1.8 + 0.1;
  const double enhanceIncreasing = std::max(0.1, 1.0 + sign * (level * 0.9));
  const int posterizeBits = int(level * 4);
  const int solarizeThreshold = std::min(256, int(level * 256));
  auto bicubic = [&] {
    if (spec.interpolation == RandAugmentInterpolation::Random) return rng.coin(0.5);
    return spec.interpolation == RandAugmentInterpolation::Bicubic;
  };
  switch (op) {
    case RandAugmentOp::AutoContrast: return autoContrast(im);
    case RandAugmentOp::Equalize: return equalize(im);
    case RandAugmentOp::Invert: return applySameLut(im, [](int i) { return 255 - i; });
    case RandAugmentOp::Rotate: return rotate(im, sign * (level * 30.0), spec.fill, bicubic());
    case RandAugmentOp::Posterize: return posterize(im, posterizeBits);
    case RandAugmentOp::PosterizeIncreasing: return posterize(im, 4 - posterizeBits);
    case RandAugmentOp::Solarize:
    case RandAugmentOp::SolarizeIncreasing: {
      const int threshold = op == RandAugmentOp::Solarize ? solarizeThreshold : 256 - solarizeThreshold;
      return applySameLut(im, [&](int i) { return i < threshold ? i : 255 - i; });
    }
    case RandAugmentOp::SolarizeAdd: {
      const int add = std::min(spec.solarizeAddMax, int(level * 110));
      return applySameLut(im, [&](int i) { return i < 128 ? std::min(255, i + add) : i; });
    }
    case RandAugmentOp::Color: return color(im, enhance);
    case RandAugmentOp::ColorIncreasing: return color(im, enhanceIncreasing);
    case RandAugmentOp::Contrast: return contrast(im, enhance);
    case RandAugmentOp::ContrastIncreasing: return contrast(im, enhanceIncreasing);
    case RandAugmentOp::Brightness: return brightness(im, enhance);
    case RandAugmentOp::BrightnessIncreasing: return brightness(im, enhanceIncreasing);
    case RandAugmentOp::Sharpness: return sharpness(im, enhance);
    case RandAugmentOp::SharpnessIncreasing: return sharpness(im, enhanceIncreasing);
    case RandAugmentOp::ShearX:
    case RandAugmentOp::ShearY: {
      const double s = sign * (level * 0.3);
      const double a[6] = {1, op == RandAugmentOp::ShearX ? s : 0, 0, op == RandAugmentOp::ShearY ? s : 0, 1, 0};
      return affine(im, a, spec.fill, bicubic());
    }
    case RandAugmentOp::TranslateXRel:
    case RandAugmentOp::TranslateYRel: {
      const double pct = sign * (level * 0.45);
      const bool horizontal = op == RandAugmentOp::TranslateXRel;
      const double a[6] = {1, 0, horizontal ? pct * width : 0, 0, 1, horizontal ? 0 : pct * height};
      return affine(im, a, spec.fill, bicubic());
    }
    case RandAugmentOp::Cutout: return cutout(im, int(std::max(2.0, level * 40.0)), rng);
  }
}

void randAugment(uint8_t* hwc, int height, int width, const RandAugmentSpec& spec, SampleRng& rng) {
  if (spec.ops.empty()) return;
  // Ops with replacement, drawn before any is applied (as timm's np.random.choice).
  std::vector<RandAugmentOp> chosen(size_t(std::max(0, spec.numLayers)));
  for (auto& op : chosen) op = spec.ops[size_t(rng.below(int64_t(spec.ops.size())))];
  for (const RandAugmentOp op : chosen) {
    if (spec.prob < 1.0 && !rng.coin(spec.prob)) continue;
    double magnitude = spec.magnitude;
    if (spec.magnitudeDraw == RandAugmentMagnitudeDraw::UniformInteger) {
      magnitude = double(rng.below(std::max<int64_t>(1, int64_t(spec.magnitude))));
    } else if (spec.magnitudeDraw == RandAugmentMagnitudeDraw::Uniform) {
      magnitude = rng.uniform(0.0, spec.magnitude);
    } else if (spec.magnitudeStd > 0) {
      magnitude = spec.magnitude + spec.magnitudeStd * rng.normal();
    }
    magnitude = std::clamp(magnitude, 0.0, spec.magnitudeMax);
    const bool negate = rng.coin(0.5);
    randAugmentApply(hwc, height, width, op, magnitude, negate, spec, rng);
  }
}

}  // namespace repopt

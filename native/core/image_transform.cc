#include "core/image_transform.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace repopt {

namespace {

// Python's round(): half to even (the default rounding mode of nearbyint).
inline int pyRound(double v) { return int(std::nearbyint(v)); }

// Where a sample's pixels come from, in upright full-resolution image coordinates: `box` is resized to
// outWidth x outHeight and the size x size window at (wx, wy) of that is the output. The resize reads
// only pixels inside `clip` (RandomResizedCrop crops before it resizes).
struct Geometry {
  ResizeBox box;
  int clipX0 = 0, clipY0 = 0, clipX1 = 0, clipY1 = 0;
  int outWidth = 0, outHeight = 0;
  int wx = 0, wy = 0;
  bool flip = false;
};

// torchvision's CenterCrop offset along one axis of length n: centred with Python's round, or the
// negative padding when the crop is larger.
int centreOffset(int n, int size) { return size > n ? -((size - n) / 2) : pyRound((n - size) / 2.0); }

Geometry geometryOf(int width, int height, const ImageTransformSpec& spec, SampleRng& rng) {
  Geometry g;
  if (spec.train) {
    const CropBox c = sampleCropBox(width, height, spec, rng);
    g.box = {double(c.left), double(c.top), double(c.left + c.width), double(c.top + c.height)};
    g.clipX0 = c.left;
    g.clipY0 = c.top;
    g.clipX1 = c.left + c.width;
    g.clipY1 = c.top + c.height;
    g.outWidth = g.outHeight = spec.size;
    g.flip = c.flip;
    return g;
  }
  // Resize(s): the shorter side to s, the longer to int(s * long / short).
  const int s = int(std::floor(spec.size / spec.cropFraction));
  const int shortSide = std::min(width, height), longSide = std::max(width, height);
  const int newLong = int(double(int64_t(s) * longSide) / double(shortSide));
  g.outWidth = width <= height ? s : newLong;
  g.outHeight = width <= height ? newLong : s;
  g.box = {0, 0, double(width), double(height)};
  g.clipX1 = width;
  g.clipY1 = height;
  g.wx = centreOffset(g.outWidth, spec.size);
  g.wy = centreOffset(g.outHeight, spec.size);
  return g;
}

// Resizes from `image`, whose pixel (x, y) is the point ((x + offsetX) / fx, (y + offsetY) / fy) of the
// upright full-resolution image (fx, fy: the decode scale), then flips, augments and writes CHW.
void render(const RgbView& image, double fx, double fy, int offsetX, int offsetY, const Geometry& g, const ImageTransformSpec& spec, SampleRng& rng,
            uint8_t* chw) {
  const int x0 = std::clamp(int(std::floor(g.clipX0 * fx)) - offsetX, 0, image.width);
  const int y0 = std::clamp(int(std::floor(g.clipY0 * fy)) - offsetY, 0, image.height);
  const int x1 = std::clamp(int(std::ceil(g.clipX1 * fx)) - offsetX, x0, image.width);
  const int y1 = std::clamp(int(std::ceil(g.clipY1 * fy)) - offsetY, y0, image.height);
  if (x1 <= x0 || y1 <= y0) throw ImageError(ImageStatus::Failed, "empty image");
  const RgbView view = image.crop(x0, y0, x1 - x0, y1 - y0);
  const ResizeBox box{g.box.x0 * fx - offsetX - x0, g.box.y0 * fy - offsetY - y0, g.box.x1 * fx - offsetX - x0, g.box.y1 * fy - offsetY - y0};
  const int size = spec.size;
  std::vector<uint8_t> hwc(size_t(size) * size_t(size) * 3);
  resizeBilinear(view, box, g.outWidth, g.outHeight, g.wx, g.wy, size, size, hwc.data());
  if (g.flip) {
    for (int y = 0; y < size; ++y) {
      uint8_t* row = hwc.data() + size_t(y) * size_t(size) * 3;
      for (int a = 0, b = size - 1; a < b; ++a, --b) std::swap_ranges(row + a * 3, row + a * 3 + 3, row + b * 3);
    }
  }
  if (spec.train && spec.randAugment) randAugment(hwc.data(), size, size, *spec.randAugment, rng);
  const size_t plane = size_t(size) * size_t(size);
  const uint8_t* p = hwc.data();
  for (size_t i = 0; i < plane; ++i, p += 3) {
    chw[i] = p[0];
    chw[plane + i] = p[1];
    chw[2 * plane + i] = p[2];
  }
}

// The smallest DCT scale M/8 at which the resized box still has at least the output's pixels (no
// upscaling that a full decode would not need). M is 1, 2, 4 or 8: libjpeg-turbo has SIMD IDCTs for
// these only, and decoding at 5/8 to 7/8 costs more than a full decode (measured: 1.3 to 1.7 ms against
// 1.1 ms for a 500 x 375 JPEG).
int shrinkScale(const Geometry& g) {
  const double bw = g.box.x1 - g.box.x0, bh = g.box.y1 - g.box.y0;
  for (int m = 1; m < 8; m *= 2) {
    if (bw * m / 8 >= g.outWidth && bh * m / 8 >= g.outHeight) return m;
  }
  return 8;
}

void loadJpeg(const uint8_t* data, size_t size, int64_t index, const ImageTransformSpec& spec, uint8_t* chw) {
  JpegDecoder decoder(data, size);
  const int orientation = decoder.orientation();
  const bool swap = orientation >= 5;
  const int width = swap ? decoder.height() : decoder.width(), height = swap ? decoder.width() : decoder.height();
  if (width <= 0 || height <= 0) throw ImageError(ImageStatus::Failed, "corrupt JPEG: empty image");
  SampleRng rng(spec.seed, spec.epoch, index);
  const Geometry g = geometryOf(width, height, spec, rng);
  const int m = spec.shrinkOnLoad ? shrinkScale(g) : 8;
  const int sw = decoder.scaledWidth(m), sh = decoder.scaledHeight(m);
  const double fx = double(swap ? sh : sw) / width, fy = double(swap ? sw : sh) / height;
  JpegRegion region;
  region.scaleNum = m;
  if (spec.shrinkOnLoad && orientation == 1) {
    region.x0 = int(std::floor(g.clipX0 * fx));
    region.y0 = int(std::floor(g.clipY0 * fy));
    region.x1 = int(std::ceil(g.clipX1 * fx));
    region.y1 = int(std::ceil(g.clipY1 * fy));
  }
  RgbImage image;
  int ox = 0, oy = 0;
  decoder.decode(region, image, ox, oy);
  if (orientation != 1) image = applyOrientation(RgbView::of(image), orientation);
  render(RgbView::of(image), fx, fy, ox, oy, g, spec, rng, chw);
}

}  // namespace

CropBox sampleCropBox(int width, int height, const ImageTransformSpec& spec, SampleRng& rng) {
  CropBox c;
  const double area = double(width) * double(height);
  const double logRatio0 = std::log(spec.ratio[0]), logRatio1 = std::log(spec.ratio[1]);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * rng.uniform(spec.scale[0], spec.scale[1]);
    const double aspect = std::exp(rng.uniform(logRatio0, logRatio1));
    const int w = pyRound(std::sqrt(target * aspect)), h = pyRound(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      c.top = int(rng.below(height - h + 1));
      c.left = int(rng.below(width - w + 1));
      c.width = w;
      c.height = h;
      found = true;
    }
  }
  if (!found) {
    // The centre crop of the nearest allowed aspect ratio.
    const double inRatio = double(width) / double(height);
    const double lo = std::min(spec.ratio[0], spec.ratio[1]), hi = std::max(spec.ratio[0], spec.ratio[1]);
    if (inRatio < lo) {
      c.width = width;
      c.height = pyRound(width / lo);
    } else if (inRatio > hi) {
      c.height = height;
      c.width = pyRound(height * hi);
    } else {
      c.width = width;
      c.height = height;
    }
    c.top = (height - c.height) / 2;
    c.left = (width - c.width) / 2;
  }
  c.flip = spec.flip && rng.coin(0.5);
  return c;
}

CropBox cropBoxOf(int width, int height, int64_t index, const ImageTransformSpec& spec) {
  SampleRng rng(spec.seed, spec.epoch, index);
  return sampleCropBox(width, height, spec, rng);
}

void loadSample(const std::string& path, int64_t index, const ImageTransformSpec& spec, uint8_t* chw) {
  const std::vector<uint8_t> bytes = readImageFile(path);
  switch (sniffImageFormat(bytes.data(), bytes.size())) {
    case ImageFormat::Jpeg: loadJpeg(bytes.data(), bytes.size(), index, spec, chw); return;
    case ImageFormat::Png: {
      const RgbImage image = decodePng(bytes.data(), bytes.size());
      transformPixels(RgbView::of(image), index, spec, chw);
      return;
    }
    default: throw notJpegOrPng(path, bytes.data(), bytes.size());
  }
}

void transformPixels(const RgbView& image, int64_t index, const ImageTransformSpec& spec, uint8_t* chw) {
  if (image.width <= 0 || image.height <= 0) throw ImageError(ImageStatus::Failed, "empty image");
  SampleRng rng(spec.seed, spec.epoch, index);
  const Geometry g = geometryOf(image.width, image.height, spec, rng);
  render(image, 1.0, 1.0, 0, 0, g, spec, rng, chw);
}

}  // namespace repopt

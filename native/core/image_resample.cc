#include "core/image_resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace repopt {

namespace {

// Pillow's fixed point for 8-bit images: coefficients scaled by 2^22, sums in int32.
constexpr int kPrecisionBits = 32 - 8 - 2;

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

inline double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// The taps of outputs first .. first + count - 1 along one axis: for output k, the input range
// [start[k], start[k] + taps[k]) and its weights weights[k * kernelSize ...].
struct Taps {
  int kernelSize = 0;
  std::vector<int> start, taps;
  std::vector<int32_t> weights;
};

Taps computeTaps(int inSize, double in0, double in1, int outSize, int first, int count) {
  const double scale = (in1 - in0) / outSize;
  // Downscaling widens the triangle by the scale factor (antialiasing); upscaling keeps support 1.
  const double filterScale = std::max(scale, 1.0);
  const double support = filterScale, invScale = 1.0 / filterScale;
  Taps t;
  t.kernelSize = int(std::ceil(support)) * 2 + 1;
  t.start.resize(size_t(count));
  t.taps.resize(size_t(count));
  t.weights.assign(size_t(count) * size_t(t.kernelSize), 0);
  std::vector<double> w(size_t(t.kernelSize));
  for (int k = 0; k < count; ++k) {
    const double center = in0 + (first + k + 0.5) * scale;
    // Truncation as C's (int) cast, then clamped to the input.
    int lo = int(center - support + 0.5), hi = int(center + support + 0.5);
    lo = std::max(lo, 0);
    hi = std::min(hi, inSize);
    const int n = std::max(hi - lo, 0);
    double sum = 0;
    for (int x = 0; x < n; ++x) sum += w[size_t(x)] = triangle((x + lo - center + 0.5) * invScale);
    int32_t* out = t.weights.data() + size_t(k) * size_t(t.kernelSize);
    for (int x = 0; x < n; ++x) {
      const double v = sum != 0.0 ? w[size_t(x)] / sum : w[size_t(x)];
      out[x] = int32_t(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    t.start[size_t(k)] = lo;
    t.taps[size_t(k)] = n;
  }
  return t;
}

}  // namespace

void resizeBilinear(const RgbView& src, const ResizeBox& box, int outWidth, int outHeight, int wx, int wy, int ww, int wh, uint8_t* dst) {
  const int cx0 = std::max(wx, 0), cx1 = std::min(wx + ww, outWidth);
  const int cy0 = std::max(wy, 0), cy1 = std::min(wy + wh, outHeight);
  if (cx0 != wx || cx1 != wx + ww || cy0 != wy || cy1 != wy + wh) std::memset(dst, 0, size_t(ww) * size_t(wh) * 3);
  if (cx1 <= cx0 || cy1 <= cy0) return;
  const int nx = cx1 - cx0, ny = cy1 - cy0;
  // Pillow skips a pass whose axis is unchanged.
  const bool horizontal = outWidth != src.width || box.x0 != 0 || box.x1 != outWidth;
  const bool vertical = outHeight != src.height || box.y0 != 0 || box.y1 != outHeight;
  const std::ptrdiff_t dstStride = std::ptrdiff_t(ww) * 3;
  uint8_t* dstOrigin = dst + (cy0 - wy) * dstStride + std::ptrdiff_t(cx0 - wx) * 3;

  Taps rowTaps;
  int rowFirst = cy0, rowLast = cy1;
  if (vertical) {
    rowTaps = computeTaps(src.height, box.y0, box.y1, outHeight, cy0, ny);
    rowFirst = rowTaps.start.front();
    rowLast = rowTaps.start.back() + rowTaps.taps.back();
  }

  // The horizontal pass over the rows the vertical pass reads, rounded to uint8 as Pillow's
  // intermediate image is.
  std::vector<uint8_t> temp;
  const uint8_t* rows;
  std::ptrdiff_t rowStride;
  if (horizontal) {
    const Taps colTaps = computeTaps(src.width, box.x0, box.x1, outWidth, cx0, nx);
    temp.resize(size_t(std::max(rowLast - rowFirst, 0)) * size_t(nx) * 3);
    for (int y = rowFirst; y < rowLast; ++y) {
      const uint8_t* in = src.data + y * src.stride;
      uint8_t* out = temp.data() + size_t(y - rowFirst) * size_t(nx) * 3;
      for (int x = 0; x < nx; ++x, out += 3) {
        const int32_t* k = colTaps.weights.data() + size_t(x) * size_t(colTaps.kernelSize);
        const uint8_t* p = in + std::ptrdiff_t(colTaps.start[size_t(x)]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int j = 0, n = colTaps.taps[size_t(x)]; j < n; ++j, p += 3) {
          s0 += p[0] * k[j];
          s1 += p[1] * k[j];
          s2 += p[2] * k[j];
        }
        out[0] = clip8(s0);
        out[1] = clip8(s1);
        out[2] = clip8(s2);
      }
    }
    rows = temp.data();
    rowStride = std::ptrdiff_t(nx) * 3;
  } else {
    rows = src.data + rowFirst * src.stride + std::ptrdiff_t(cx0) * 3;
    rowStride = src.stride;
  }

  const size_t rowBytes = size_t(nx) * 3;
  if (!vertical) {
    for (int y = 0; y < ny; ++y) std::memcpy(dstOrigin + y * dstStride, rows + (cy0 + y - rowFirst) * rowStride, rowBytes);
    return;
  }
  std::vector<int32_t> acc(rowBytes);
  for (int y = 0; y < ny; ++y) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = rowTaps.weights.data() + size_t(y) * size_t(rowTaps.kernelSize);
    const uint8_t* p = rows + (rowTaps.start[size_t(y)] - rowFirst) * rowStride;
    for (int j = 0, n = rowTaps.taps[size_t(y)]; j < n; ++j, p += rowStride) {
      const int32_t kj = k[j];
      for (size_t i = 0; i < rowBytes; ++i) acc[i] += p[i] * kj;
    }
    uint8_t* out = dstOrigin + y * dstStride;
    for (size_t i = 0; i < rowBytes; ++i) out[i] = clip8(acc[i]);
  }
}

}  // namespace repopt

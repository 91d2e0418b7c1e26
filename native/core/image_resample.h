#pragma once
// Pillow's Image.resize(size, Image.BILINEAR, box): the antialiased separable resample torchvision's
// Resize and RandomResizedCrop use on PIL images, reproduced to the pixel (the same filter support,
// fixed-point coefficients and uint8 rounding between the horizontal and the vertical pass).
#include <cstdint>

#include "core/image_decode.h"

namespace repopt {

// The source rectangle of a resize, in pixels of the source view (fractional allowed).
struct ResizeBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Resizes `box` of src to outWidth x outHeight, computing only the window [wx, wx + ww) x [wy, wy + wh)
// of the result (written row-major, HWC, to dst: ww * wh * 3 bytes). Window pixels outside the result
// are 0 (as torchvision's CenterCrop pads). Each output pixel equals Pillow's whole-image resize.
void resizeBilinear(const RgbView& src, const ResizeBox& box, int outWidth, int outHeight, int wx, int wy, int ww, int wh, uint8_t* dst);

}  // namespace repopt

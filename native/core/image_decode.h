#pragma once
// JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, with the pixels Pillow's
// Image.open(f).convert('RGB') gives, so that a loader decoding here feeds a network the images a
// torchvision pipeline would. Plain C++: no torch, no Node.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace repopt {

// Why an image could not be loaded: the file is unreadable or broken (Failed), or it is neither JPEG
// nor PNG (Unsupported: the caller may decode it some other way).
enum class ImageStatus : uint8_t { Ok = 0, Failed = 1, Unsupported = 2 };

class ImageError : public std::runtime_error {
 public:
  ImageError(ImageStatus status, const std::string& message) : std::runtime_error(message), status(status) {}
  ImageStatus status;
};

// Row-major HWC RGB pixels.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// A read-only window into RGB pixels (rows `stride` bytes apart).
struct RgbView {
  const uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  std::ptrdiff_t stride = 0;

  static RgbView of(const RgbImage& image) { return {image.pixels.data(), image.width, image.height, std::ptrdiff_t(image.width) * 3}; }
  // The rectangle [x0, x0 + w) x [y0, y0 + h), which must lie inside.
  RgbView crop(int x0, int y0, int w, int h) const { return {data + y0 * stride + std::ptrdiff_t(x0) * 3, w, h, stride}; }
};

enum class ImageFormat { Jpeg, Png, Other };
ImageFormat sniffImageFormat(const uint8_t* data, size_t size);

// Files above this size are refused rather than read whole into memory.
constexpr int64_t kMaxImageFileBytes = int64_t(1) << 30;

// The whole file; ImageError(Failed, "cannot open: ENOENT ...", "zero-byte file", ...) when it cannot be read.
std::vector<uint8_t> readImageFile(const std::string& path);

// The largest image we decode (Pillow's decompression-bomb limit): a bigger one fails instead of
// allocating gigabytes.
constexpr int64_t kMaxImagePixels = 178956970;

// Which part of a JPEG to decode: the DCT scale scaleNum/8 (1..8) and, in the scaled image's stored
// (not EXIF-oriented) coordinates, the rectangle [x0, x1) x [y0, y1) that must be covered. The decoder
// may return more (libjpeg crops columns at iMCU boundaries).
struct JpegRegion {
  int scaleNum = 8;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// A JPEG being decoded: construct, look at the header (size, orientation), then decode.
class JpegDecoder {
 public:
  JpegDecoder(const uint8_t* data, size_t size);
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Stored size, before orientation.
  int width() const;
  int height() const;
  // EXIF orientation (1..8; 1 when absent or unreadable).
  int orientation() const { return orientation_; }
  // The size of the image decoded at scaleNum/8 (libjpeg rounds up).
  int scaledWidth(int scaleNum) const;
  int scaledHeight(int scaleNum) const;

  // Decodes `region` (the whole image when its rectangle is empty) into out; offsetX/Y are where out
  // lies in the scaled image. Not oriented. Throws ImageError.
  void decode(const JpegRegion& region, RgbImage& out, int& offsetX, int& offsetY);

  // libjpeg's state (image_decode.cc).
  struct State;

 private:
  State* state_;
  int orientation_ = 1;
};

// The whole JPEG at full scale with its EXIF orientation applied.
RgbImage decodeJpeg(const uint8_t* data, size_t size);
// A PNG as 8-bit RGB: palette expanded, gray replicated, 16-bit reduced to the high byte, alpha dropped.
RgbImage decodePng(const uint8_t* data, size_t size);
// A JPEG or PNG file as decodeJpeg / decodePng give it.
RgbImage decodeImageFile(const std::string& path);
// The error for content that is neither JPEG nor PNG: Failed when the name says .jpg/.jpeg/.png (a
// broken file), Unsupported otherwise (another format, which the caller may decode some other way).
ImageError notJpegOrPng(const std::string& path, const uint8_t* data, size_t size);

// The EXIF orientation in a JPEG APP1 segment's payload (starting "Exif\0\0"), or 1.
int exifOrientation(const uint8_t* data, size_t size);
// The image turned upright for an EXIF orientation (2..8 mirror and/or rotate; 1 copies).
RgbImage applyOrientation(const RgbView& image, int orientation);

}  // namespace repopt

#include "core/image_decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>

// jpeglib.h needs size_t and FILE declared first (above).
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

namespace repopt {

namespace {

std::string errnoText(int err) {
  switch (err) {
    case ENOENT: return "ENOENT (no such file or directory)";
    case EACCES: return "EACCES (permission denied)";
    case EISDIR: return "EISDIR (is a directory)";
    case ENOTDIR: return "ENOTDIR (a path component is not a directory)";
    case ENAMETOOLONG: return "ENAMETOOLONG (file name too long)";
    case ELOOP: return "ELOOP (too many symbolic links)";
    case EMFILE: return "EMFILE (too many open files)";
    case EIO: return "EIO (input/output error)";
    default: return "errno " + std::to_string(err);
  }
}

[[noreturn]] void fail(const std::string& message) { throw ImageError(ImageStatus::Failed, message); }

void checkPixels(int64_t width, int64_t height) {
  if (width * height > kMaxImagePixels) {
    fail("image too large: " + std::to_string(width) + "x" + std::to_string(height) + " pixels (at most " + std::to_string(kMaxImagePixels) + ")");
  }
}

// ---- JPEG ----

// libjpeg's default error handler calls exit(); ours jumps back to the decoding call instead.
struct JpegErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64];
};

void jpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  std::snprintf(err->message, sizeof err->message, "corrupt JPEG: %s", text);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1): a file that ends early is a failure, as Pillow raises on truncated images by
// default; libjpeg would otherwise fill the rest with gray. Other warnings are ignored, as Pillow does.
void jpegEmitMessage(j_common_ptr cinfo, int level) {
  if (level != -1) return;
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    std::snprintf(err->message, sizeof err->message, "truncated JPEG: premature end of data");
    std::longjmp(err->jump, 1);
  }
  if (cinfo->err->msg_code == JWRN_HIT_MARKER) {
    std::snprintf(err->message, sizeof err->message, "corrupt JPEG: premature end of data segment");
    std::longjmp(err->jump, 1);
  }
}

// Adobe CMYK JPEGs store inverted values; Pillow reads them as "CMYK;I" and converts with
// R = (255 - K) - MULDIV255(C, 255 - K), its rounded integer division by 255.
inline uint8_t cmykChannel(int stored, int storedK) {
  const int c = 255 - stored;
  const int nk = storedK;
  const int t = c * nk + 128;
  const int v = nk - (((t >> 8) + t) >> 8);
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

struct JpegDecoder::State {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  bool created = false;
  std::vector<uint8_t> cmykRow;
  ~State() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

namespace {

// The setjmp frames below hold only trivially destructible locals: a longjmp back into them skips no destructor.
bool jpegOpen(JpegDecoder::State* s, const uint8_t* data, size_t size) {
  s->cinfo.err = jpeg_std_error(&s->err.pub);
  s->err.pub.error_exit = jpegErrorExit;
  s->err.pub.emit_message = jpegEmitMessage;
  if (setjmp(s->err.jump)) return false;
  jpeg_create_decompress(&s->cinfo);
  s->created = true;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&s->cinfo, TRUE);
  return true;
}

bool jpegScaledSize(JpegDecoder::State* s, int scaleNum, int* width, int* height) {
  if (setjmp(s->err.jump)) return false;
  s->cinfo.scale_num = unsigned(scaleNum);
  s->cinfo.scale_denom = 8;
  jpeg_calc_output_dimensions(&s->cinfo);
  *width = int(s->cinfo.output_width);
  *height = int(s->cinfo.output_height);
  return true;
}

bool jpegDecode(JpegDecoder::State* s, const JpegRegion* region, RgbImage* out, int* offsetX, int* offsetY) {
  if (setjmp(s->err.jump)) return false;
  jpeg_decompress_struct& c = s->cinfo;
  const bool cmyk = c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK;
  // Gray is replicated to RGB by libjpeg-turbo, as Pillow's convert('RGB') does.
  c.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  c.scale_num = unsigned(region->scaleNum);
  c.scale_denom = 8;
  // Pillow's settings (libjpeg's defaults), so that a full-scale decode gives its pixels.
  c.dct_method = JDCT_ISLOW;
  c.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&c);
  const int fullWidth = int(c.output_width), fullHeight = int(c.output_height);
  int y0 = 0, y1 = fullHeight;
  JDIMENSION x0 = 0, width = JDIMENSION(fullWidth);
  if (region->x1 > region->x0 && region->y1 > region->y0) {
    y0 = region->y0 < 0 ? 0 : region->y0;
    y1 = region->y1 > fullHeight ? fullHeight : region->y1;
    const int rx0 = region->x0 < 0 ? 0 : region->x0, rx1 = region->x1 > fullWidth ? fullWidth : region->x1;
    if (rx0 > 0 || rx1 < fullWidth) {
      x0 = JDIMENSION(rx0);
      width = JDIMENSION(rx1 - rx0);
      jpeg_crop_scanline(&c, &x0, &width);
    }
  }
  out->width = int(c.output_width);
  out->height = y1 - y0;
  out->pixels.resize(size_t(out->width) * size_t(out->height) * 3);
  if (cmyk) s->cmykRow.resize(size_t(out->width) * 4);
  *offsetX = int(x0);
  *offsetY = y0;
  if (y0 > 0) jpeg_skip_scanlines(&c, JDIMENSION(y0));
  while (int(c.output_scanline) < y1) {
    uint8_t* dst = out->pixels.data() + size_t(int(c.output_scanline) - y0) * size_t(out->width) * 3;
    JSAMPROW row = cmyk ? s->cmykRow.data() : dst;
    jpeg_read_scanlines(&c, &row, 1);
    if (cmyk) {
      const uint8_t* src = s->cmykRow.data();
      for (int x = 0; x < out->width; ++x, src += 4, dst += 3) {
        dst[0] = cmykChannel(src[0], src[3]);
        dst[1] = cmykChannel(src[1], src[3]);
        dst[2] = cmykChannel(src[2], src[3]);
      }
    }
  }
  return true;
}

}  // namespace

JpegDecoder::JpegDecoder(const uint8_t* data, size_t size) : state_(new State()) {
  std::unique_ptr<State> owner(state_);
  if (!jpegOpen(state_, data, size)) fail(state_->err.message);
  checkPixels(state_->cinfo.image_width, state_->cinfo.image_height);
  for (jpeg_saved_marker_ptr m = state_->cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1) {
      const int o = exifOrientation(m->data, m->data_length);
      if (o != 1) {
        orientation_ = o;
        break;
      }
    }
  }
  owner.release();
}

JpegDecoder::~JpegDecoder() { delete state_; }

int JpegDecoder::width() const { return int(state_->cinfo.image_width); }
int JpegDecoder::height() const { return int(state_->cinfo.image_height); }

int JpegDecoder::scaledWidth(int scaleNum) const {
  int w = 0, h = 0;
  if (!jpegScaledSize(state_, scaleNum, &w, &h)) fail(state_->err.message);
  return w;
}

int JpegDecoder::scaledHeight(int scaleNum) const {
  int w = 0, h = 0;
  if (!jpegScaledSize(state_, scaleNum, &w, &h)) fail(state_->err.message);
  return h;
}

void JpegDecoder::decode(const JpegRegion& region, RgbImage& out, int& offsetX, int& offsetY) {
  if (!jpegDecode(state_, &region, &out, &offsetX, &offsetY)) fail(state_->err.message);
}

RgbImage decodeJpeg(const uint8_t* data, size_t size) {
  JpegDecoder decoder(data, size);
  RgbImage image;
  int ox = 0, oy = 0;
  decoder.decode(JpegRegion{}, image, ox, oy);
  if (decoder.orientation() == 1) return image;
  return applyOrientation(RgbView::of(image), decoder.orientation());
}

// ---- PNG ----

namespace {

struct PngInput {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void pngRead(png_structp png, png_bytep out, size_t n) {
  auto* in = static_cast<PngInput*>(png_get_io_ptr(png));
  if (n > in->size - in->pos) png_error(png, "truncated PNG: premature end of data");
  std::memcpy(out, in->data + in->pos, n);
  in->pos += n;
}

void pngError(png_structp png, png_const_charp message) {
  auto* in = static_cast<PngInput*>(png_get_error_ptr(png));
  if (std::strncmp(message, "truncated PNG", 13) == 0) {
    std::snprintf(in->message, sizeof in->message, "%s", message);
  } else {
    std::snprintf(in->message, sizeof in->message, "corrupt PNG: %s", message);
  }
  png_longjmp(png, 1);
}

void pngWarning(png_structp, png_const_charp) {}

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  RgbImage image;
  std::vector<uint8_t> buffer;
  std::vector<png_bytep> rows;
  ~PngState() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

bool pngDecode(PngState* s, PngInput* in) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, in, pngRead);
  png_read_info(s->png, s->info);
  const png_uint_32 width = png_get_image_width(s->png, s->info), height = png_get_image_height(s->png, s->info);
  if (int64_t(width) * int64_t(height) > kMaxImagePixels) png_error(s->png, "image too large");
  const int color = png_get_color_type(s->png, s->info), depth = png_get_bit_depth(s->png, s->info);
  // Pillow's convert('RGB'): 16-bit samples keep their high byte, palettes and low bit depths expand,
  // gray is replicated, alpha is dropped below (not composited).
  if (depth == 16) png_set_strip_16(s->png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);
  if ((color & PNG_COLOR_MASK_COLOR) == 0) {
    if (depth < 8) png_set_expand_gray_1_2_4_to_8(s->png);
    png_set_gray_to_rgb(s->png);
  }
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  const size_t channels = png_get_channels(s->png, s->info);
  if ((channels != 3 && channels != 4) || png_get_rowbytes(s->png, s->info) != size_t(width) * channels) png_error(s->png, "unexpected pixel layout");
  s->buffer.resize(size_t(width) * size_t(height) * channels);
  s->rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) s->rows[y] = s->buffer.data() + size_t(y) * width * channels;
  png_read_image(s->png, s->rows.data());
  s->image.width = int(width);
  s->image.height = int(height);
  if (channels == 3) {
    s->image.pixels.swap(s->buffer);
  } else {
    s->image.pixels.resize(size_t(width) * size_t(height) * 3);
    const uint8_t* src = s->buffer.data();
    uint8_t* dst = s->image.pixels.data();
    for (size_t k = 0, n = size_t(width) * size_t(height); k < n; ++k, src += 4, dst += 3) {
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return true;
}

}  // namespace

RgbImage decodePng(const uint8_t* data, size_t size) {
  PngInput in{data, size, 0, {0}};
  PngState s;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &in, pngError, pngWarning);
  if (!s.png) throw std::bad_alloc();
  s.info = png_create_info_struct(s.png);
  if (!s.info) throw std::bad_alloc();
  if (!pngDecode(&s, &in)) fail(in.message);
  return std::move(s.image);
}

// ---- files, formats, orientation ----

ImageFormat sniffImageFormat(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::Jpeg;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Other;
}

std::vector<uint8_t> readImageFile(const std::string& path) {
  // Non-blocking: a FIFO put in the folder after it was listed fails below instead of waiting for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("cannot open: " + errnoText(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) fail("cannot read: " + errnoText(errno));
  if (S_ISDIR(st.st_mode)) fail("cannot read: " + errnoText(EISDIR));
  if (!S_ISREG(st.st_mode)) fail("cannot read: not a regular file");
  if (st.st_size == 0) fail("zero-byte file");
  if (st.st_size > kMaxImageFileBytes) fail("larger than 1 GiB: not read");
  std::vector<uint8_t> bytes(size_t(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot read: " + errnoText(errno));
    if (n == 0) break;  // shrunk while reading: decode what is there
    done += size_t(n);
  }
  bytes.resize(done);
  if (bytes.empty()) fail("zero-byte file");
  return bytes;
}

RgbImage decodeImageFile(const std::string& path) {
  const std::vector<uint8_t> bytes = readImageFile(path);
  switch (sniffImageFormat(bytes.data(), bytes.size())) {
    case ImageFormat::Jpeg: return decodeJpeg(bytes.data(), bytes.size());
    case ImageFormat::Png: return decodePng(bytes.data(), bytes.size());
    default: throw notJpegOrPng(path, bytes.data(), bytes.size());
  }
}

ImageError notJpegOrPng(const std::string& path, const uint8_t* data, size_t size) {
  const size_t dot = path.find_last_of("./");
  std::string ext = dot != std::string::npos && path[dot] == '.' ? path.substr(dot + 1) : "";
  for (char& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  const bool jpeg = ext == "jpg" || ext == "jpeg" || ext == "jpe", png = ext == "png";
  if (!jpeg && !png) return ImageError(ImageStatus::Unsupported, "not JPEG or PNG");
  char start[32];
  std::snprintf(start, sizeof start, "0x%02x 0x%02x", size > 0 ? data[0] : 0, size > 1 ? data[1] : 0);
  return ImageError(ImageStatus::Failed,
                    std::string(jpeg ? "corrupt JPEG" : "corrupt PNG") + ": not a " + (jpeg ? "JPEG" : "PNG") + " file (starts with " + start + ")");
}

int exifOrientation(const uint8_t* data, size_t size) {
  if (size < 14 || std::memcmp(data, "Exif\0\0", 6) != 0) return 1;
  const uint8_t* t = data + 6;
  const size_t n = size - 6;
  bool little;
  if (t[0] == 'I' && t[1] == 'I') {
    little = true;
  } else if (t[0] == 'M' && t[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  auto u16 = [&](size_t at) { return little ? unsigned(t[at] | t[at + 1] << 8) : unsigned(t[at] << 8 | t[at + 1]); };
  auto u32 = [&](size_t at) { return little ? uint32_t(u16(at) | u16(at + 2) << 16) : uint32_t(u16(at) << 16 | u16(at + 2)); };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd + 2 > n) return 1;
  const unsigned count = u16(ifd);
  for (unsigned k = 0; k < count; ++k) {
    const size_t e = ifd + 2 + size_t(k) * 12;
    if (e + 12 > n) break;
    if (u16(e) != 0x0112) continue;
    if (u16(e + 2) != 3) return 1;  // SHORT
    const unsigned v = u16(e + 8);
    return v >= 1 && v <= 8 ? int(v) : 1;
  }
  return 1;
}

RgbImage applyOrientation(const RgbView& in, int orientation) {
  const int w = in.width, h = in.height;
  const bool swap = orientation >= 5;
  RgbImage out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.pixels.resize(size_t(w) * size_t(h) * 3);
  uint8_t* dst = out.pixels.data();
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x, dst += 3) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                  // mirrored
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;  // rotated 180
        case 4: sy = h - 1 - y; break;                  // flipped vertically
        case 5: sx = y, sy = x; break;                  // transposed
        case 6: sx = y, sy = h - 1 - x; break;          // rotated 90 clockwise
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;  // transversed
        case 8: sx = w - 1 - y, sy = x; break;          // rotated 90 counter-clockwise
        default: break;
      }
      const uint8_t* src = in.data + sy * in.stride + std::ptrdiff_t(sx) * 3;
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

}  // namespace repopt

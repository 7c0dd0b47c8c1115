#include "inference/vision/image.h"

// jpeglib.h uses size_t and FILE without including their headers.
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qwen::vision {
namespace {

bool StartsWith(absl::Span<const uint8_t> b, const char* magic, size_t at = 0) {
  const size_t n = std::strlen(magic);
  return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

absl::Status CheckSize(int64_t width, int64_t height, const DecodeLimits& limits,
                       absl::string_view name, absl::string_view format) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", format, " header gives an empty size ", width, "x", height));
  }
  if (width < limits.min_side || height < limits.min_side) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", width, "x", height,
                                                   " pixels is too small (each side must be at "
                                                   "least ",
                                                   limits.min_side, ")"));
  }
  if (width * height > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", width, "x", height,
                                                   " pixels is too large (at most ",
                                                   limits.max_pixels, " pixels)"));
  }
  return absl::OkStatus();
}

// libjpeg reports fatal errors through error_exit, which must not return: jump back to the
// decoder with the message. Only plain data lives between setjmp and the jump.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  int warnings;
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void JpegEmitMessage(j_common_ptr cinfo, int level) {
  // level -1: a warning (corrupt data, premature end of file). Trace messages are ignored.
  if (level < 0) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    if (err->warnings++ == 0) (*cinfo->err->format_message)(cinfo, err->message);
  }
}

absl::StatusOr<RgbImage> DecodeJpeg(absl::Span<const uint8_t> bytes, const DecodeLimits& limits,
                                    absl::string_view name) {
  RgbImage image;
  jpeg_decompress_struct cinfo;
  JpegError err;
  std::memset(&err, 0, sizeof(err));
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  err.mgr.emit_message = JpegEmitMessage;
  std::vector<uint8_t> row;  // constructed before setjmp: a longjmp skips no destructor
  absl::Status status;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": corrupt or truncated JPEG (", err.message, ")"));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  status = CheckSize(cinfo.image_width, cinfo.image_height, limits, name, "JPEG");
  if (!status.ok()) {
    jpeg_destroy_decompress(&cinfo);
    return status;
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image.width = static_cast<int>(cinfo.output_width);
  image.height = static_cast<int>(cinfo.output_height);
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  row.resize(static_cast<size_t>(image.width) * cinfo.output_components);
  while (cinfo.output_scanline < cinfo.output_height) {
    const size_t y = cinfo.output_scanline;
    JSAMPROW rows[1] = {row.data()};
    jpeg_read_scanlines(&cinfo, rows, 1);
    uint8_t* out = image.pixels.data() + y * image.width * 3;
    if (cmyk) {
      // Adobe writes CMYK JPEGs inverted (0 = full ink): R = C * K / 255 on the stored values.
      for (int x = 0; x < image.width; ++x) {
        const int k = row[4 * x + 3];
        for (int c = 0; c < 3; ++c) out[3 * x + c] = static_cast<uint8_t>(row[4 * x + c] * k / 255);
      }
    } else {
      std::memcpy(out, row.data(), row.size());
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (err.warnings > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": corrupt or truncated JPEG (", err.message, ")"));
  }
  return image;
}

absl::StatusOr<RgbImage> DecodePng(absl::Span<const uint8_t> bytes, const DecodeLimits& limits,
                                   absl::string_view name) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt PNG (", png.message, ")"));
  }
  absl::Status status = CheckSize(png.width, png.height, limits, name, "PNG");
  if (!status.ok()) {
    png_image_free(&png);
    return status;
  }
  // Read as RGBA and drop alpha: the colour channels as stored, as PIL's convert("RGB") does
  // (the model's processor), instead of compositing over a background.
  png.format = PNG_FORMAT_RGBA;
  // 16-bit samples without colour-space chunks are taken as sRGB and scaled to 8 bits (as PIL
  // does), not as linear light to be gamma-encoded (libpng's default).
  png.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, rgba.data(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": corrupt or truncated PNG (", message, ")"));
  }
  RgbImage image;
  image.width = static_cast<int>(png.width);
  image.height = static_cast<int>(png.height);
  const size_t n = static_cast<size_t>(image.width) * image.height;
  image.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) std::memcpy(&image.pixels[3 * i], &rgba[4 * i], 3);
  return image;
}

absl::StatusOr<RgbImage> DecodeWebp(absl::Span<const uint8_t> bytes, const DecodeLimits& limits,
                                    absl::string_view name) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(bytes.data(), bytes.size(), &features) != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt or truncated WebP header"));
  }
  if (features.has_animation) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": animated WebP is not supported (send one frame)"));
  }
  absl::Status status = CheckSize(features.width, features.height, limits, name, "WebP");
  if (!status.ok()) return status;
  RgbImage image;
  image.width = features.width;
  image.height = features.height;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  const int stride = image.width * 3;
  if (WebPDecodeRGBInto(bytes.data(), bytes.size(), image.pixels.data(), image.pixels.size(),
                        stride) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt or truncated WebP"));
  }
  return image;
}

// The dimensions from each format's header, without decoding a pixel.
absl::StatusOr<ImageInfo> JpegInfo(absl::Span<const uint8_t> bytes, absl::string_view name) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  std::memset(&err, 0, sizeof(err));
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  err.mgr.emit_message = JpegEmitMessage;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": corrupt or truncated JPEG header (", err.message, ")"));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  ImageInfo info{"jpeg", static_cast<int>(cinfo.image_width), static_cast<int>(cinfo.image_height)};
  jpeg_destroy_decompress(&cinfo);
  return info;
}

absl::StatusOr<ImageInfo> PngInfo(absl::Span<const uint8_t> bytes, absl::string_view name) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt PNG (", png.message, ")"));
  }
  ImageInfo info{"png", static_cast<int>(png.width), static_cast<int>(png.height)};
  png_image_free(&png);
  return info;
}

absl::StatusOr<ImageInfo> WebpInfo(absl::Span<const uint8_t> bytes, absl::string_view name) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(bytes.data(), bytes.size(), &features) != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt or truncated WebP header"));
  }
  if (features.has_animation) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": animated WebP is not supported (send one frame)"));
  }
  return ImageInfo{"webp", features.width, features.height};
}

}  // namespace

absl::string_view SniffImageFormat(absl::Span<const uint8_t> b) {
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return "jpeg";
  if (StartsWith(b, "\x89PNG\r\n\x1a\n")) return "png";
  if (StartsWith(b, "RIFF") && StartsWith(b, "WEBP", 8)) return "webp";
  return "";
}

absl::StatusOr<RgbImage> DecodeImage(absl::Span<const uint8_t> bytes, const DecodeLimits& limits,
                                     absl::string_view name) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no image data"));
  if (bytes.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ", bytes.size(), " bytes is too large (at most ", limits.max_bytes, ")"));
  }
  const absl::string_view format = SniffImageFormat(bytes);
  if (format == "jpeg") return DecodeJpeg(bytes, limits, name);
  if (format == "png") return DecodePng(bytes, limits, name);
  if (format == "webp") return DecodeWebp(bytes, limits, name);
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": unknown image format (supported: JPEG, PNG, WebP)"));
}

absl::StatusOr<ImageInfo> ReadImageInfo(absl::Span<const uint8_t> bytes, const DecodeLimits& limits,
                                        absl::string_view name) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no image data"));
  if (bytes.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ", bytes.size(), " bytes is too large (at most ", limits.max_bytes, ")"));
  }
  const absl::string_view format = SniffImageFormat(bytes);
  absl::StatusOr<ImageInfo> info =
      format == "jpeg"   ? JpegInfo(bytes, name)
      : format == "png"  ? PngInfo(bytes, name)
      : format == "webp" ? WebpInfo(bytes, name)
                         : absl::InvalidArgumentError(absl::StrCat(
                               name, ": unknown image format (supported: JPEG, PNG, WebP)"));
  if (!info.ok()) return info.status();
  const char* label = format == "jpeg" ? "JPEG" : format == "png" ? "PNG" : "WebP";
  if (absl::Status st = CheckSize(info->width, info->height, limits, name, label); !st.ok()) {
    return st;
  }
  return info;
}

absl::StatusOr<std::vector<uint8_t>> EncodePng(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError("EncodePng: pixels do not match the size");
  }
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("EncodePng: ", png.message));
  }
  std::vector<uint8_t> out(size);
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("EncodePng: ", png.message));
  }
  out.resize(size);
  return out;
}

}  // namespace qwen::vision

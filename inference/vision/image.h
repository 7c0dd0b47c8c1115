// Decoding of user-supplied images (JPEG, PNG, WebP) into 8-bit RGB, with limits that keep a
// hostile or accidental upload from costing more than a bounded amount of memory and time.
#ifndef QWEN_INFERENCE_VISION_IMAGE_H_
#define QWEN_INFERENCE_VISION_IMAGE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace qwen::vision {

// An 8-bit RGB image, row-major [height][width][3].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Limits checked before any pixel is decoded (the dimensions come from the header), so an image
// that would be too large is refused without allocating its pixels.
struct DecodeLimits {
  // Encoded size: 20 MiB, above what a phone camera JPEG needs.
  size_t max_bytes = size_t{20} << 20;
  // Decoded size: 50 megapixels (8660 x 5773), 150 MB of RGB. Larger photos are refused rather
  // than silently downscaled: preprocessing shrinks everything to at most
  // PreprocessOptions::max_pixels anyway, so the caller should send a smaller image.
  int64_t max_pixels = 50'000'000;
  // Images narrower or shorter than this are refused: a 1-3 pixel side carries nothing a
  // vision model can use and is almost always a broken or tracking-pixel image.
  int min_side = 4;
};

// The container format recognised from the leading bytes ("jpeg", "png", "webp"), or an empty
// view for anything else.
absl::string_view SniffImageFormat(absl::Span<const uint8_t> bytes);

// An image's format ("jpeg", "png", "webp") and size, as its header gives them.
struct ImageInfo {
  absl::string_view format;
  int width = 0;
  int height = 0;
};

// Reads only the header: the format, the size, and the same limits DecodeImage checks before
// it decodes (bytes, pixels, smallest side), at the cost of a few hundred bytes of parsing
// instead of up to max_pixels x 3 bytes of pixels. A body that is corrupt after a good header is
// not noticed here; DecodeImage refuses it. Errors as DecodeImage's. Thread-safe.
absl::StatusOr<ImageInfo> ReadImageInfo(absl::Span<const uint8_t> bytes,
                                        const DecodeLimits& limits = {},
                                        absl::string_view name = "image");

// Decodes a JPEG (baseline and progressive, grey/RGB/CMYK), PNG (any bit depth, palette, grey,
// alpha; 16-bit samples are reduced to 8) or WebP (lossy/lossless, still) image to RGB. Alpha is
// dropped (composited over nothing: the colour channels are kept as stored). Errors are
// INVALID_ARGUMENT and say what is wrong: unknown format, truncated or corrupt data, too many
// bytes or pixels, a side below min_side. `name` prefixes the messages (e.g. "image 2").
// Thread-safe.
absl::StatusOr<RgbImage> DecodeImage(absl::Span<const uint8_t> bytes,
                                     const DecodeLimits& limits = {},
                                     absl::string_view name = "image");

// Encodes `image` as an 8-bit RGB PNG (for tests, tools and fixtures).
absl::StatusOr<std::vector<uint8_t>> EncodePng(const RgbImage& image);

}  // namespace qwen::vision

#endif  // QWEN_INFERENCE_VISION_IMAGE_H_

// DecodeImage and ReadImageInfo: the three formats, and every way an upload can be refused.
// jpeglib.h uses size_t and FILE without including their headers.
#include "inference/vision/image.h"

#include <jpeglib.h>
#include <webp/encode.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qwen::vision {
namespace {

using ::testing::HasSubstr;

RgbImage Gradient(int w, int h) {
  RgbImage im;
  im.width = w;
  im.height = h;
  im.pixels.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.pixels[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(x * 255 / std::max(1, w - 1));
      p[1] = uint8_t(y * 255 / std::max(1, h - 1));
      p[2] = uint8_t((x + y) % 256);
    }
  }
  return im;
}

std::vector<uint8_t> Png(const RgbImage& im) {
  auto png = EncodePng(im);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : std::vector<uint8_t>();
}

std::vector<uint8_t> Jpeg(const RgbImage& im, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = im.width;
  cinfo.image_height = im.height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&im.pixels[size_t(cinfo.next_scanline) * im.width * 3]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  std::free(buf);
  return out;
}

std::vector<uint8_t> WebpLossless(const RgbImage& im) {
  uint8_t* buf = nullptr;
  const size_t n = WebPEncodeLosslessRGB(im.pixels.data(), im.width, im.height, im.width * 3, &buf);
  std::vector<uint8_t> out(buf, buf + n);
  WebPFree(buf);
  return out;
}

TEST(DecodeImage, PngRoundTripsExactly) {
  const RgbImage im = Gradient(37, 23);
  auto got = DecodeImage(Png(im));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->width, 37);
  EXPECT_EQ(got->height, 23);
  EXPECT_EQ(got->pixels, im.pixels);
}

TEST(DecodeImage, WebpLosslessRoundTripsExactly) {
  const RgbImage im = Gradient(40, 30);
  const auto bytes = WebpLossless(im);
  EXPECT_EQ(SniffImageFormat(bytes), "webp");
  auto got = DecodeImage(bytes);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->pixels, im.pixels);
}

TEST(DecodeImage, JpegDecodesCloseToTheSource) {
  const RgbImage im = Gradient(64, 48);
  const auto bytes = Jpeg(im, 95);
  EXPECT_EQ(SniffImageFormat(bytes), "jpeg");
  auto got = DecodeImage(bytes);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->width, 64);
  ASSERT_EQ(got->height, 48);
  double sum = 0;
  for (size_t i = 0; i < im.pixels.size(); ++i) sum += std::abs(got->pixels[i] - im.pixels[i]);
  EXPECT_LT(sum / im.pixels.size(), 4.0);
}

TEST(DecodeImage, TruncatedFilesAreRefusedByName) {
  const RgbImage im = Gradient(64, 48);
  for (auto bytes : {Png(im), Jpeg(im, 90), WebpLossless(im)}) {
    bytes.resize(bytes.size() / 2);
    auto got = DecodeImage(bytes, {}, "image 3");
    ASSERT_FALSE(got.ok()) << SniffImageFormat(bytes);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("image 3"));
    EXPECT_THAT(got.status().message(),
                ::testing::AnyOf(HasSubstr("truncated"), HasSubstr("corrupt")));
  }
}

TEST(DecodeImage, UnknownFormatsAndEmptyInputAreRefused) {
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  auto got = DecodeImage(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(gif.data()), gif.size()));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("unknown image format"));
  EXPECT_EQ(DecodeImage({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecodeImage, LimitsAreCheckedBeforeDecoding) {
  const auto png = Png(Gradient(100, 100));
  DecodeLimits bytes_limit;
  bytes_limit.max_bytes = 100;
  EXPECT_THAT(DecodeImage(png, bytes_limit).status().message(), HasSubstr("bytes is too large"));
  DecodeLimits pixel_limit;
  pixel_limit.max_pixels = 9999;
  for (const auto& bytes : {png, Jpeg(Gradient(100, 100), 80), WebpLossless(Gradient(100, 100))}) {
    auto got = DecodeImage(bytes, pixel_limit);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("100x100 pixels is too large"));
  }
  pixel_limit.max_pixels = 10000;
  EXPECT_TRUE(DecodeImage(png, pixel_limit).ok());
}

TEST(DecodeImage, TinyImagesAreRefused) {
  // Default min_side 4: a 1x1 (tracking pixel) or 3-pixel-high strip is refused.
  for (auto [w, h] : {std::pair{1, 1}, std::pair{100, 3}}) {
    auto got = DecodeImage(Png(Gradient(w, h)));
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("too small"));
  }
  EXPECT_TRUE(DecodeImage(Png(Gradient(4, 4))).ok());
  DecodeLimits any;
  any.min_side = 1;
  EXPECT_TRUE(DecodeImage(Png(Gradient(1, 1)), any).ok());
}

// The header alone gives what a full decode gives about size, for every format, and the same
// refusals; a body cut after the header passes (the decode refuses it later).
TEST(ReadImageInfo, SizeFromTheHeaderAsTheDecoderSeesIt) {
  const RgbImage im = Gradient(64, 48);
  for (const auto& [bytes, format] : {std::pair{Png(im), "png"}, std::pair{Jpeg(im, 90), "jpeg"},
                                      std::pair{WebpLossless(im), "webp"}}) {
    auto info = ReadImageInfo(bytes);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->format, format);
    EXPECT_EQ(info->width, 64);
    EXPECT_EQ(info->height, 48);
    auto decoded = DecodeImage(bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->width, info->width);
    EXPECT_EQ(decoded->height, info->height);
  }
  // A big image whose pixels are not there: the header is enough.
  std::vector<uint8_t> big = Png(Gradient(1500, 1000));
  big.resize(big.size() / 3);
  auto info = ReadImageInfo(big, {}, "image 2");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->width, 1500);
  EXPECT_FALSE(DecodeImage(big, {}, "image 2").ok());
}

TEST(ReadImageInfo, RefusesWhatDecodeImageRefusesBeforeDecoding) {
  const auto png = Png(Gradient(100, 100));
  DecodeLimits bytes_limit;
  bytes_limit.max_bytes = 100;
  EXPECT_THAT(ReadImageInfo(png, bytes_limit).status().message(), HasSubstr("bytes is too large"));
  DecodeLimits pixel_limit;
  pixel_limit.max_pixels = 9999;
  for (const auto& bytes : {png, Jpeg(Gradient(100, 100), 80), WebpLossless(Gradient(100, 100))}) {
    auto got = ReadImageInfo(bytes, pixel_limit, "image 1");
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("image 1: 100x100 pixels is too large"));
  }
  EXPECT_THAT(ReadImageInfo(Png(Gradient(100, 3))).status().message(), HasSubstr("too small"));
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  EXPECT_THAT(ReadImageInfo(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(gif.data()),
                                                      gif.size()))
                  .status()
                  .message(),
              HasSubstr("unknown image format"));
  // Only the first bytes of a header.
  for (const auto& bytes : {png, Jpeg(Gradient(100, 100), 80), WebpLossless(Gradient(100, 100))}) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + 12);
    EXPECT_EQ(ReadImageInfo(cut).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ReadImageInfo({}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwen::vision

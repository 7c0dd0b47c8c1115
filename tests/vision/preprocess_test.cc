// PlanGrid and Preprocess: the smart-resize rule, its limits and the resampling.
#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/vision/vision.h"

namespace qwen::vision {
namespace {

using ::testing::HasSubstr;

VisionConfig Config() {
  VisionConfig c;
  c.patch_size = 16;
  c.spatial_merge_size = 2;
  return c;
}

// Resized size in pixels (width, height).
std::pair<int, int> Plan(int w, int h, PreprocessOptions o = {}) {
  auto g = PlanGrid(w, h, Config(), o);
  EXPECT_TRUE(g.ok()) << w << "x" << h << ": " << g.status();
  if (!g.ok()) return {0, 0};
  return {g->patch_cols * 16, g->patch_rows * 16};
}

TEST(PlanGrid, KeepsSizesOnTheGridAndRoundsToTheNearest) {
  EXPECT_EQ(Plan(128, 128), std::pair(128, 128));
  EXPECT_EQ(Plan(200, 130), std::pair(192, 128));  // 6.25 -> 6, 4.06 -> 4 blocks
  auto g = PlanGrid(200, 130, Config(), {});
  EXPECT_EQ(g->rows(), 4);
  EXPECT_EQ(g->cols(), 6);
  EXPECT_EQ(g->n_tokens(), 24);
  EXPECT_EQ(g->n_patches(), 96);
  // Exact halves round to even as in the model's (Python) processor: 80 = 2.5 blocks -> 2,
  // 400 = 12.5 -> 12 (llama.cpp rounds away from zero: 96x416).
  EXPECT_EQ(Plan(400, 80), std::pair(384, 64));
}

TEST(PlanGrid, UpscalesSmallImagesToMinPixels) {
  EXPECT_EQ(Plan(64, 64), std::pair(96, 96));   // 4 tokens < 8 -> 9 tokens
  EXPECT_EQ(Plan(96, 64), std::pair(128, 96));  // 6 tokens < 8 -> 12 tokens
  // 1x1 is clamped up to the smallest grid above min_pixels (DecodeImage's min_side refuses
  // it before it gets here unless the caller lowers that limit).
  EXPECT_EQ(Plan(1, 1), std::pair(96, 96));
  PreprocessOptions big_min;
  big_min.min_pixels = 65536;  // the model processor's default
  EXPECT_EQ(Plan(128, 128, big_min), std::pair(256, 256));
}

TEST(PlanGrid, DownscalesLargeImagesToMaxPixels) {
  EXPECT_EQ(Plan(4000, 3000), std::pair(1152, 864));  // 972 tokens <= 1024
  EXPECT_EQ(Plan(100000, 100000), std::pair(1024, 1024));
  PreprocessOptions small;
  small.max_pixels = 448 * 448;
  EXPECT_EQ(Plan(1920, 1080, small), std::pair(576, 320));
}

TEST(PlanGrid, ExtremeAspectRatios) {
  // Up to 200:1 is accepted and stays within the bounds; beyond, refused as the model does.
  EXPECT_EQ(Plan(10000, 50), std::pair(9984, 64));  // 312.5 -> 312, 1.56 -> 2 blocks
  PreprocessOptions small;
  small.max_pixels = 256 * 256;  // 10000x50 must shrink: the short side stays one block
  auto [w, h] = Plan(10000, 50, small);
  EXPECT_EQ(h, 32);
  EXPECT_LE(int64_t{w} * h, small.max_pixels);
  EXPECT_GT(w / h, 50);
  auto [w2, h2] = Plan(40, 8000);
  EXPECT_EQ(w2, 32);
  EXPECT_EQ(h2, 8000);
  for (auto [bw, bh] : {std::pair{10001, 50}, std::pair{3, 1000}}) {
    auto g = PlanGrid(bw, bh, Config(), {});
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(g.status().message(), HasSubstr("aspect ratio"));
  }
}

TEST(PlanGrid, RefusesBadArguments) {
  EXPECT_FALSE(PlanGrid(0, 10, Config(), {}).ok());
  PreprocessOptions o;
  o.min_pixels = 2'000'000;
  EXPECT_THAT(PlanGrid(10, 10, Config(), o).status().message(), HasSubstr("exceeds max_pixels"));
  o = {};
  o.max_pixels = 1000;
  EXPECT_THAT(PlanGrid(10, 10, Config(), o).status().message(), HasSubstr("below one"));
}

TEST(PlanGrid, PropertiesOverRandomSizes) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> logsize(std::log(4.0), std::log(20000.0));
  PreprocessOptions o;
  for (int i = 0; i < 20000; ++i) {
    const int w = int(std::exp(logsize(rng))), h = int(std::exp(logsize(rng)));
    if (std::max(w, h) > 200 * std::min(w, h)) continue;
    auto g = PlanGrid(w, h, Config(), o);
    ASSERT_TRUE(g.ok()) << w << "x" << h;
    ASSERT_EQ(g->patch_rows % 2, 0);
    ASSERT_EQ(g->patch_cols % 2, 0);
    ASSERT_GE(g->rows(), 1);
    ASSERT_GE(g->cols(), 1);
    const int64_t area = g->n_patches() * 256;
    ASSERT_LE(area, o.max_pixels) << w << "x" << h;
    // Upscaling always reaches min_pixels; the aspect ratio survives within one grid step.
    ASSERT_GE(area, o.min_pixels) << w << "x" << h;
    const double ratio = double(w) / h, got = double(g->patch_cols) / g->patch_rows;
    if (g->rows() >= 4 && g->cols() >= 4) {
      ASSERT_NEAR(std::log(got), std::log(ratio), 0.35) << w << "x" << h;
    }
  }
}

RgbImage Solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  RgbImage im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.pixels.insert(im.pixels.end(), {r, g, b});
  return im;
}

TEST(Preprocess, ConstantImagesStayConstantUpAndDown) {
  VisionConfig c = Config();
  c.image_mean = {0.48f, 0.45f, 0.40f};
  c.image_std = {0.26f, 0.26f, 0.27f};
  for (auto [w, h] : {std::pair{50, 40}, std::pair{1500, 700}, std::pair{129, 128}}) {
    ImageGrid grid;
    auto px = Preprocess(Solid(w, h, 255, 0, 77), c, {}, &grid);
    ASSERT_TRUE(px.ok()) << px.status();
    const auto [pw, ph] = Plan(w, h);
    ASSERT_EQ(px->size(), size_t(3) * pw * ph);
    EXPECT_EQ(grid.patch_cols * 16, pw);
    const size_t plane = size_t(pw) * ph;
    const float want[3] = {(1.0f - 0.48f) / 0.26f, (0.0f - 0.45f) / 0.26f,
                           (77 / 255.0f - 0.40f) / 0.27f};
    for (int ch = 0; ch < 3; ++ch) {
      for (size_t i = 0; i < plane; i += 97) {
        ASSERT_NEAR((*px)[ch * plane + i], want[ch], 1e-5) << w << "x" << h << " ch " << ch;
      }
    }
  }
}

TEST(Preprocess, StretchesToTheGridWithoutPaddingAndKeepsGradients) {
  // 200x130 -> 192x128: stretched (llama.cpp would letterbox into 192x125 + black rows).
  RgbImage im;
  im.width = 200;
  im.height = 130;
  for (int y = 0; y < 130; ++y) {
    for (int x = 0; x < 200; ++x) {
      im.pixels.insert(im.pixels.end(), {uint8_t(x), uint8_t(y * 255 / 129), 128});
    }
  }
  ImageGrid grid;
  auto px = Preprocess(im, Config(), {}, &grid);
  ASSERT_TRUE(px.ok());
  const int W = 192, H = 128;
  const float* r = px->data();
  const float* g = px->data() + W * H;
  for (int y = 0; y < H; ++y) {
    for (int x = 1; x < W; ++x) ASSERT_GE(r[y * W + x], r[y * W + x - 1]) << x << "," << y;
  }
  // Top and bottom rows keep the image's extremes (no black bars): green ~0 and ~255.
  EXPECT_LT(g[0], -0.95f);
  EXPECT_GT(g[(H - 1) * W], 0.95f);
  // Red at the right edge comes from x ~ 199.
  EXPECT_NEAR(r[W - 1], (199 / 255.0f - 0.5f) / 0.5f, 0.02f);
}

TEST(Preprocess, RejectsInconsistentImages) {
  RgbImage bad;
  bad.width = 10;
  bad.height = 10;
  bad.pixels.resize(5);
  EXPECT_EQ(Preprocess(bad, Config(), {}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwen::vision

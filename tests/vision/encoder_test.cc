// VisionEncoder::Load and EncodePixels on synthetic towers: every supported weight type, and
// the errors a wrong or damaged file gives.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/synthetic_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/vision/vision.h"
#include "tests/common/test_util.h"

namespace qwen::vision {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<VisionEncoder>> LoadPath(const std::string& path) {
  auto file = gguf::GgufFile::Open(path);
  if (!file.ok()) return file.status();
  return VisionEncoder::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*file)));
}

std::string SynthTower(const std::string& type) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/tiny-tower-", type, "-", getpid(), ".gguf");
  cli::SynthOptions o;
  o.shape = "tiny";
  o.type = type;
  o.seed = 3;
  const absl::Status s = cli::WriteSyntheticMmproj(o, path);
  EXPECT_TRUE(s.ok()) << s;
  return path;
}

// Writes, loads and deletes a tiny random tower (the mapping outlives the file's name).
absl::StatusOr<std::unique_ptr<VisionEncoder>> LoadSynth(const std::string& type) {
  const std::string path = SynthTower(type);
  auto enc = LoadPath(path);
  std::remove(path.c_str());
  return enc;
}

std::vector<float> TestPixels(int h, int w) {
  std::vector<float> px(size_t(3) * h * w);
  for (size_t i = 0; i < px.size(); ++i) px[i] = std::sin(0.01f * float(i)) * 0.9f;
  return px;
}

absl::StatusOr<ImageEmbedding> Encode(const VisionEncoder& enc, int h, int w) {
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  return enc.EncodePixels(TestPixels(h, w), h, w, ctx);
}

double RelRms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(VisionEncoder, EveryWeightTypeEncodes) {
  auto f32 = LoadSynth("f32");
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ((*f32)->config().n_ff, 176);
  auto ref = Encode(**f32, 64, 96);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->grid.n_tokens(), 6);
  ASSERT_EQ(ref->data.size(), 6u * 256);
  // F16 and BF16 hold the same random values rounded; Q8_0 files hold other random values, so
  // only their shape and finiteness are checked.
  for (const char* type : {"f16", "bf16", "q8_0"}) {
    auto enc = LoadSynth(type);
    ASSERT_TRUE(enc.ok()) << type << ": " << enc.status();
    auto emb = Encode(**enc, 64, 96);
    ASSERT_TRUE(emb.ok()) << type << ": " << emb.status();
    ASSERT_EQ(emb->data.size(), ref->data.size());
    for (float v : emb->data) ASSERT_TRUE(std::isfinite(v)) << type;
    if (std::string(type) != "q8_0") {
      EXPECT_LT(RelRms(emb->data, ref->data), std::string(type) == "f16" ? 5e-3 : 3e-2) << type;
    }
  }
}

TEST(VisionEncoder, RefusesFilesThatAreNotAQwenTower) {
  auto text = LoadPath(testing::DataPath("models/tiny-qwen35-f32.gguf"));
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("clip.projector_type"));
}

TEST(VisionEncoder, NamesAMissingTensor) {
  // Drop the last tensor (mm.2.bias) from a valid file by rewriting its name in the header.
  const std::string path = SynthTower("f16");
  std::string bytes = testing::ReadFile(path);
  std::remove(path.c_str());
  const size_t at = bytes.find("mm.2.bias");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] = 'X';  // "mm.2.Xias"
  auto file =
      gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(file.ok()) << file.status();
  auto enc = VisionEncoder::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*file)));
  EXPECT_EQ(enc.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(enc.status().message(), HasSubstr("missing tensor mm.2.bias"));
}

TEST(VisionEncoder, RefusesPixelGridsOffTheGrid) {
  auto enc = LoadSynth("f16");
  ASSERT_TRUE(enc.ok());
  ThreadPool pool(1);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  EXPECT_THAT((*enc)->EncodePixels(TestPixels(48, 64), 48, 64, ctx).status().message(),
              HasSubstr("not a positive multiple of 32"));
  EXPECT_THAT((*enc)->EncodePixels(TestPixels(32, 32), 64, 64, ctx).status().message(),
              HasSubstr("pixel values"));
}

// A cancel flag set while the tower runs (here: once the first block is done) stops the encode
// before the next block, with CANCELLED; with the flag clear the same context encodes again.
TEST(VisionEncoder, StopsAtTheNextBlockWhenCancelled) {
  auto enc = LoadSynth("f16");
  ASSERT_TRUE(enc.ok()) << enc.status();
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  std::atomic<bool> cancel{false};
  ctx.set_cancel_flag(&cancel);
  ctx.set_observer([&](absl::string_view name, const float*, int64_t, int64_t) {
    if (name == "layer_out-0") cancel.store(true);
  });
  const absl::StatusOr<ImageEmbedding> stopped =
      (*enc)->EncodePixels(TestPixels(64, 64), 64, 64, ctx);
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled) << stopped.status();
  EXPECT_EQ(ctx.layers_done(), 1);

  ctx.set_observer(nullptr);
  cancel.store(false);
  const absl::StatusOr<ImageEmbedding> again =
      (*enc)->EncodePixels(TestPixels(64, 64), 64, 64, ctx);
  ASSERT_TRUE(again.ok()) << again.status();
  const absl::StatusOr<ImageEmbedding> fresh = Encode(**enc, 64, 64);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(again->data, fresh->data);
}

TEST(VisionEncoder, EncodeResizesAnyImage) {
  auto enc = LoadSynth("f16");
  ASSERT_TRUE(enc.ok());
  RgbImage im;
  im.width = 300;
  im.height = 41;
  for (int i = 0; i < im.width * im.height; ++i) {
    im.pixels.insert(im.pixels.end(), {uint8_t(i), uint8_t(i / 3), uint8_t(i / 7)});
  }
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  auto emb = (*enc)->Encode(im, PreprocessOptions(), ctx);
  ASSERT_TRUE(emb.ok()) << emb.status();
  auto grid = PlanGrid(300, 41, (*enc)->config(), PreprocessOptions());
  ASSERT_TRUE(grid.ok());
  EXPECT_EQ(emb->grid.n_tokens(), grid->n_tokens());
  EXPECT_EQ(emb->data.size(), size_t(grid->n_tokens()) * 256);
}

}  // namespace
}  // namespace qwen::vision

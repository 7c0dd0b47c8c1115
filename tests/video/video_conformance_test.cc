// Video input against the numpy specification of the model's video processor and vision tower
// (tests/data/video/ref, written by tests/data/video/make_references.py from the tiny videos with
// ffmpeg's frames, PIL's resize and ../vision/spec/vision_ref.py; see tests/data/README.md):
// frame times, sampling and sizing, decoded frames, resized frames, every stage of the tower on a
// frame pair, every pair's embeddings, the expanded prompt, its tokens and its M-RoPE positions.
//
// Tolerances (max absolute difference):
// - frame times: exact (1e-12); sampled frames, grid and timestamp texts: equal.
// - decoded frames against the ffmpeg program's RGB24 with the same swscale settings (the same
//   libraries): equal.
// - resized frames against PIL's bicubic (integer arithmetic in PIL, float here): within 1 level.
// - the tower on the reference's pixels (float32 here, float64 there): every stage within 1e-4,
//   embeddings within 5e-5 (rms 0.6): far inside the image path's 3e-3 against llama.cpp.
// - the tower on our own decode and resize: embeddings within 2e-3 (measured 3.5e-4: the resized
//   pixels differ from PIL's by a level here and there).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/chat/chat_template.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/model.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/multimodal/video_prompt.h"
#include "inference/ops/compute.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/video/frame_pairs.h"
#include "inference/video/video.h"
#include "inference/vision/vision.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::video {
namespace {

using testing::DataPath;
using testing::ReadFile;
using Json = nlohmann::json;

constexpr int kFrameTolerance = 0;

const Json& Reference() {
  static const Json* j = new Json(Json::parse(ReadFile(DataPath("video/ref/reference.json"))));
  return *j;
}

std::vector<float> ReadF32(const std::string& rel) {
  const std::string bytes = ReadFile(DataPath(rel));
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::shared_ptr<const vision::VisionEncoder> Tower() {
  static std::shared_ptr<const vision::VisionEncoder> enc = [] {
    auto file = gguf::GgufFile::Open(DataPath("models/mmproj-tiny-qwen35-f32.gguf"));
    EXPECT_TRUE(file.ok()) << file.status();
    auto e = vision::VisionEncoder::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*file)));
    EXPECT_TRUE(e.ok()) << e.status();
    return std::shared_ptr<const vision::VisionEncoder>(std::move(*e));
  }();
  return enc;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double{a[i]} - b[i]));
  return m;
}

// uint8 [H][W][3] -> planar [3][H][W], as the tower's processor normalises (mean = std = 0.5).
std::vector<float> Normalise(const uint8_t* rgb, int w, int h) {
  std::vector<float> out(size_t{3} * w * h);
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < size_t{1} * w * h; ++i) {
      out[c * w * h + i] = (rgb[3 * i + c] / 255.0f - 0.5f) * (1.0f / 0.5f);
    }
  }
  return out;
}

std::vector<std::string> Stages() {
  std::vector<std::string> stages = {"patch_bias", "inp_pos_emb"};
  for (int l = 0; l < 3; ++l) {
    for (const char* s : {"attn_out-", "ffn_inp-", "layer_out-"})
      stages.push_back(absl::StrCat(s, l));
  }
  stages.push_back("norm_b-3");
  stages.push_back("embd");
  return stages;
}

TEST(VideoConformance, TimesSamplingAndSizingAreTheProcessors) {
  for (const Json& c : Reference()["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string bytes = ReadFile(DataPath("video/" + c["name"].get<std::string>()));
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {});
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->width, c["width"].get<int>());
    EXPECT_EQ(info->height, c["height"].get<int>());
    const std::vector<double> times = c["frame_times"].get<std::vector<double>>();
    ASSERT_EQ(info->frame_times.size(), times.size());
    for (size_t i = 0; i < times.size(); ++i) EXPECT_NEAR(info->frame_times[i], times[i], 1e-12);
    absl::StatusOr<VideoPlan> plan = PlanVideo(*info, Tower()->config(), {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->frames, c["frames"].get<std::vector<int64_t>>());
    EXPECT_EQ(plan->grid.patch_cols * 16, c["resized_width"].get<int>());
    EXPECT_EQ(plan->grid.patch_rows * 16, c["resized_height"].get<int>());
    const std::vector<std::string> stamps = c["pair_timestamps"].get<std::vector<std::string>>();
    ASSERT_EQ(plan->pair_times.size(), stamps.size());
    for (size_t k = 0; k < stamps.size(); ++k) {
      EXPECT_EQ(multimodal::TimestampText(plan->pair_times[k]), stamps[k]) << k;
    }
  }
}

TEST(VideoConformance, DecodedFramesAreFfmpegs) {
  for (const Json& c : Reference()["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string bytes = ReadFile(DataPath("video/" + c["name"].get<std::string>()));
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {});
    ASSERT_TRUE(info.ok());
    absl::StatusOr<VideoPlan> plan = PlanVideo(*info, Tower()->config(), {});
    ASSERT_TRUE(plan.ok());
    absl::StatusOr<std::vector<vision::RgbImage>> frames =
        DecodePlannedFrames(Bytes(bytes), *info, *plan, {});
    ASSERT_TRUE(frames.ok()) << frames.status();
    const std::string ref = ReadFile(DataPath("video/ref/" + c["frames_file"].get<std::string>()));
    const size_t frame_bytes = size_t{3} * info->width * info->height;
    ASSERT_EQ(ref.size(), frame_bytes * frames->size());
    int worst = 0;
    for (size_t f = 0; f < frames->size(); ++f) {
      for (size_t i = 0; i < frame_bytes; ++i) {
        worst = std::max(worst, std::abs(int{(*frames)[f].pixels[i]} -
                                         int{static_cast<uint8_t>(ref[f * frame_bytes + i])}));
      }
    }
    std::printf("%s: decoded frames vs ffmpeg: max |diff| %d levels\n",
                c["name"].get<std::string>().c_str(), worst);
    EXPECT_LE(worst, kFrameTolerance);
  }
}

TEST(VideoConformance, ResizedFramesArePils) {
  for (const Json& c : Reference()["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const int w = c["width"], h = c["height"], rw = c["resized_width"], rh = c["resized_height"];
    const std::string frames =
        ReadFile(DataPath("video/ref/" + c["frames_file"].get<std::string>()));
    const std::string resized =
        ReadFile(DataPath("video/ref/" + c["resized_file"].get<std::string>()));
    const size_t n = c["frames"].size();
    ASSERT_EQ(frames.size(), n * 3 * w * h);
    ASSERT_EQ(resized.size(), n * 3 * rw * rh);
    vision::ImageGrid grid;
    grid.patch_rows = rh / 16;
    grid.patch_cols = rw / 16;
    double worst = 0;
    for (size_t f = 0; f < n; ++f) {
      vision::RgbImage im;
      im.width = w;
      im.height = h;
      im.pixels.assign(frames.begin() + f * 3 * w * h, frames.begin() + (f + 1) * 3 * w * h);
      absl::StatusOr<std::vector<float>> ours =
          vision::PreprocessToGrid(im, Tower()->config(), grid);
      ASSERT_TRUE(ours.ok()) << ours.status();
      const std::vector<float> pil =
          Normalise(reinterpret_cast<const uint8_t*>(resized.data()) + f * 3 * rw * rh, rw, rh);
      worst = std::max(worst, MaxAbsDiff(*ours, pil));
    }
    // One level of 255 is 2/255 after normalisation.
    std::printf("%s: resized frames vs PIL: max |diff| %.4f (%.1f levels)\n",
                c["name"].get<std::string>().c_str(), worst, worst * 255 / 2);
    EXPECT_LE(worst, 2.0 / 255 + 1e-6);
  }
}

// The tower on the reference's own pixels: every stage of the first pair, the embeddings of all.
TEST(VideoConformance, EveryStageOfTheTowerOnFramePairs) {
  ThreadPool pool(2);
  for (const Json& c : Reference()["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const int rw = c["resized_width"], rh = c["resized_height"];
    const std::string resized =
        ReadFile(DataPath("video/ref/" + c["resized_file"].get<std::string>()));
    const auto* px = reinterpret_cast<const uint8_t*>(resized.data());
    const size_t frame = size_t{3} * rw * rh;
    for (size_t p = 0; p < c["pairs"].size(); ++p) {
      const Json& files = c["pairs"][p];
      ops::ComputeContext ctx(&pool, ops::MathMode::kReference);
      std::map<std::string, std::vector<float>> seen;
      ctx.set_observer([&](absl::string_view n, const float* data, int64_t rows, int64_t width) {
        seen[std::string(n)].assign(data, data + rows * width);
      });
      const std::vector<float> first = Normalise(px + 2 * p * frame, rw, rh);
      const std::vector<float> second = Normalise(px + (2 * p + 1) * frame, rw, rh);
      absl::StatusOr<vision::ImageEmbedding> e =
          Tower()->EncodeFramePair(first, second, rh, rw, ctx);
      ASSERT_TRUE(e.ok()) << e.status();
      for (const std::string& stage : Stages()) {
        if (!files.contains(stage)) continue;
        const std::vector<float> ref = ReadF32("video/ref/" + files[stage].get<std::string>());
        const double d = MaxAbsDiff(seen[stage], ref);
        if (p == 0)
          std::printf("%s pair %zu %-12s max |diff| %.2e\n", name.c_str(), p, stage.c_str(), d);
        EXPECT_LE(d, stage == "embd" ? 5e-5 : 1e-4) << "pair " << p << " " << stage;
      }
      EXPECT_EQ(MaxAbsDiff(e->data, seen["embd"]), 0.0);
    }
  }
}

// From the file: our decoder, our resize, the tower.
TEST(VideoConformance, EndToEndFromTheFile) {
  ThreadPool pool(2);
  for (const Json& c : Reference()["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    auto bytes = std::make_shared<const std::string>(ReadFile(DataPath("video/" + name)));
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(*bytes), {});
    ASSERT_TRUE(info.ok());
    absl::StatusOr<VideoPlan> plan = PlanVideo(*info, Tower()->config(), {});
    ASSERT_TRUE(plan.ok());
    PairEncoder pairs(Tower(), FileFrames(bytes, *info, {}, name), *plan);
    ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
    ASSERT_EQ(static_cast<size_t>(plan->n_pairs()), c["pairs"].size());
    double worst = 0;
    for (int64_t p = 0; p < plan->n_pairs(); ++p) {
      absl::StatusOr<std::vector<float>> e = pairs.EncodePair(p, ctx);
      ASSERT_TRUE(e.ok()) << e.status();
      worst = std::max(
          worst, MaxAbsDiff(*e, ReadF32("video/ref/" + c["pairs"][p]["embd"].get<std::string>())));
    }
    std::printf("%s: embeddings from the file vs the specification: max |diff| %.2e\n",
                name.c_str(), worst);
    EXPECT_LE(worst, 2e-3);
  }
}

// The prompt: the template's text, the processor's expansion, its tokens and their positions.
TEST(VideoConformance, PromptTokensAndPositions) {
  auto file = gguf::GgufFile::Open(DataPath("models/tiny-qwen35-f32.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = tokenizer::Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto tmpl = chat::ChatTemplate::FromGguf(**file);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<multimodal::ImageTokenIds> ids = multimodal::FindImageTokenIds(**tok);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->video_pad, Reference()["video_pad"].get<int32_t>());
  const auto chat = nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "user", "content": [{"type": "video"},
          {"type": "text", "text": "Describe this video."}]}]})");
  absl::StatusOr<std::string> rendered = (*tmpl)->Render(chat);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  for (const Json& c : Reference()["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    EXPECT_EQ(*rendered, c["prompt"].get<std::string>());
    const std::string bytes = ReadFile(DataPath("video/" + c["name"].get<std::string>()));
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {});
    ASSERT_TRUE(info.ok());
    absl::StatusOr<VideoPlan> plan = PlanVideo(*info, Tower()->config(), {});
    ASSERT_TRUE(plan.ok());
    absl::StatusOr<std::string> text =
        multimodal::ExpandVideoText(*rendered, {plan->pair_times}, "chat");
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c["expanded_text"].get<std::string>());
    std::vector<int32_t> tokens = (*tok)->Encode(*text, /*parse_special=*/true);
    const std::vector<vision::ImageGrid> grids(plan->n_pairs(), plan->grid);
    absl::StatusOr<multimodal::VisionSpans> spans =
        multimodal::ExpandVisionPads(tokens, ids->image_pad, {}, ids->video_pad, grids, "chat");
    ASSERT_TRUE(spans.ok()) << spans.status();
    EXPECT_EQ(tokens, c["token_ids"].get<std::vector<int32_t>>());
    absl::StatusOr<std::vector<int32_t>> pos = model::MropePositions(
        static_cast<int64_t>(tokens.size()), spans->all(), /*start=*/0, nullptr);
    ASSERT_TRUE(pos.ok()) << pos.status();
    const auto ref = c["positions"].get<std::vector<std::vector<int32_t>>>();
    ASSERT_EQ(ref.size(), tokens.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      for (int s = 0; s < 3; ++s) {
        ASSERT_EQ((*pos)[4 * i + s], ref[i][s]) << "token " << i << " stream " << s;
      }
    }
  }
}

// An image sent as a video of two identical frames gives exactly the image's embeddings.
TEST(VideoConformance, AnImageIsATwoFrameVideoOfItself) {
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  for (const char* name : {"img_128x128", "img_200x130"}) {
    SCOPED_TRACE(name);
    const std::string png = ReadFile(DataPath(absl::StrCat("vision/", name, ".png")));
    absl::StatusOr<vision::RgbImage> rgb = vision::DecodeImage(Bytes(png));
    ASSERT_TRUE(rgb.ok());
    absl::StatusOr<vision::ImageEmbedding> image = Tower()->Encode(*rgb, {}, ctx);
    ASSERT_TRUE(image.ok()) << image.status();
    absl::StatusOr<VideoPlan> plan =
        PlanFrames({0.0, 0.0}, rgb->width, rgb->height, Tower()->config(), {});
    ASSERT_TRUE(plan.ok());
    ASSERT_EQ(plan->grid.patch_rows, image->grid.patch_rows);
    ASSERT_EQ(plan->grid.patch_cols, image->grid.patch_cols);
    PairEncoder pairs(Tower(), ImageFrames({png, png}, rgb->width, rgb->height, {}, "video"),
                      *plan);
    absl::StatusOr<std::vector<float>> video = pairs.EncodePair(0, ctx);
    ASSERT_TRUE(video.ok()) << video.status();
    ASSERT_EQ(video->size(), image->data.size());
    EXPECT_EQ(std::memcmp(video->data(), image->data.data(), video->size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace qwen::video

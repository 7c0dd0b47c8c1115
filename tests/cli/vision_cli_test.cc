// `qwen generate --mmproj --image`: image prompts end to end, against llama.cpp's references.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::testing {
namespace {

constexpr int kVocab = 1024;

std::string Qwen() { return BinPath("qwen"); }

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/qwen_vision_cli_", getpid(), "_", name);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

struct Reference {
  std::vector<int32_t> greedy;
  std::vector<float> prompt_logits;  // [n_prompt, V]
  std::vector<float> greedy_logits;  // [17, V]
  int64_t image_begin = 0;
  int64_t n_prompt = 0;
};

Reference LoadReference(const std::string& name) {
  const auto j = nlohmann::json::parse(ReadFile(DataPath("vision/ref_f32_nofa/reference.json")));
  Reference r;
  for (const auto& c : j["cases"]) {
    if (c["name"] != name) continue;
    r.greedy = c["greedy"].get<std::vector<int32_t>>();
    r.prompt_logits =
        Floats(ReadFile(DataPath("vision/ref_f32_nofa/" + name + ".prompt_logits.f32")));
    r.greedy_logits =
        Floats(ReadFile(DataPath("vision/ref_f32_nofa/" + name + ".greedy_logits.f32")));
    r.n_prompt = c["n_prompt_tokens"];
    for (const auto& t : c["prompt_layout"]) {
      if (t["kind"] == "image") break;
      ++r.image_begin;
    }
  }
  return r;
}

double MaxDiff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, double{std::fabs(a[i] - b[i])});
  return m;
}

std::string Base() {
  return absl::StrCat(Qwen(), " generate --threads 2 --model ",
                      DataPath("models/tiny-qwen35-f32.gguf"), " --mmproj ",
                      DataPath("models/mmproj-tiny-qwen35-f32.gguf"));
}

std::string ChatFile() {
  const std::string path = TempPath("chat.json");
  WriteFile(path,
            R"({"messages": [{"role": "user", "content": [{"type": "image"},)"
            R"( {"type": "text", "text": "Describe this."}]}], "add_generation_prompt": true})");
  return path;
}

// img_128x128 needs no resize in either processor, so the whole pipeline (decode, encoder,
// placeholder expansion, M-RoPE) must land near llama.cpp.
TEST(GenerateImage, TeacherForcedLogitsMatchLlamaCpp) {
  const Reference ref = LoadReference("img_128x128");
  ASSERT_EQ(ref.n_prompt, 40);
  const std::string dump = TempPath("logits.f32");
  CommandResult r = RunCommand(absl::StrCat(
      Base(), " --image ", DataPath("vision/img_128x128.png"), " --chat ", ChatFile(),
      " --json --teacher_force ", absl::StrJoin(ref.greedy, ","), " --dump_logits ", dump));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["prompt_tokens"].size(), 40u);
  ASSERT_EQ(j["images"].size(), 1u);
  EXPECT_EQ(j["images"][0]["token_offset"], 5);
  EXPECT_EQ(j["images"][0]["tokens"], 16);
  EXPECT_EQ(j["images"][0]["positions"], 4);
  const std::vector<float> ours = Floats(ReadFile(dump));
  std::remove(dump.c_str());
  ASSERT_EQ(ours.size(), size_t{40 + 16} * kVocab);
  double image_and_later = 0;
  for (int64_t row = ref.image_begin; row < ref.n_prompt; ++row) {
    image_and_later = std::max(
        image_and_later,
        MaxDiff(ours.data() + row * kVocab, ref.prompt_logits.data() + row * kVocab, kVocab));
  }
  const double last = MaxDiff(ours.data() + 39 * kVocab, ref.greedy_logits.data(), kVocab);
  double greedy_rows = 0;
  for (int g = 1; g < 16; ++g) {
    greedy_rows = std::max(greedy_rows, MaxDiff(ours.data() + (39 + g) * kVocab,
                                                ref.greedy_logits.data() + g * kVocab, kVocab));
  }
  std::printf(
      "max |diff|: image and later prompt rows %.4f, last prompt row %.4f, greedy rows %.4f\n",
      image_and_later, last, greedy_rows);
  EXPECT_LT(image_and_later, 0.3);
  EXPECT_LT(last, 0.1);
  EXPECT_LT(greedy_rows, 0.3);
}

TEST(GenerateImage, GreedyContinuationMatchesWhereTheMarginIsClear) {
  const Reference ref = LoadReference("img_128x128");
  CommandResult r =
      RunCommand(absl::StrCat(Base(), " --image ", DataPath("vision/img_128x128.png"), " --chat ",
                              ChatFile(), " --json --temperature 0 --max_tokens 16"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto tokens = nlohmann::json::parse(r.out)["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(tokens.size(), 16u);
  for (size_t g = 0; g < 16; ++g) {
    std::vector<float> row(ref.greedy_logits.begin() + g * kVocab,
                           ref.greedy_logits.begin() + (g + 1) * kVocab);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
    if (row[0] - row[1] <= 0.1f) break;  // past here a tiny difference may pick the other
    EXPECT_EQ(tokens[g], ref.greedy[g]) << "step " << g;
  }
}

// Two images in one raw prompt: each placeholder gets its image's tokens and positions.
TEST(GenerateImage, TwoImagesInOnePrompt) {
  const std::string ph = "<|vision_start|><|image_pad|><|vision_end|>";
  CommandResult r = RunCommand(absl::StrCat(Base(), " --image ", DataPath("vision/img_128x128.png"),
                                            ",", DataPath("vision/img_200x130.png"),
                                            " --prompt '<|im_start|>user\n", ph, "and", ph,
                                            "<|im_end|>\n' --json --temperature 0 --max_tokens 2"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["images"].size(), 2u);
  EXPECT_EQ(j["images"][0]["tokens"], 16);
  EXPECT_EQ(j["images"][0]["positions"], 4);
  EXPECT_EQ(j["images"][1]["tokens"], 24);  // 200x130 -> 192x128 -> 6 x 4 tokens
  EXPECT_EQ(j["images"][1]["rows"], 4);
  EXPECT_EQ(j["images"][1]["cols"], 6);
  EXPECT_EQ(j["images"][1]["positions"], 6);
  // Each image's tokens sit between its <|vision_start|> and <|vision_end|>.
  const auto ids = j["prompt_tokens"].get<std::vector<int32_t>>();
  for (int k = 0; k < 2; ++k) {
    const int64_t offset = j["images"][k]["token_offset"], n = j["images"][k]["tokens"];
    ASSERT_GT(offset, 0);
    ASSERT_LT(offset + n, static_cast<int64_t>(ids.size()));
    EXPECT_EQ(ids[offset - 1], 1007);
    EXPECT_EQ(ids[offset + n], 1008);
  }
  size_t pads = 0;
  for (int32_t id : ids) pads += id == 1010;
  EXPECT_EQ(pads, 40u);
  EXPECT_EQ(j["tokens"].size(), 2u);
}

TEST(GenerateImage, RefusalsSayWhy) {
  const std::string chat = ChatFile();
  // An image without the vision tower.
  CommandResult r = RunCommand(
      absl::StrCat(Qwen(), " generate --model ", DataPath("models/tiny-qwen35-f32.gguf"),
                   " --image ", DataPath("vision/img_128x128.png"), " --chat ", chat, " 2>&1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "--image needs a vision tower: --mmproj")) << r.out;
  // Not an image.
  const std::string junk = TempPath("junk.png");
  WriteFile(junk, "this is not an image at all");
  r = RunCommand(absl::StrCat(Base(), " --image ", junk, " --chat ", chat, " 2>&1"));
  std::remove(junk.c_str());
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, junk)) << r.out;
  // More images than placeholders.
  r = RunCommand(absl::StrCat(Base(), " --image ", DataPath("vision/img_128x128.png"), ",",
                              DataPath("vision/img_128x128.png"), " --chat ", chat, " 2>&1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "1 image placeholders (<|image_pad|>) for 2 images"))
      << r.out;
  // A vision tower of another width.
  r = RunCommand(absl::StrCat(Qwen(), " generate --model ", DataPath("models/tiny-qwen35-f32.gguf"),
                              " --mmproj ", DataPath("models/tiny-qwen35-f32.gguf"), " --chat ",
                              chat, " 2>&1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "mmproj")) << r.out;
  std::remove(chat.c_str());
}

}  // namespace
}  // namespace qwen::testing

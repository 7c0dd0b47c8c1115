// The text model fed image embeddings with M-RoPE positions, against llama.cpp's logits
// (tests/data/vision: llama.cpp's own image embeddings and the 4-stream positions it used).
#include <cmath>
#include <cstdio>
#include <cstring>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/model_runner.h"

namespace qwen::testing {
namespace {

constexpr int32_t kImagePad = 1010;  // <|image_pad|> of the tiny vocabulary

std::vector<float> ReadFloats(const std::string& rel) {
  const std::string bytes = ReadFile(DataPath(rel));
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

int Argmax(const float* row, int64_t n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// One image case of reference.json: the prompt as ids (image rows as <|image_pad|>), the
// recorded positions, the image's place, its embeddings and the reference logits.
struct ImageCase {
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;  // [n, 4]
  model::ImageSpan span;
  int64_t next_position = 0;  // n_past_after_prompt
  std::vector<float> embd;    // [rows * cols, n_embd]
  std::vector<float> prompt_logits;
};

std::vector<ImageCase> LoadCases() {
  const auto j = nlohmann::json::parse(ReadFile(DataPath("vision/ref_f32_nofa/reference.json")));
  std::vector<ImageCase> out;
  for (const auto& c : j["cases"]) {
    const std::string name = c["name"];
    if (name != "img_128x128" && name != "img_200x130") continue;  // the ones copied
    ImageCase ic;
    ic.name = name;
    int64_t first_image = -1;
    for (const auto& t : c["prompt_layout"]) {
      const bool image = t["kind"] == "image";
      if (image && first_image < 0) first_image = static_cast<int64_t>(ic.tokens.size());
      ic.tokens.push_back(image ? kImagePad : t["token"].get<int32_t>());
      for (int s = 0; s < 4; ++s) ic.positions.push_back(t["pos"][s].get<int32_t>());
    }
    const int pw = c["preproc_width"].get<int>() / 32, ph = c["preproc_height"].get<int>() / 32;
    ic.span = {first_image, ph, pw};
    ic.next_position = c["n_past_after_prompt"];
    ic.embd = ReadFloats("vision/ref_f32_nofa/" + c["embd_file"].get<std::string>());
    ic.prompt_logits =
        ReadFloats("vision/ref_f32_nofa/" + c["prompt_logits_file"].get<std::string>());
    out.push_back(std::move(ic));
  }
  return out;
}

// Teacher-forced logits of every prompt row, fed in pieces of `chunk` tokens.
std::vector<float> RunPrompt(model::Model& m, ops::ComputeContext& ctx, const ImageCase& c,
                             int64_t chunk, int64_t* next_position) {
  const int64_t n = static_cast<int64_t>(c.tokens.size());
  const int64_t V = m.config().n_vocab, E = m.config().n_embd;
  std::vector<const float*> rows(n, nullptr);
  for (int64_t i = 0; i < int64_t{c.span.rows} * c.span.cols; ++i) {
    rows[c.span.offset + i] = c.embd.data() + i * E;
  }
  auto state = m.NewState(n + 8);
  EXPECT_TRUE(state.ok());
  std::vector<float> logits(n * V);
  for (int64_t p = 0; p < n; p += chunk) {
    const int64_t k = std::min(chunk, n - p);
    model::Segment seg{state->get(), absl::MakeConstSpan(c.tokens.data() + p, k),
                       model::Logits::kAll, absl::MakeConstSpan(c.positions.data() + 4 * p, 4 * k),
                       absl::MakeConstSpan(rows.data() + p, k)};
    absl::Status s = m.Forward(ctx, {seg}, logits.data() + p * V);
    EXPECT_TRUE(s.ok()) << s;
  }
  *next_position = (*state)->next_position();
  return logits;
}

TEST(MropeConformance, PositionsMatchTheRecordedLayout) {
  for (const ImageCase& c : LoadCases()) {
    int64_t next = 0;
    auto pos = model::MropePositions(static_cast<int64_t>(c.tokens.size()), {c.span}, 0, &next);
    ASSERT_TRUE(pos.ok()) << pos.status();
    EXPECT_EQ(*pos, c.positions) << c.name;
    EXPECT_EQ(next, c.next_position) << c.name;
  }
}

TEST(MropeConformance, TwoImagesGetTheirOwnPositions) {
  // text(2) image 2x3 text(1) image 4x1 text(2), starting at 10.
  int64_t next = 0;
  auto pos = model::MropePositions(2 + 6 + 1 + 4 + 2, {{2, 2, 3}, {9, 4, 1}}, 10, &next);
  ASSERT_TRUE(pos.ok()) << pos.status();
  const std::vector<int32_t> want = {10, 10, 10, 10, 11, 11, 11, 11,                 // text
                                     12, 12, 12, 0,  12, 12, 13, 0,  12, 12, 14, 0,  // row 0
                                     12, 13, 12, 0,  12, 13, 13, 0,  12, 13, 14, 0,  // row 1
                                     15, 15, 15, 15,                                 // text
                                     16, 16, 16, 0,  16, 17, 16, 0,  16, 18, 16, 0,
                                     16, 19, 16, 0,  // 4x1
                                     20, 20, 20, 20, 21, 21, 21, 21};
  EXPECT_EQ(*pos, want);
  EXPECT_EQ(next, 22);
  EXPECT_FALSE(model::MropePositions(5, {{2, 2, 2}}, 0, nullptr).ok());  // runs past the end
  EXPECT_FALSE(model::MropePositions(9, {{4, 1, 2}, {3, 1, 1}}, 0, nullptr).ok());  // overlap
}

TEST(MropeConformance, StoredEmbeddingsGiveTheReferenceLogits) {
  LoadedModel m = LoadModel("models/tiny-qwen35-f32.gguf");
  ASSERT_NE(m.model, nullptr);
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  const int64_t V = m.model->config().n_vocab;
  const std::vector<ImageCase> cases = LoadCases();
  ASSERT_EQ(cases.size(), 2u);
  for (const ImageCase& c : cases) {
    // All at once, and in pieces that cut through the image.
    for (int64_t chunk : {int64_t{1000}, int64_t{7}}) {
      int64_t next = 0;
      const std::vector<float> ours = RunPrompt(*m.model, ctx, c, chunk, &next);
      EXPECT_EQ(next, c.next_position);
      ASSERT_EQ(ours.size(), c.prompt_logits.size());
      double worst = 0;
      int argmax_agree = 0;
      const int64_t rows = static_cast<int64_t>(c.tokens.size());
      for (int64_t r = 0; r < rows; ++r) {
        const float* a = ours.data() + r * V;
        const float* b = c.prompt_logits.data() + r * V;
        for (int64_t v = 0; v < V; ++v) worst = std::max(worst, double{std::fabs(a[v] - b[v])});
        argmax_agree += Argmax(a, V) == Argmax(b, V);
      }
      std::printf("%s chunk %ld: max |diff| %.5f, argmax %d/%ld\n", c.name.c_str(),
                  static_cast<long>(chunk), worst, argmax_agree, static_cast<long>(rows));
      EXPECT_LT(worst, 0.02) << c.name;
      EXPECT_EQ(argmax_agree, rows) << c.name;
    }
  }
}

// Text-only batches given explicit (p, p, p, p) positions take the M-RoPE path, which must
// give exactly the plain rotary's logits.
TEST(MropeConformance, EqualStreamsAreBitIdenticalToPlainRope) {
  LoadedModel m = LoadModel("models/tiny-qwen35-f32.gguf");
  ASSERT_NE(m.model, nullptr);
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  const std::vector<int32_t> tokens = {999, 543, 260, 10, 68, 295, 99, 483, 98, 101, 574, 46};
  const int64_t n = static_cast<int64_t>(tokens.size()), V = m.model->config().n_vocab;
  const std::vector<float> plain = TeacherForce(*m.model, ctx, tokens);
  std::vector<int32_t> pos;
  for (int32_t p = 0; p < n; ++p) pos.insert(pos.end(), {p, p, p, p});
  auto state = m.model->NewState(n + 4);
  ASSERT_TRUE(state.ok());
  std::vector<float> multi(n * V);
  model::Segment seg{state->get(), absl::MakeConstSpan(tokens), model::Logits::kAll,
                     absl::MakeConstSpan(pos)};
  ASSERT_TRUE(m.model->Forward(ctx, {seg}, multi.data()).ok());
  EXPECT_EQ(std::memcmp(plain.data(), multi.data(), plain.size() * sizeof(float)), 0);
  EXPECT_EQ((*state)->next_position(), n);
}

}  // namespace
}  // namespace qwen::testing

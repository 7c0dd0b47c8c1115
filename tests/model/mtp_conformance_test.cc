// The MTP head's draft logits against llama.cpp's MTP graph (its draft-mtp speculative type) on
// tiny-qwen35-mtp-q3_k_m.gguf: the same prompt fed to the trunk with the head caught up, then
// k drafts after the same token. tests/data/reference/llama.cpp/mtp/README.md says how the
// numbers were made.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/model_runner.h"
#include "tests/model/reference_data.h"

namespace qwen::testing {
namespace {

std::vector<float> ReadFloats(const std::string& rel) {
  const std::string bytes = ReadFile(DataPath(rel));
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

TEST(MtpConformance, DraftLogitsMatchLlamaCpp) {
  const std::string dir = "reference/llama.cpp/mtp";
  const auto ref = nlohmann::json::parse(ReadFile(DataPath(dir + "/reference.json")));
  LoadedModel m = LoadModel(ref["model"].get<std::string>());
  ASSERT_NE(m.model, nullptr);
  ASSERT_TRUE(m.model->has_mtp());
  const int64_t V = m.model->config().n_vocab;
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  int compared = 0, agree = 0, rows = 0;
  std::vector<float> ours_all, ref_all;
  for (const auto& c : ref["cases"]) {
    const std::vector<int32_t> prompt = c["prompt"].get<std::vector<int32_t>>();
    const int k = c["k"].get<int>();
    const std::vector<int32_t> ref_drafts = c["drafts"].get<std::vector<int32_t>>();
    const std::vector<float> ref_logits =
        ReadFloats(dir + "/" + c["logits_file"].get<std::string>());
    ASSERT_EQ(ref_logits.size(), static_cast<size_t>(k * V));
    auto state = m.model->NewState(static_cast<int64_t>(prompt.size()) + k + 8);
    ASSERT_TRUE(state.ok());
    model::Segment seg{state->get(), absl::MakeConstSpan(prompt), model::Logits::kLast};
    seg.mtp = true;
    std::vector<float> last(V);
    ASSERT_TRUE(m.model->Forward(ctx, {seg}, last.data()).ok());
    // The trunk agrees too (the head's input is its hidden row).
    const std::vector<float> ref_last = ReadFloats(dir + "/" + c["trunk_file"].get<std::string>());
    EXPECT_LT(RelativeRms(last.data(), ref_last.data(), V), 0.2);
    std::vector<int32_t> drafts;
    std::vector<float> logits;
    model::DraftSlot slot{state->get(), c["next"].get<int32_t>(), k, &drafts, &logits};
    ASSERT_TRUE(m.model->MtpDraft(ctx, {slot}).ok());
    // Row i is comparable while the drafts before it agree (each step feeds the previous draft).
    for (int i = 0; i < k; ++i) {
      const float* r = ref_logits.data() + i * V;
      const float* o = logits.data() + i * V;
      ours_all.insert(ours_all.end(), o, o + V);
      ref_all.insert(ref_all.end(), r, r + V);
      ++rows;
      if (Top2Margin(r, V) > 0.05f) {
        ++compared;
        agree += Argmax(o, V) == Argmax(r, V);
      }
      if (drafts[i] != ref_drafts[i]) break;
    }
  }
  const double rms = RelativeRms(ours_all.data(), ref_all.data(), ours_all.size());
  std::printf("MTP draft logits: %d rows, rel_rms %.5f, argmax %d/%d confident rows\n", rows, rms,
              agree, compared);
  // The fast path's tolerance against llama.cpp (tests/model/forward_conformance_test.cc).
  EXPECT_LT(rms, 0.2);
  ASSERT_GT(compared, 0);
  EXPECT_GE(static_cast<double>(agree) / compared, 0.75) << agree << " of " << compared;
}

}  // namespace
}  // namespace qwen::testing

// Runs a model on token sequences for the tests: teacher-forced logits in chunks.
#ifndef QWEN_TESTS_MODEL_MODEL_RUNNER_H_
#define QWEN_TESTS_MODEL_MODEL_RUNNER_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/model.h"
#include "tests/common/test_util.h"

namespace qwen::testing {

struct LoadedModel {
  std::shared_ptr<const gguf::GgufFile> file;
  std::unique_ptr<model::Model> model;
};

// `packed_dir`: where to keep the packed copy of the weights (model::LoadOptions); empty: none.
inline LoadedModel LoadModel(const std::string& rel, const std::string& packed_dir = "") {
  LoadedModel m;
  auto f = gguf::GgufFile::Open(DataPath(rel));
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return m;
  m.file = std::move(*f);
  model::LoadOptions options;
  options.packed_dir = packed_dir;
  auto model = model::Model::Load(m.file, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (model.ok()) m.model = std::move(*model);
  return m;
}

// Feeds `tokens` in pieces of `chunk` (0: all at once) and returns one row of logits per token.
inline std::vector<float> TeacherForce(model::Model& model, ops::ComputeContext& ctx,
                                       const std::vector<int32_t>& tokens, int64_t chunk = 0,
                                       model::KvType kv = model::KvType::kF16) {
  const int64_t V = model.config().n_vocab;
  std::vector<float> logits(tokens.size() * V);
  auto state = model.NewState(static_cast<int64_t>(tokens.size()) + 8, kv);
  EXPECT_TRUE(state.ok());
  if (chunk <= 0) chunk = static_cast<int64_t>(tokens.size());
  for (size_t p = 0; p < tokens.size(); p += chunk) {
    const size_t n = std::min<size_t>(chunk, tokens.size() - p);
    model::Segment seg{state->get(), absl::MakeConstSpan(tokens.data() + p, n),
                       model::Logits::kAll};
    absl::Status s = model.Forward(ctx, {seg}, logits.data() + p * V);
    EXPECT_TRUE(s.ok()) << s;
  }
  return logits;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_MODEL_MODEL_RUNNER_H_

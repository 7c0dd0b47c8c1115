// Properties of the forward pass on the tiny F32 fixture: chunking, state, batching, errors.
#include <cstring>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "inference/gguf/gguf_file.h"
#include "tests/model/model_runner.h"
#include "tests/model/reference_data.h"

namespace qwen::testing {
namespace {

constexpr char kF32[] = "models/tiny-qwen35-f32.gguf";

class ForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = LoadModel(kF32);
    ASSERT_NE(m_.model, nullptr);
  }
  LoadedModel m_;
  ThreadPool pool_{2};
  ops::ComputeContext ctx_{&pool_, ops::MathMode::kFast};
};

// Prefill at once, in chunks, or token by token: the same logits.
TEST_F(ForwardTest, ChunkingDoesNotChangeLogits) {
  const std::vector<ReferenceCase> cases = LoadReference("reference/llama.cpp/f32");
  const ReferenceCase& long_case = cases[2];
  ASSERT_EQ(long_case.name, "long");
  const int64_t V = m_.model->config().n_vocab;
  const std::vector<float> whole = TeacherForce(*m_.model, ctx_, long_case.fed);
  for (int64_t chunk : {1, 7, 64, 512}) {
    const std::vector<float> chunked = TeacherForce(*m_.model, ctx_, long_case.fed, chunk);
    EXPECT_LT(RelativeRms(chunked.data(), whole.data(), whole.size()), 1e-5) << "chunk " << chunk;
    for (size_t r = 0; r < long_case.fed.size(); ++r) {
      if (Top2Margin(whole.data() + r * V, V) > 1e-3f) {
        ASSERT_EQ(Argmax(chunked.data() + r * V, V), Argmax(whole.data() + r * V, V))
            << "chunk " << chunk << " row " << r;
      }
    }
  }
}

TEST_F(ForwardTest, F32KvCacheMatchesF16) {
  const ReferenceCase c = LoadReference("reference/llama.cpp/f32")[1];
  const std::vector<float> f16 = TeacherForce(*m_.model, ctx_, c.fed, 0, model::KvType::kF16);
  const std::vector<float> f32 = TeacherForce(*m_.model, ctx_, c.fed, 0, model::KvType::kF32);
  EXPECT_LT(RelativeRms(f16.data(), f32.data(), f32.size()), 2e-3);
  EXPECT_LT(RelativeRms(f32.data(), c.logits.data(), f32.size()), 5e-3);
}

// Two sequences in one batch give what each gives alone.
TEST_F(ForwardTest, BatchedSegmentsMatchSeparateRuns) {
  const std::vector<ReferenceCase> cases = LoadReference("reference/llama.cpp/f32");
  const int64_t V = m_.model->config().n_vocab;
  const std::vector<int32_t>& a = cases[0].fed;  // 44 tokens
  const std::vector<int32_t>& b = cases[3].fed;  // 108 tokens
  const std::vector<float> alone_a = TeacherForce(*m_.model, ctx_, a);
  const std::vector<float> alone_b = TeacherForce(*m_.model, ctx_, b);
  auto sa = m_.model->NewState(256);
  auto sb = m_.model->NewState(256);
  ASSERT_TRUE(sa.ok() && sb.ok());
  // First a prompt chunk of each, then decode steps of both together.
  const size_t pa = 20, pb = 60;
  std::vector<float> logits((pa + pb) * V);
  std::vector<model::Segment> segs = {
      {sa->get(), absl::MakeConstSpan(a.data(), pa), model::Logits::kAll},
      {sb->get(), absl::MakeConstSpan(b.data(), pb), model::Logits::kAll}};
  ASSERT_TRUE(m_.model->Forward(ctx_, segs, logits.data()).ok());
  // Different segment lengths take different paths (chunked or recurrent delta rule, sgemm of
  // other shapes), so equality holds to float rounding.
  EXPECT_LT(RelativeRms(logits.data(), alone_a.data(), pa * V), 5e-5);
  EXPECT_LT(RelativeRms(logits.data() + pa * V, alone_b.data(), pb * V), 5e-5);
  for (size_t i = 0; i < 10; ++i) {
    std::vector<model::Segment> step = {
        {sa->get(), absl::MakeConstSpan(&a[pa + i], 1), model::Logits::kLast},
        {sb->get(), absl::MakeConstSpan(&b[pb + i], 1), model::Logits::kLast}};
    std::vector<float> out(2 * V);
    ASSERT_TRUE(m_.model->Forward(ctx_, step, out.data()).ok());
    EXPECT_LT(RelativeRms(out.data(), alone_a.data() + (pa + i) * V, V), 5e-5);
    EXPECT_LT(RelativeRms(out.data() + V, alone_b.data() + (pb + i) * V, V), 5e-5);
  }
}

TEST_F(ForwardTest, ResetAndCopyState) {
  const ReferenceCase c = LoadReference("reference/llama.cpp/f32")[0];
  const int64_t V = m_.model->config().n_vocab;
  auto s = m_.model->NewState(128);
  ASSERT_TRUE(s.ok());
  model::SequenceState& state = **s;
  std::vector<float> first(c.fed.size() * V), again(c.fed.size() * V);
  model::Segment seg{&state, absl::MakeConstSpan(c.fed), model::Logits::kAll};
  ASSERT_TRUE(m_.model->Forward(ctx_, {seg}, first.data()).ok());
  EXPECT_EQ(state.n_past(), static_cast<int64_t>(c.fed.size()));
  state.Reset();
  EXPECT_EQ(state.n_past(), 0);
  ASSERT_TRUE(m_.model->Forward(ctx_, {seg}, again.data()).ok());
  EXPECT_EQ(first, again);

  // Fork after 20 tokens: both copies continue identically.
  state.Reset();
  model::Segment head{&state, absl::MakeConstSpan(c.fed.data(), 20), model::Logits::kLast};
  std::vector<float> tmp(V);
  ASSERT_TRUE(m_.model->Forward(ctx_, {head}, tmp.data()).ok());
  auto fork = m_.model->NewState(128);
  ASSERT_TRUE(fork.ok());
  ASSERT_TRUE((*fork)->CopyFrom(state).ok());
  EXPECT_EQ((*fork)->n_past(), 20);
  std::vector<float> x(V), y(V);
  model::Segment next_a{&state, absl::MakeConstSpan(&c.fed[20], 1), model::Logits::kLast};
  model::Segment next_b{fork->get(), absl::MakeConstSpan(&c.fed[20], 1), model::Logits::kLast};
  ASSERT_TRUE(m_.model->Forward(ctx_, {next_a}, x.data()).ok());
  ASSERT_TRUE(m_.model->Forward(ctx_, {next_b}, y.data()).ok());
  EXPECT_EQ(x, y);
  EXPECT_LT(RelativeRms(x.data(), first.data() + 20 * V, V), 5e-5);
  // A state of another capacity cannot be copied.
  auto other = m_.model->NewState(64);
  EXPECT_FALSE((*other)->CopyFrom(state).ok());
}

// A prompt chunk that needs no logits (Logits::kNone, the engine's and `qwen generate`'s prompt
// chunks before the last). Found by UBSan in scripts/sanitize address: with no logit rows the
// final-rows buffer is null and the copy into it was memcpy(nullptr, ..., 0).
TEST_F(ForwardTest, ChunkWithoutLogits) {
  const ReferenceCase c = LoadReference("reference/llama.cpp/f32")[0];
  const int64_t V = m_.model->config().n_vocab;
  const int64_t n = static_cast<int64_t>(c.fed.size());
  auto s = m_.model->NewState(128);
  ASSERT_TRUE(s.ok());
  std::vector<float> whole(V), split(V);
  model::Segment all{s->get(), absl::MakeConstSpan(c.fed), model::Logits::kLast};
  ASSERT_TRUE(m_.model->Forward(ctx_, {all}, whole.data()).ok());
  (*s)->Reset();
  model::Segment head{s->get(), absl::MakeConstSpan(c.fed.data(), n - 1), model::Logits::kNone};
  ASSERT_TRUE(m_.model->Forward(ctx_, {head}, nullptr).ok());
  EXPECT_EQ((*s)->n_past(), n - 1);
  model::Segment last{s->get(), absl::MakeConstSpan(&c.fed[n - 1], 1), model::Logits::kLast};
  ASSERT_TRUE(m_.model->Forward(ctx_, {last}, split.data()).ok());
  EXPECT_LT(RelativeRms(split.data(), whole.data(), V), 5e-5);
}

TEST_F(ForwardTest, StateSizeIsReported) {
  const model::ModelConfig& c = m_.model->config();
  const model::StateSize f16 = model::SequenceState::SizeFor(c, 1000, model::KvType::kF16);
  // 2 attention layers x K and V x 1 KV head x 256 dims x 2 bytes.
  EXPECT_EQ(f16.kv_bytes_per_token, 2u * 2 * 256 * 2);
  EXPECT_EQ(f16.kv_bytes_reserved, f16.kv_bytes_per_token * 1000);
  // 6 delta layers x 4 heads x 128 x 128 floats; conv: 6 x 3 x 1024 floats.
  EXPECT_EQ(f16.recurrent_bytes, 6u * 4 * 128 * 128 * 4);
  EXPECT_EQ(f16.conv_bytes, 6u * 3 * 1024 * 4);
  const model::StateSize f32 = model::SequenceState::SizeFor(c, 1000, model::KvType::kF32);
  EXPECT_EQ(f32.kv_bytes_per_token, 2 * f16.kv_bytes_per_token);
}

TEST_F(ForwardTest, RejectsBadBatches) {
  auto s = m_.model->NewState(8);
  ASSERT_TRUE(s.ok());
  std::vector<float> logits(16 * m_.model->config().n_vocab);
  std::vector<int32_t> bad = {1, 2, 5000};
  model::Segment seg{s->get(), absl::MakeConstSpan(bad), model::Logits::kLast};
  absl::Status st = m_.model->Forward(ctx_, {seg}, logits.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "5000")) << st;
  EXPECT_EQ((*s)->n_past(), 0);  // nothing changed
  std::vector<int32_t> many(9, 1);
  model::Segment too_long{s->get(), absl::MakeConstSpan(many), model::Logits::kLast};
  EXPECT_EQ(m_.model->Forward(ctx_, {too_long}, logits.data()).code(),
            absl::StatusCode::kOutOfRange);
  std::vector<int32_t> two = {1, 2};
  model::Segment a{s->get(), absl::MakeConstSpan(two), model::Logits::kLast};
  EXPECT_FALSE(m_.model->Forward(ctx_, {a, a}, logits.data()).ok());
}

// Intermediate tensors against llama.cpp's debug dump of the `short` case.
std::map<std::string, double> LoadIntermediateSums() {
  std::map<std::string, double> sums;
  std::istringstream in(ReadFile(DataPath("intermediate-sums-short-f32.txt")));
  std::string line, name;
  while (std::getline(in, line)) {
    const size_t tag = line.find("common_debug_cb_eval:");
    if (tag != std::string::npos) {
      const size_t eq = line.find(" = (");
      name = line.substr(tag + 21, eq - tag - 21);
      name.erase(0, name.find_first_not_of(' '));
      continue;
    }
    const size_t s = line.find("sum = ");
    if (s != std::string::npos && !name.empty()) {
      // The first tensor of a name in each layer is the one the graph observes.
      if (!sums.count(name)) sums[name] = std::stod(line.substr(s + 6));
      name.clear();
    }
  }
  return sums;
}

TEST_F(ForwardTest, IntermediateTensorsMatchLlamaCpp) {
  const std::map<std::string, double> expected = LoadIntermediateSums();
  ASSERT_GT(expected.size(), 100u);
  std::map<std::string, double> ours;
  ctx_.set_observer([&](absl::string_view name, const float* data, int64_t rows, int64_t width) {
    double s = 0;
    for (int64_t i = 0; i < rows * width; ++i) s += data[i];
    ours[std::string(name)] = s;
  });
  const ReferenceCase c = LoadReference("reference/llama.cpp/f32")[0];
  std::vector<int32_t> prompt = c.prompt;
  TeacherForce(*m_.model, ctx_, prompt);
  ctx_.set_observer(nullptr);
  int compared = 0;
  for (const auto& [name, sum] : ours) {
    auto it = expected.find(name);
    if (it == expected.end()) continue;
    ++compared;
    const double tol = 1e-3 * std::max(1.0, std::fabs(it->second)) + 1e-2;
    EXPECT_NEAR(sum, it->second, tol) << name;
  }
  // Every layer's main tensors are compared (about 12 per layer and some per kind).
  EXPECT_GT(compared, 90);
  for (const char* must : {"attn_norm-0", "conv_output_silu-0", "q_conv_predelta-0", "gate-0",
                           "beta_sigmoid-0", "final_output-0", "Qcur_normed-3", "Kcur_normed-3",
                           "attn_gated-3", "l_out-7", "ffn_swiglu-5"}) {
    EXPECT_TRUE(ours.count(must)) << "not observed: " << must;
    EXPECT_TRUE(expected.count(must)) << "not in llama.cpp's dump: " << must;
  }
}

// Files the engine cannot run are refused with an error that names the problem.
std::string Patched(const std::string& bytes, const std::string& from, const std::string& to) {
  std::string out = bytes;
  const size_t at = out.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  out.replace(at, from.size(), to);
  return out;
}

absl::Status LoadBytes(const std::string& bytes) {
  auto f = gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (!f.ok()) return f.status();
  return model::Model::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*f))).status();
}

TEST(ModelLoad, RefusesWhatItCannotRun) {
  const std::string bytes = ReadFile(DataPath(kF32));
  ASSERT_TRUE(LoadBytes(bytes).ok());
  // The architecture's value follows its key, the u32 type and the u64 length.
  std::string other_arch = bytes;
  const size_t key_at = other_arch.find("general.architecture");
  ASSERT_NE(key_at, std::string::npos);
  other_arch.replace(key_at + 20 + 4 + 8, 6, "llama9");
  absl::Status arch = LoadBytes(other_arch);
  EXPECT_TRUE(absl::StrContains(arch.message(), "architecture")) << arch;
  absl::Status missing = LoadBytes(Patched(bytes, "blk.2.ssm_a", "blk.2.ssm_x"));
  EXPECT_TRUE(absl::StrContains(missing.message(), "blk.2.ssm_a")) << missing;
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  absl::Status renamed = LoadBytes(Patched(bytes, "blk.3.attn_q.weight", "blk.3.attn_x.weight"));
  EXPECT_TRUE(absl::StrContains(renamed.message(), "blk.3.attn_q.weight")) << renamed;
}

TEST(ModelLoad, RefusesShapesThatDisagreeWithMetadata) {
  // feed_forward_length 512 -> 384: every ffn tensor now disagrees.
  std::string bytes = ReadFile(DataPath(kF32));
  auto f = gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(f.ok());
  const std::string key = "qwen35.feed_forward_length";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  uint32_t v = 384;
  std::memcpy(bytes.data() + at + key.size() + 4, &v, 4);  // key, then u32 type, then value
  absl::Status s = LoadBytes(bytes);
  EXPECT_TRUE(absl::StrContains(s.message(), "ffn_")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "shape")) << s;
}

}  // namespace
}  // namespace qwen::testing

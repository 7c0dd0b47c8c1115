// A sequence's logits do not depend on how it is scheduled: one segment, chunks of any size,
// token by token, beside other sequences' segments, on other thread counts, resumed from a
// snapshot of its state, and at every kernel level: the same bits for every row, on every tiny
// fixture model.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "tests/common/isa_levels.h"
#include "tests/model/model_runner.h"

namespace qwen::testing {
namespace {

struct Fixture {
  const char* name;
  const char* path;
};

void PrintTo(const Fixture& f, std::ostream* os) { *os << f.path; }

constexpr int64_t kPromptTokens = 203;

std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// One sequence fed over several forward passes, possibly beside others.
struct Seq {
  std::vector<int32_t> tokens;
  std::unique_ptr<model::SequenceState> state;
  std::vector<float> logits;  // [tokens, V], filled as rows come out
  size_t fed = 0;
};

class ForwardInvariance : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    m_ = LoadModel(std::string("models/") + GetParam().path);
    ASSERT_NE(m_.model, nullptr);
    V_ = m_.model->config().n_vocab;
    prompt_ = RandomTokens(kPromptTokens, 17, static_cast<int32_t>(V_));
  }

  Seq NewSeq(std::vector<int32_t> tokens) {
    Seq s;
    s.tokens = std::move(tokens);
    auto st = m_.model->NewState(static_cast<int64_t>(s.tokens.size()) + 8);
    EXPECT_TRUE(st.ok()) << st.status();
    s.state = std::move(*st);
    s.logits.assign(s.tokens.size() * V_, 0.0f);
    return s;
  }

  // One forward pass with the next `take[i]` tokens of each sequence i (0: not in this pass).
  void Step(std::vector<Seq*> seqs, const std::vector<int64_t>& take,
            ops::ComputeContext* ctx = nullptr) {
    std::vector<model::Segment> segs;
    std::vector<Seq*> in;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int64_t n = std::min<int64_t>(take[i], seqs[i]->tokens.size() - seqs[i]->fed);
      if (n <= 0) continue;
      segs.push_back({seqs[i]->state.get(),
                      absl::MakeConstSpan(seqs[i]->tokens.data() + seqs[i]->fed, n),
                      model::Logits::kAll});
      in.push_back(seqs[i]);
    }
    std::vector<float> out(model::Model::LogitRows(segs) * V_);
    ASSERT_TRUE(m_.model->Forward(ctx != nullptr ? *ctx : ctx_, segs, out.data()).ok());
    int64_t row = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const int64_t n = static_cast<int64_t>(segs[i].tokens.size());
      std::memcpy(in[i]->logits.data() + in[i]->fed * V_, out.data() + row * V_,
                  n * V_ * sizeof(float));
      in[i]->fed += n;
      row += n;
    }
  }

  // The prompt alone in pieces of `chunk` tokens.
  std::vector<float> Chunked(int64_t chunk) {
    Seq s = NewSeq(prompt_);
    while (s.fed < s.tokens.size()) Step({&s}, {chunk});
    return s.logits;
  }

  // Every row bit for bit; on failure, names the first differing row.
  void ExpectSame(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& what) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t r = 0; r < want.size() / V_; ++r) {
      if (std::memcmp(got.data() + r * V_, want.data() + r * V_, V_ * sizeof(float)) != 0) {
        float worst = 0;
        for (int64_t k = 0; k < V_; ++k) {
          worst = std::max(worst, std::fabs(got[r * V_ + k] - want[r * V_ + k]));
        }
        ADD_FAILURE() << what << ": row " << r << " of " << want.size() / V_
                      << " differs (largest logit difference " << worst << ")";
        return;
      }
    }
  }

  LoadedModel m_;
  int64_t V_ = 0;
  std::vector<int32_t> prompt_;
  const std::string level_ = std::string(IsaName(ActiveIsa()));
  ThreadPool pool_{2};
  ops::ComputeContext ctx_{&pool_, ops::MathMode::kFast};
};

TEST_P(ForwardInvariance, SameBitsHoweverTheSequenceIsCut) {
  const std::vector<float> whole = Chunked(kPromptTokens);
  for (int64_t chunk : {1, 7, 64, 200}) {
    ExpectSame(Chunked(chunk), whole, absl::StrCat(level_, ", chunks of ", chunk));
  }

  // Beside other sequences: prompts of other lengths fed in other chunk sizes in the same
  // passes, and sequences decoding one token per pass while this one is prefilled.
  {
    Seq a = NewSeq(prompt_);
    Seq b = NewSeq(RandomTokens(37, 5, static_cast<int32_t>(V_)));
    Seq c = NewSeq(RandomTokens(91, 6, static_cast<int32_t>(V_)));
    while (a.fed < a.tokens.size()) Step({&b, &a, &c}, {20, 50, 90});
    ExpectSame(a.logits, whole, level_ + ", beside two prompts");
  }
  {
    Seq a = NewSeq(prompt_);
    Seq b = NewSeq(RandomTokens(40, 7, static_cast<int32_t>(V_)));
    Seq c = NewSeq(RandomTokens(40, 8, static_cast<int32_t>(V_)));
    Seq d = NewSeq(RandomTokens(213, 9, static_cast<int32_t>(V_)));
    while (a.fed < a.tokens.size()) Step({&b, &c, &a, &d}, {1, 1, 64, 33});
    ExpectSame(a.logits, whole, level_ + ", beside decoding sequences and a longer prompt");
  }

  // Other thread counts: the products, attention and the delta rule split their work
  // differently over 1 and 3 threads, which must not change a bit.
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
    Seq a = NewSeq(prompt_);
    while (a.fed < a.tokens.size()) Step({&a}, {64}, &ctx);
    ExpectSame(a.logits, whole, absl::StrCat(level_, ", ", threads, " thread(s)"));
  }

  // Resumed from a snapshot, as the prefix cache stores them: KV rows and recurrent state.
  {
    const int64_t cut = 100;
    Seq a = NewSeq(prompt_);
    Step({&a}, {cut});
    const model::StateSize& size = a.state->size();
    std::vector<uint8_t> kv(size.kv_bytes_per_token * cut);
    std::vector<uint8_t> rec(size.recurrent_bytes + size.conv_bytes);
    a.state->ExportKv(0, cut, kv.data());
    a.state->ExportRecurrent(rec.data());
    Seq b = NewSeq(prompt_);
    b.state->ImportKv(0, cut, kv.data());
    b.state->ImportRecurrent(rec.data());
    b.state->SetPast(cut);
    std::memcpy(b.logits.data(), a.logits.data(), cut * V_ * sizeof(float));
    b.fed = cut;
    Step({&b}, {kPromptTokens});
    ExpectSame(b.logits, whole, level_ + ", resumed from a snapshot at 100 tokens");
  }
}

// The child of SameBitsAtEveryLevel: the whole prompt's logits at this process's level.
TEST_P(ForwardInvariance, DISABLED_WriteLogits) {
  const std::vector<float> whole = Chunked(kPromptTokens);
  WriteChildOutput(
      std::string(reinterpret_cast<const char*>(whole.data()), whole.size() * sizeof(float)));
}

// Every level the CPU has, each in a child process (a process picks its level once), gives the
// scalar level's bits. (That the invariance above holds at every level is checked by running
// this binary with QWEN_ISA set, as scripts/test does for avx2 and scalar.)
TEST_P(ForwardInvariance, SameBitsAtEveryLevel) {
  if (ChildOutputPath() != nullptr) GTEST_SKIP() << "in a child";
  const std::string at_level =
      absl::StrCat("Fixtures/ForwardInvariance.DISABLED_WriteLogits/", GetParam().name);
  const std::vector<float> own = Chunked(kPromptTokens);  // at this process's level
  const std::string own_bytes(reinterpret_cast<const char*>(own.data()),
                              own.size() * sizeof(float));
  std::string scalar;
  for (Isa isa : SupportedIsas()) {
    const std::string bytes = isa == ActiveIsa() ? own_bytes : RunAtIsa(isa, at_level);
    if (bytes.size() != own_bytes.size()) {
      ADD_FAILURE() << IsaName(isa) << " wrote no logits";
      continue;
    }
    if (scalar.empty()) {  // the scalar level, the definition
      scalar = bytes;
      continue;
    }
    if (bytes != scalar) {
      std::vector<float> got(own.size()), want(own.size());
      std::memcpy(got.data(), bytes.data(), bytes.size());
      std::memcpy(want.data(), scalar.data(), scalar.size());
      ExpectSame(got, want, absl::StrCat(IsaName(isa), " against scalar"));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ForwardInvariance,
                         ::testing::Values(Fixture{"f32", "tiny-qwen35-f32.gguf"},
                                           Fixture{"f16", "tiny-qwen35-f16.gguf"},
                                           Fixture{"q8_0", "tiny-qwen35-q8_0.gguf"},
                                           Fixture{"q4_k_m", "tiny-qwen35-q4_k_m.gguf"},
                                           Fixture{"q3_k_m", "tiny-qwen35-q3_k_m.gguf"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qwen::testing

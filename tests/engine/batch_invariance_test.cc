// The scheduler cannot change a request's result: the same prompt alone, beside other prompts
// of other lengths, with other prefill chunk sizes, and as a second chat turn resumed from the
// prefix cache gives bit-identical tokens and log-probabilities.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/engine/engine.h"
#include "tests/engine/collector.h"
#include "tests/model/model_runner.h"

namespace qwen::engine {
namespace {

using ::qwen::testing::Collector;
using ::qwen::testing::LoadModel;

struct Result {
  std::vector<int32_t> tokens;
  std::vector<sampling::TokenLogprob> logprobs;
  FinishInfo info;
};

// Tokens and every log-probability (the chosen token's and the top alternatives') bit for bit.
::testing::AssertionResult Same(const Result& got, const Result& want) {
  if (got.tokens != want.tokens) {
    return ::testing::AssertionFailure()
           << "tokens differ: " << ::testing::PrintToString(got.tokens) << " vs "
           << ::testing::PrintToString(want.tokens);
  }
  if (got.logprobs.size() != want.logprobs.size()) {
    return ::testing::AssertionFailure() << "logprob counts differ";
  }
  for (size_t i = 0; i < want.logprobs.size(); ++i) {
    const auto& a = got.logprobs[i];
    const auto& b = want.logprobs[i];
    if (a.token != b.token || a.logprob != b.logprob || a.top != b.top) {
      return ::testing::AssertionFailure() << "log-probabilities of token " << i
                                           << " differ: " << a.logprob << " vs " << b.logprob;
    }
  }
  return ::testing::AssertionSuccess();
}

class EngineInvariance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto m = LoadModel("models/" + GetParam());
    ASSERT_NE(m.model, nullptr);
    model_ = std::shared_ptr<model::Model>(std::move(m.model));
  }
  std::unique_ptr<Engine> MakeEngine(int64_t prefill_chunk, size_t cache_bytes = 0) {
    EngineOptions o;
    o.n_slots = 4;
    o.n_ctx = 1024;
    o.n_threads = 2;
    o.prefill_chunk = prefill_chunk;
    o.reuse_prefix = false;
    o.prefix_cache_bytes = cache_bytes;
    o.snapshot_interval = 32;
    auto e = Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  GenerationRequest Request(const std::vector<int32_t>& prompt, int n, bool cache = true) {
    GenerationRequest r;
    r.id = next_id_++;
    r.prompt = prompt;
    r.max_tokens = n;
    r.sampling.temperature = 0;
    r.logprobs = 5;
    r.use_prefix_cache = cache;
    return r;
  }
  // Submits all prompts at once (they share the engine's steps) and returns each one's result.
  std::vector<Result> RunTogether(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                  int n, bool cache = true) {
    std::vector<std::shared_ptr<Collector>> sinks;
    for (const auto& p : prompts) {
      sinks.push_back(std::make_shared<Collector>());
      EXPECT_TRUE(engine.Submit(Request(p, n, cache), sinks.back()).ok());
    }
    std::vector<Result> out;
    for (auto& s : sinks) {
      EXPECT_TRUE(s->Wait(absl::Seconds(300)));
      out.push_back({s->tokens(), s->logprobs(), s->info()});
    }
    return out;
  }
  std::vector<int32_t> Tokens(int n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(model_->config().n_vocab) - 1);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = d(rng);
    return t;
  }

  std::shared_ptr<model::Model> model_;
  uint64_t next_id_ = 1;
};

TEST_P(EngineInvariance, SameResultAloneBesideOthersAndInAnyChunks) {
  const std::vector<int32_t> prompt = Tokens(250, 1);
  constexpr int kTokens = 12;
  auto engine = MakeEngine(256);
  const Result alone = RunTogether(*engine, {prompt}, kTokens)[0];
  ASSERT_EQ(alone.tokens.size(), static_cast<size_t>(kTokens));
  const std::vector<int32_t> others[3] = {Tokens(97, 2), Tokens(31, 3), Tokens(333, 4)};
  EXPECT_TRUE(Same(RunTogether(*engine, {others[0], prompt}, kTokens)[1], alone))
      << "beside one other prompt";
  EXPECT_TRUE(
      Same(RunTogether(*engine, {others[1], prompt, others[0], others[2]}, kTokens)[1], alone))
      << "beside three other prompts";
  for (int64_t chunk : {7, 64, 300}) {
    auto other = MakeEngine(chunk);
    EXPECT_TRUE(Same(RunTogether(*other, {prompt}, kTokens)[0], alone))
        << "prefill_chunk " << chunk;
    EXPECT_TRUE(Same(RunTogether(*other, {others[2], others[1], prompt}, kTokens)[2], alone))
        << "prefill_chunk " << chunk << " beside two other prompts";
  }
}

// A chat's second turn resumes from the first turn's snapshot (at a position no chunk boundary of
// the from-scratch run needs to meet) and gives what it gives computed from scratch.
TEST_P(EngineInvariance, SecondTurnResumedFromThePrefixCacheIsExact) {
  const std::vector<int32_t> turn1 = Tokens(150, 11);
  auto engine = MakeEngine(48, size_t{64} << 20);
  const Result first = RunTogether(*engine, {turn1}, 6)[0];
  ASSERT_EQ(first.tokens.size(), 6u);
  std::vector<int32_t> turn2 = turn1;
  turn2.insert(turn2.end(), first.tokens.begin(), first.tokens.end() - 1);
  const std::vector<int32_t> user = Tokens(23, 12);
  turn2.insert(turn2.end(), user.begin(), user.end());
  const Result resumed = RunTogether(*engine, {turn2}, 10)[0];
  EXPECT_GT(resumed.info.cached_tokens, 0);
  auto fresh_engine = MakeEngine(256);
  const Result fresh = RunTogether(*fresh_engine, {turn2}, 10, /*cache=*/false)[0];
  EXPECT_EQ(fresh.info.cached_tokens, 0);
  EXPECT_TRUE(Same(resumed, fresh));
  // And resumed beside another prompt.
  const Result again = RunTogether(*engine, {Tokens(70, 13), turn2}, 10)[1];
  EXPECT_GT(again.info.cached_tokens, 0);
  EXPECT_TRUE(Same(again, fresh));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineInvariance,
                         ::testing::Values("tiny-qwen35-q3_k_m.gguf", "tiny-qwen35-q4_k_m.gguf",
                                           "tiny-qwen35-q8_0.gguf", "tiny-qwen35-f16.gguf",
                                           "tiny-qwen35-f32.gguf"),
                         [](const auto& info) {
                           std::string name = info.param.substr(12);  // after "tiny-qwen35-"
                           return name.substr(0, name.find('.'));
                         });

}  // namespace
}  // namespace qwen::engine

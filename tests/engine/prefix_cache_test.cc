// The prefix cache: a request resumed from cached state gives what it gives computed from
// scratch, and computes only the tokens after the cached prefix.
#include "inference/engine/prefix_cache.h"

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
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

constexpr int64_t kInterval = 32;

class PrefixCacheTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto m = LoadModel("models/" + GetParam());
    ASSERT_NE(m.model, nullptr);
    file_ = m.file;
    model_ = std::shared_ptr<model::Model>(std::move(m.model));
  }
  // Slot reuse is off so that every hit comes from the cache.
  std::unique_ptr<Engine> MakeEngine(size_t cache_bytes, int slots = 2) {
    return MakeEngine(cache_bytes, slots, prefill_chunk_);
  }
  std::unique_ptr<Engine> MakeEngine(size_t cache_bytes, int slots, int64_t prefill_chunk) {
    EngineOptions o;
    o.n_slots = slots;
    o.n_ctx = 1024;
    o.n_threads = 2;
    o.prefill_chunk = prefill_chunk;
    o.reuse_prefix = false;
    o.prefix_cache_bytes = cache_bytes;
    o.snapshot_interval = kInterval;
    auto e = Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  static Result Run(Engine& engine, const std::vector<int32_t>& prompt, int n,
                    bool use_cache = true, uint64_t salt = 0) {
    static uint64_t next_id = 1;
    GenerationRequest r;
    r.id = next_id++;
    r.prompt = prompt;
    r.max_tokens = n;
    r.sampling.temperature = 0;
    r.logprobs = 5;
    r.use_prefix_cache = use_cache;
    r.cache_salt = salt;
    auto sink = std::make_shared<Collector>();
    EXPECT_TRUE(engine.Submit(r, sink).ok());
    EXPECT_TRUE(sink->Wait());
    return {sink->tokens(), sink->logprobs(), sink->info()};
  }
  // Random prompt tokens (a fixed seed per call site).
  std::vector<int32_t> Tokens(int n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(model_->config().n_vocab) - 1);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = d(rng);
    return t;
  }
  static std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  // The same request computed from scratch on an engine without a cache.
  Result Reference(const std::vector<int32_t>& prompt, int n) {
    auto engine = MakeEngine(0, 1);
    return Run(*engine, prompt, n);
  }
  // Identical greedy tokens; each step's log-probabilities (the log-softmax of the logits, top 5
  // and the chosen token) within the forward pass's float tolerance.
  static void ExpectSame(const Result& got, const Result& want) {
    ASSERT_EQ(got.tokens, want.tokens);
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
    for (size_t i = 0; i < got.logprobs.size(); ++i) {
      EXPECT_NEAR(got.logprobs[i].logprob, want.logprobs[i].logprob, 2e-3) << "token " << i;
      ASSERT_EQ(got.logprobs[i].top.size(), want.logprobs[i].top.size());
      for (size_t k = 0; k < got.logprobs[i].top.size(); ++k) {
        EXPECT_NEAR(got.logprobs[i].top[k].second, want.logprobs[i].top[k].second, 2e-3)
            << "token " << i << " alternative " << k;
      }
    }
  }

  std::shared_ptr<const gguf::GgufFile> file_;
  std::shared_ptr<model::Model> model_;
  int64_t prefill_chunk_ = 64;
};

// A chat client resends the conversation: the second turn resumes after the first turn's answer
// and feeds only the new tokens to the model.
TEST_P(PrefixCacheTest, FollowUpTurnComputesOnlyTheNewTokens) {
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> turn1 = Tokens(100, 1);
  const Result first = Run(*engine, turn1, 10);
  EXPECT_EQ(first.info.cached_tokens, 0);
  EXPECT_EQ(first.info.computed_prompt_tokens, 100);
  // The first prompt, its answer (minus the last token, never fed), the next user message.
  std::vector<int32_t> turn2 = turn1;
  turn2.insert(turn2.end(), first.tokens.begin(), first.tokens.end() - 1);
  turn2 = Concat(turn2, Tokens(30, 2));
  const Result second = Run(*engine, turn2, 12);
  EXPECT_EQ(second.info.cached_tokens, 109);
  EXPECT_EQ(second.info.computed_prompt_tokens, 30);
  ExpectSame(second, Reference(turn2, 12));
  const EngineStats s = engine->Stats();
  EXPECT_EQ(s.prefix_lookups, 2);
  EXPECT_EQ(s.prefix_hits, 1);
  EXPECT_EQ(s.prefix_cached_tokens, 109);
  EXPECT_TRUE(s.prefix_cache_enabled);
  EXPECT_GT(s.prefix_cache.entries, 0);
  EXPECT_GT(s.prefix_cache.used_bytes, 0u);
  EXPECT_LE(s.prefix_cache.used_bytes, s.prefix_cache.budget_bytes);
}

// Several choices of one prompt (the HTTP API's `n`): the first snapshots the prompt one token
// before its end as well, so an equal prompt after it computes only its last token, with the
// same results; without that snapshot an equal prompt computes everything again.
TEST_P(PrefixCacheTest, AnEqualPromptResumesFromTheSnapshotBeforeTheLastToken) {
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> prompt = Tokens(45, 11);
  const Result plain = Run(*engine, prompt, 4);
  EXPECT_EQ(Run(*engine, prompt, 4).info.cached_tokens, kInterval);  // the last whole interval

  const std::vector<int32_t> other = Tokens(45, 12);
  GenerationRequest first;
  first.id = 900;
  first.prompt = other;
  first.max_tokens = 4;
  first.sampling.temperature = 0;
  first.logprobs = 5;
  first.snapshot_before_last = true;
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(first, sink).ok());
  ASSERT_TRUE(sink->Wait());
  const Result again = Run(*engine, other, 4);
  EXPECT_EQ(again.info.cached_tokens, 44);
  EXPECT_EQ(again.info.computed_prompt_tokens, 1);
  ExpectSame(again, Reference(other, 4));
  ExpectSame(again, {sink->tokens(), sink->logprobs(), sink->info()});
  (void)plain;
}

// Agents resend one system prompt with different user turns: the second request resumes at the
// end of the shared part (a snapshot position).
TEST_P(PrefixCacheTest, SharedSystemPromptWithDifferentUserTurns) {
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> system = Tokens(5 * kInterval, 3);
  Run(*engine, Concat(system, Tokens(20, 4)), 4);
  for (uint32_t seed : {5, 6}) {
    const std::vector<int32_t> prompt = Concat(system, Tokens(25, seed));
    const Result r = Run(*engine, prompt, 8);
    EXPECT_EQ(r.info.cached_tokens, 5 * kInterval);
    EXPECT_EQ(r.info.computed_prompt_tokens, 25);
    ExpectSame(r, Reference(prompt, 8));
  }
}

// Prompts that part inside a snapshot interval resume at the snapshot before the divergence and
// compute the rest, the part of the interval they share included.
TEST_P(PrefixCacheTest, DivergenceInsideASnapshotInterval) {
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> a = Tokens(200, 7);
  Run(*engine, a, 4);
  std::vector<int32_t> b(a.begin(), a.begin() + 150);  // 150 = 4 * 32 + 22
  b = Concat(b, Tokens(40, 8));
  const Result r = Run(*engine, b, 8);
  EXPECT_EQ(r.info.cached_tokens, 4 * kInterval);
  EXPECT_EQ(r.info.computed_prompt_tokens, 190 - 4 * kInterval);
  ExpectSame(r, Reference(b, 8));
  // The same prompt again resumes at its own last snapshot short of its end: the end of the
  // prompt is never resumed from, one token is computed for the logits.
  const Result again = Run(*engine, b, 8);
  EXPECT_EQ(again.info.cached_tokens, 5 * kInterval);
  ExpectSame(again, Reference(b, 8));
}

// Under a budget of a few entries, old snapshots go first; what is left still resumes right, and
// evicted prefixes are computed again with the same result.
TEST_P(PrefixCacheTest, EvictionKeepsResultsAndTheBudget) {
  const model::StateSize size =
      model::SequenceState::SizeFor(model_->config(), 1024, model::KvType::kF16);
  PrefixCache probe(1, size);
  const size_t budget = 4 * probe.EntryBytes(kInterval);
  auto engine = MakeEngine(budget);
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t k = 0; k < 4; ++k) prompts.push_back(Tokens(3 * kInterval + 10, 20 + k));
  for (const auto& p : prompts) Run(*engine, p, 3);
  EngineStats s = engine->Stats();
  EXPECT_GT(s.prefix_cache.evictions, 0);
  EXPECT_LE(s.prefix_cache.used_bytes, budget);
  EXPECT_LE(s.prefix_cache.entries, 4);
  // The newest prompt is still (at least partly) cached; the oldest is gone.
  const std::vector<int32_t> newest = Concat(prompts[3], Tokens(10, 30));
  const Result hit = Run(*engine, newest, 6);
  EXPECT_GT(hit.info.cached_tokens, 0);
  ExpectSame(hit, Reference(newest, 6));
  const std::vector<int32_t> oldest = Concat(prompts[0], Tokens(10, 31));
  const Result miss = Run(*engine, oldest, 6);
  EXPECT_EQ(miss.info.cached_tokens, 0);
  ExpectSame(miss, Reference(oldest, 6));
  s = engine->Stats();
  EXPECT_LE(s.prefix_cache.used_bytes, budget);
}

TEST_P(PrefixCacheTest, OptOutAndSaltsDoNotShare) {
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> p = Tokens(100, 40);
  Run(*engine, p, 4);
  const std::vector<int32_t> q = Concat(p, Tokens(10, 41));
  const Result opted_out = Run(*engine, q, 4, /*use_cache=*/false);
  EXPECT_EQ(opted_out.info.cached_tokens, 0);
  EXPECT_EQ(opted_out.info.computed_prompt_tokens, 110);
  const Result salted = Run(*engine, q, 4, true, /*salt=*/77);
  EXPECT_EQ(salted.info.cached_tokens, 0);
  const Result same_salt = Run(*engine, Concat(q, Tokens(5, 42)), 4, true, 77);
  EXPECT_GE(same_salt.info.cached_tokens, 3 * kInterval);
  const Result unsalted = Run(*engine, q, 4);
  EXPECT_GT(unsalted.info.cached_tokens, 0);
  EXPECT_EQ(engine->Stats().prefix_lookups, 4);  // the opted-out request does not count
}

// The tree itself: nested snapshots store only their own KV rows, lookups take the deepest entry
// within the limit and restore exactly the state that was stored, least recently used leaves go
// first.
TEST_P(PrefixCacheTest, TreeSharesRowsAndEvictsLeastRecentlyUsedLeaves) {
  const model::StateSize size =
      model::SequenceState::SizeFor(model_->config(), 256, model::KvType::kF16);
  auto state = *model_->NewState(256);
  auto other = *model_->NewState(256);
  std::vector<float> logits(model_->config().n_vocab);
  const std::vector<int32_t> tokens = Tokens(96, 60);
  PrefixCache probe(1, size);
  PrefixCache cache(4 * probe.EntryBytes(32), size);
  ThreadPool pool(1);
  ops::ComputeContext c(&pool, ops::MathMode::kFast);
  for (int64_t end : {32, 64}) {
    model::Segment seg{state.get(),
                       absl::MakeConstSpan(tokens.data() + state->n_past(), end - state->n_past()),
                       model::Logits::kLast};
    ASSERT_TRUE(model_->Forward(c, {seg}, logits.data()).ok());
    EXPECT_TRUE(cache.Insert(0, absl::MakeConstSpan(tokens.data(), end), *state));
  }
  EXPECT_FALSE(cache.Insert(0, absl::MakeConstSpan(tokens.data(), 64), *state));  // cached
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_EQ(cache.stats().used_bytes, 2 * cache.EntryBytes(32));  // not 32 + 64 rows
  // Deepest within the limit.
  EXPECT_EQ(cache.Lookup(0, tokens, 96).length, 64);
  EXPECT_EQ(cache.Lookup(0, tokens, 63).length, 32);
  EXPECT_EQ(cache.Lookup(1, tokens, 96).length, 0);  // another salt
  std::vector<int32_t> diverged = tokens;
  diverged[40] += 1;
  EXPECT_EQ(cache.Lookup(0, diverged, 96).length, 32);
  // Restored into another state, it continues exactly like the original.
  const PrefixCache::Match m = cache.Lookup(0, tokens, 96);
  cache.Restore(m, *other);
  EXPECT_EQ(other->n_past(), 64);
  std::vector<float> a(logits.size()), b(logits.size());
  model::Segment sa{state.get(), absl::MakeConstSpan(tokens.data() + 64, 8), model::Logits::kLast};
  model::Segment sb{other.get(), absl::MakeConstSpan(tokens.data() + 64, 8), model::Logits::kLast};
  ASSERT_TRUE(model_->Forward(c, {sa}, a.data()).ok());
  ASSERT_TRUE(model_->Forward(c, {sb}, b.data()).ok());
  EXPECT_EQ(a, b);
  // Three more leaves under the root; the budget holds four entries, so the least recently used
  // leaf goes: the 64-token one (touched before the others were added), never an ancestor.
  for (uint32_t seed : {61, 62, 63}) {
    const std::vector<int32_t> t = Tokens(32, seed);
    auto st = *model_->NewState(256);
    model::Segment seg{st.get(), absl::MakeConstSpan(t), model::Logits::kLast};
    ASSERT_TRUE(model_->Forward(c, {seg}, logits.data()).ok());
    cache.Insert(0, t, *st);
  }
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().entries, 4);
  EXPECT_EQ(cache.Lookup(0, tokens, 96).length, 32);
  EXPECT_LE(cache.stats().used_bytes, cache.stats().budget_bytes);
}

// On quantized weights, activations are rounded to 8 bits, so where prompt chunks start changes
// results beyond float noise (already without the cache: prefill_chunk 30 and 64 give different
// greedy tokens on the tiny Q3_K_M model). With chunks on the snapshot grid both ways, a resumed
// request computes exactly what it computes from scratch.
class QuantizedPrefixCacheTest : public PrefixCacheTest {};

TEST_P(QuantizedPrefixCacheTest, GridAlignedResumeIsExact) {
  prefill_chunk_ = kInterval;
  auto engine = MakeEngine(64 << 20);
  const std::vector<int32_t> system = Tokens(4 * kInterval, 50);
  Run(*engine, Concat(system, Tokens(20, 51)), 4);
  const std::vector<int32_t> prompt = Concat(system, Tokens(25, 52));
  const Result r = Run(*engine, prompt, 8);
  EXPECT_EQ(r.info.cached_tokens, 4 * kInterval);
  ExpectSame(r, Reference(prompt, 8));
}

INSTANTIATE_TEST_SUITE_P(Quantized, QuantizedPrefixCacheTest,
                         ::testing::Values("tiny-qwen35-q3_k_m.gguf", "tiny-qwen35-q8_0.gguf"),
                         [](const auto& info) {
                           return info.param.substr(12, info.param.size() - 17);
                         });

INSTANTIATE_TEST_SUITE_P(Models, PrefixCacheTest,
                         ::testing::Values("tiny-qwen35-f32.gguf", "tiny-qwen35-f16.gguf"),
                         [](const auto& info) {
                           std::string n = info.param.substr(12, info.param.size() - 17);
                           return n;
                         });

}  // namespace
}  // namespace qwen::engine

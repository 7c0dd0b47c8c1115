// Speculative decoding in the engine changes nothing in a request's result: with drafts taken
// from the request's own plain output (an oracle drafter, EngineOptions::test_drafter) and with
// drafts wrong at chosen positions, the tokens, every log-probability and every logit row are
// bit for bit those of plain decoding, for every weight type, greedy or sampled with penalties,
// with structured output, stop tokens, the prefix cache and other sequences in the same steps.
// The real drafters (prompt lookup, the MTP head) are held to the same.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "inference/engine/engine.h"
#include "inference/engine/prompt_lookup.h"
#include "inference/grammar/spec.h"
#include "inference/tokenizer/tokenizer.h"
#include "tests/model/model_runner.h"

namespace qwen::engine {
namespace {

using ::qwen::testing::LoadModel;

// Collects everything a request reports, logit rows included. Thread-safe.
class Sink : public RequestSink {
 public:
  void OnToken(const TokenOutput& t) override {
    absl::MutexLock lock(&mu_);
    tokens.push_back(t.token);
    if (t.logprob) logprobs.push_back(*t.logprob);
  }
  void OnLogits(absl::Span<const float> rows) override {
    absl::MutexLock lock(&mu_);
    logits.insert(logits.end(), rows.begin(), rows.end());
  }
  void OnFinish(const FinishInfo& i) override {
    {
      absl::MutexLock lock(&mu_);
      info = i;
    }
    done.Notify();
  }
  absl::Mutex mu_;
  std::vector<int32_t> tokens;
  std::vector<sampling::TokenLogprob> logprobs;
  std::vector<float> logits;
  FinishInfo info;
  absl::Notification done;
};

struct Result {
  std::vector<int32_t> tokens;
  std::vector<sampling::TokenLogprob> logprobs;
  std::vector<float> logits;
  FinishInfo info;
};

::testing::AssertionResult Same(const Result& got, const Result& want) {
  if (got.tokens != want.tokens) {
    return ::testing::AssertionFailure()
           << "tokens differ: " << ::testing::PrintToString(got.tokens) << " vs "
           << ::testing::PrintToString(want.tokens);
  }
  if (got.info.reason != want.info.reason) {
    return ::testing::AssertionFailure() << "finish reasons differ";
  }
  if (got.logprobs.size() != want.logprobs.size()) {
    return ::testing::AssertionFailure() << "logprob counts differ";
  }
  for (size_t i = 0; i < want.logprobs.size(); ++i) {
    const auto& a = got.logprobs[i];
    const auto& b = want.logprobs[i];
    if (a.token != b.token || a.logprob != b.logprob || a.top != b.top) {
      return ::testing::AssertionFailure() << "log-probabilities of token " << i << " differ";
    }
  }
  if (got.logits.size() != want.logits.size()) {
    return ::testing::AssertionFailure()
           << "logit values differ in count: " << got.logits.size() << " vs " << want.logits.size();
  }
  if (!want.logits.empty() &&
      std::memcmp(got.logits.data(), want.logits.data(), want.logits.size() * sizeof(float))) {
    return ::testing::AssertionFailure() << "logit rows differ";
  }
  return ::testing::AssertionSuccess();
}

std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// The drafts of an oracle: per request id, its prompt and plain output; positions of the
// output for which the draft is made wrong.
struct Oracle {
  struct Known {
    std::vector<int32_t> prompt;
    std::vector<int32_t> output;
  };
  absl::Mutex mu;
  std::map<uint64_t, Known> known;
  std::function<bool(int64_t)> wrong = [](int64_t) { return false; };
  int32_t vocab = 0;

  std::vector<int32_t> Draft(uint64_t id, absl::Span<const int32_t> context, int n) {
    absl::MutexLock lock(&mu);
    auto it = known.find(id);
    if (it == known.end()) return {};
    const Known& k = it->second;
    // The context is the prompt and the output so far.
    const int64_t g = static_cast<int64_t>(context.size()) - static_cast<int64_t>(k.prompt.size());
    EXPECT_GE(g, 1);
    std::vector<int32_t> d;
    for (int64_t p = g; p < g + n && p < static_cast<int64_t>(k.output.size()); ++p) {
      d.push_back(wrong(p) ? (k.output[p] + 1) % vocab : k.output[p]);
    }
    return d;
  }
};

class EngineSpeculative : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto m = LoadModel("models/" + GetParam());
    ASSERT_NE(m.model, nullptr);
    file_ = m.file;
    model_ = std::shared_ptr<model::Model>(std::move(m.model));
    V_ = static_cast<int32_t>(model_->config().n_vocab);
    oracle_.vocab = V_;
  }
  std::unique_ptr<Engine> MakeEngine(bool drafter, size_t cache_bytes = 0, int max_draft = 3) {
    EngineOptions o;
    o.n_slots = 4;
    o.n_ctx = 512;
    o.n_threads = 2;
    o.prefill_chunk = 64;
    o.max_draft = max_draft;
    o.prefix_cache_bytes = cache_bytes;
    o.snapshot_interval = 32;
    if (drafter) {
      o.test_drafter = [this](uint64_t id, absl::Span<const int32_t> c, int n) {
        return oracle_.Draft(id, c, n);
      };
    }
    auto e = Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  GenerationRequest Request(const std::vector<int32_t>& prompt, int n) {
    GenerationRequest r;
    r.id = next_id_++;
    r.prompt = prompt;
    r.max_tokens = n;
    r.sampling.temperature = 0;
    r.logprobs = 3;
    r.all_logits = true;
    return r;
  }
  std::vector<Result> RunAll(Engine& engine, std::vector<GenerationRequest> reqs) {
    std::vector<std::shared_ptr<Sink>> sinks;
    for (auto& r : reqs) {
      auto sink = std::make_shared<Sink>();
      absl::Status s = engine.Submit(r, sink);
      EXPECT_TRUE(s.ok()) << s;
      sinks.push_back(sink);
    }
    std::vector<Result> out;
    for (auto& s : sinks) {
      EXPECT_TRUE(s->done.WaitForNotificationWithTimeout(absl::Seconds(300)));
      absl::MutexLock lock(&s->mu_);
      out.push_back({s->tokens, s->logprobs, s->logits, s->info});
    }
    return out;
  }
  Result RunOne(Engine& engine, GenerationRequest r) { return RunAll(engine, {std::move(r)})[0]; }

  // Runs `reqs` plain, then again with oracle drafts (right, and wrong at several patterns),
  // alone and all at once, expecting the same results.
  void ExpectSpeculationChangesNothing(const std::vector<GenerationRequest>& reqs,
                                       size_t cache_bytes = 0) {
    std::vector<Result> plain;
    {
      auto engine = MakeEngine(false, cache_bytes, /*max_draft=*/0);
      for (const auto& r : reqs) plain.push_back(RunOne(*engine, r));
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      oracle_.known[reqs[i].id] = {reqs[i].prompt, plain[i].tokens};
      ASSERT_EQ(plain[i].info.drafted_tokens, 0);
    }
    const std::vector<std::pair<std::string, std::function<bool(int64_t)>>> patterns = {
        {"oracle", [](int64_t) { return false; }},
        {"every third wrong", [](int64_t p) { return p % 3 == 1; }},
        {"every other wrong", [](int64_t p) { return p % 2 == 0; }},
        {"all wrong", [](int64_t) { return true; }},
    };
    for (const auto& [name, wrong] : patterns) {
      oracle_.wrong = wrong;
      auto engine = MakeEngine(true, cache_bytes);
      int64_t drafted = 0, accepted = 0;
      for (size_t i = 0; i < reqs.size(); ++i) {
        const Result got = RunOne(*engine, reqs[i]);
        EXPECT_TRUE(Same(got, plain[i])) << name << ", request " << i << " alone";
        drafted += got.info.drafted_tokens;
        accepted += got.info.accepted_tokens;
      }
      EXPECT_GT(drafted, 0) << name;
      // Right drafts are all kept, but for one per request at most: the draft after the token
      // that ends the request (a stop token drafted as the last draft).
      if (name == "oracle") {
        EXPECT_GE(accepted, drafted - static_cast<int64_t>(reqs.size())) << name;
      }
      if (name == "all wrong") {
        EXPECT_EQ(accepted, 0) << name;
      }
      // The engine's counters agree (the last step is counted just after its sequences were
      // told they finished).
      EngineStats stats = engine->Stats();
      for (int i = 0; i < 200 && stats.tokens_drafted != drafted; ++i) {
        absl::SleepFor(absl::Milliseconds(10));
        stats = engine->Stats();
      }
      EXPECT_EQ(stats.tokens_drafted, drafted);
      EXPECT_EQ(stats.tokens_accepted, accepted);
      // All at once: drafts share the steps' room with the other sequences.
      const std::vector<Result> together = RunAll(*engine, reqs);
      for (size_t i = 0; i < reqs.size(); ++i) {
        EXPECT_TRUE(Same(together[i], plain[i])) << name << ", request " << i << " beside others";
      }
    }
  }

  std::shared_ptr<const gguf::GgufFile> file_;
  std::shared_ptr<model::Model> model_;
  int32_t V_ = 0;
  Oracle oracle_;
  uint64_t next_id_ = 1;
};

TEST_P(EngineSpeculative, GreedyOutputAndLogitsAreUnchanged) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 3; ++i) reqs.push_back(Request(RandomTokens(20 + 13 * i, 40 + i, V_), 30));
  ExpectSpeculationChangesNothing(reqs);
}

TEST_P(EngineSpeculative, SampledWithPenaltiesIsUnchanged) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 3; ++i) {
    GenerationRequest r = Request(RandomTokens(25, 50 + i, V_), 30);
    r.sampling.temperature = 0.9f;
    r.sampling.top_k = 50;
    r.sampling.top_p = 0.95f;
    r.sampling.repetition_penalty = 1.2f;
    r.sampling.presence_penalty = 0.3f;
    r.sampling.frequency_penalty = 0.2f;
    r.sampling.seed = 100 + i;
    reqs.push_back(r);
  }
  ExpectSpeculationChangesNothing(reqs);
}

TEST_P(EngineSpeculative, StopTokensAndForcedTokensAreUnchanged) {
  std::vector<GenerationRequest> reqs;
  // A stop token that the greedy output reaches: its first token after a few.
  {
    auto engine = MakeEngine(false, 0, 0);
    GenerationRequest probe = Request(RandomTokens(30, 60, V_), 30);
    const Result r = RunOne(*engine, probe);
    ASSERT_GT(r.tokens.size(), 10u);
    GenerationRequest stop = Request(probe.prompt, 30);
    stop.stop_tokens = {r.tokens[7]};
    reqs.push_back(stop);
  }
  GenerationRequest forced = Request(RandomTokens(30, 61, V_), 20);
  forced.forced_tokens = RandomTokens(12, 62, V_);
  reqs.push_back(forced);
  ExpectSpeculationChangesNothing(reqs);
}

TEST_P(EngineSpeculative, PrefixCacheIsUnchanged) {
  // A second turn that resumes from the first's cached state (no all_logits: it turns the cache
  // off), with and without drafts.
  const std::vector<int32_t> turn1 = RandomTokens(70, 70, V_);
  std::vector<int32_t> out1;
  {
    auto engine = MakeEngine(false, 0, 0);
    GenerationRequest r = Request(turn1, 12);
    r.all_logits = false;
    out1 = RunOne(*engine, r).tokens;
  }
  std::vector<int32_t> turn2 = turn1;
  turn2.insert(turn2.end(), out1.begin(), out1.end());
  const std::vector<int32_t> more = RandomTokens(15, 71, V_);
  turn2.insert(turn2.end(), more.begin(), more.end());
  std::vector<GenerationRequest> reqs;
  for (const auto& p : {turn1, turn2}) {
    GenerationRequest r = Request(p, 25);
    r.all_logits = false;
    r.logprobs = 5;
    reqs.push_back(r);
  }
  ExpectSpeculationChangesNothing(reqs, 64 << 20);
}

TEST_P(EngineSpeculative, RealDraftersChangeNothing) {
  // A prompt that repeats itself (prompt lookup finds matches) and a random one; every mode.
  std::vector<int32_t> repeat = RandomTokens(12, 80, V_);
  for (int i = 0; i < 3; ++i) repeat.insert(repeat.end(), repeat.begin(), repeat.begin() + 12);
  const std::vector<std::vector<int32_t>> prompts = {repeat, RandomTokens(40, 81, V_)};
  auto plain_engine = MakeEngine(false, 0, 0);
  auto engine = MakeEngine(false, 64 << 20);
  std::vector<SpeculativeMode> modes = {SpeculativeMode::kAuto, SpeculativeMode::kNgram,
                                        SpeculativeMode::kOff};
  if (model_->has_mtp()) modes.push_back(SpeculativeMode::kMtp);
  for (const auto& prompt : prompts) {
    GenerationRequest base = Request(prompt, 40);
    const Result plain = RunOne(*plain_engine, base);
    for (SpeculativeMode mode : modes) {
      GenerationRequest r = base;
      r.id = next_id_++;
      r.speculative = mode;
      const Result got = RunOne(*engine, r);
      EXPECT_TRUE(Same(got, plain)) << SpeculativeModeName(mode);
      if (mode == SpeculativeMode::kOff) {
        EXPECT_EQ(got.info.drafted_tokens, 0);
      }
      if (mode == SpeculativeMode::kMtp) {
        EXPECT_GT(got.info.drafted_tokens, 0);
      }
      EXPECT_LE(got.info.accepted_tokens, got.info.drafted_tokens);
    }
  }
}

TEST_P(EngineSpeculative, BadRequestsAreRefusedByField) {
  auto engine = MakeEngine(false);
  GenerationRequest r = Request(RandomTokens(5, 1, V_), 4);
  r.max_draft = kMaxDraftTokens + 1;
  absl::Status s = engine->Submit(r, std::make_shared<Sink>());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_draft"), std::string::npos) << s;
  r.max_draft = -1;
  EXPECT_EQ(engine->Submit(r, std::make_shared<Sink>()).code(), absl::StatusCode::kInvalidArgument);
  r.max_draft = 2;
  r.speculative = SpeculativeMode::kMtp;
  s = engine->Submit(r, std::make_shared<Sink>());
  if (model_->has_mtp()) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("speculative"), std::string::npos) << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineSpeculative,
                         ::testing::Values("tiny-qwen35-f32.gguf", "tiny-qwen35-f16.gguf",
                                           "tiny-qwen35-q8_0.gguf", "tiny-qwen35-q4_k_m.gguf",
                                           "tiny-qwen35-q3_k_m.gguf",
                                           "tiny-qwen35-mtp-q3_k_m.gguf"),
                         [](const auto& info) {
                           std::string n = info.param;
                           n = n.substr(12, n.size() - 12 - 5);  // tiny-qwen35-<this>.gguf
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

// Structured output: the matcher sees exactly the tokens plain decoding gives it.
TEST(EngineSpeculativeGrammar, StructuredOutputIsUnchanged) {
  auto m = LoadModel("models/tiny-qwen35-mtp-q3_k_m.gguf");
  ASSERT_NE(m.model, nullptr);
  std::shared_ptr<model::Model> model(std::move(m.model));
  auto tok = tokenizer::Tokenizer::FromGguf(*m.file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  grammar::GrammarCache cache(
      grammar::TokenTableFromTokenizer(**tok, static_cast<int32_t>(model->config().n_vocab)));
  grammar::ConstraintSpec spec;
  spec.kind = grammar::ConstraintSpec::Kind::kRegex;
  spec.text = "[a-z]+( [a-z]+){3,8}\\.";
  auto g = cache.Get(spec);
  ASSERT_TRUE(g.ok()) << g.status();
  const std::vector<int32_t> prompt = (*tok)->Encode("Write four words:", true);

  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  std::vector<Result> plain;
  std::map<uint64_t, std::vector<int32_t>> outputs;
  auto run = [&](bool drafter, std::function<bool(int64_t)> wrong) {
    EngineOptions o;
    o.n_slots = 2;
    o.n_ctx = 256;
    o.n_threads = 2;
    o.max_draft = drafter ? 3 : 0;
    if (drafter) {
      o.test_drafter = [&](uint64_t id, absl::Span<const int32_t> c, int n) {
        const std::vector<int32_t>& out = outputs[id];
        const int64_t gen = static_cast<int64_t>(c.size()) - static_cast<int64_t>(prompt.size());
        std::vector<int32_t> d;
        for (int64_t p = gen; p < gen + n && p < static_cast<int64_t>(out.size()); ++p) {
          d.push_back(wrong(p) ? (out[p] + 1) % vocab : out[p]);
        }
        return d;
      };
    }
    auto e = Engine::Create(model, o);
    EXPECT_TRUE(e.ok());
    std::vector<Result> results;
    for (uint64_t id = 1; id <= 4; ++id) {
      GenerationRequest r;
      r.id = id;
      r.prompt = prompt;
      r.max_tokens = 60;
      r.grammar = *g;
      r.stop_tokens = (*tok)->end_of_generation_ids();
      r.sampling.seed = id;
      r.sampling.temperature = id % 2 == 0 ? 0.0f : 1.0f;
      r.logprobs = 2;
      r.all_logits = true;
      auto sink = std::make_shared<Sink>();
      EXPECT_TRUE((*e)->Submit(r, sink).ok());
      EXPECT_TRUE(sink->done.WaitForNotificationWithTimeout(absl::Seconds(120)));
      absl::MutexLock lock(&sink->mu_);
      results.push_back({sink->tokens, sink->logprobs, sink->logits, sink->info});
    }
    return results;
  };
  plain = run(false, nullptr);
  for (uint64_t id = 1; id <= 4; ++id) outputs[id] = plain[id - 1].tokens;
  for (const auto& wrong : std::vector<std::function<bool(int64_t)>>{
           [](int64_t) { return false; }, [](int64_t p) { return p % 3 == 2; }}) {
    const std::vector<Result> got = run(true, wrong);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(Same(got[i], plain[i])) << "request " << i;
      EXPECT_GT(got[i].info.drafted_tokens, 0);
    }
  }
}

TEST(PromptLookup, DraftsWhatFollowedTheLatestLongestMatch) {
  EXPECT_TRUE(PromptLookupDraft({1, 2, 3}, 3).empty());
  // "5 6" occurred before, followed by 7 8 9.
  EXPECT_EQ(PromptLookupDraft({5, 6, 7, 8, 9, 1, 5, 6}, 3), (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(PromptLookupDraft({5, 6, 7, 8, 9, 1, 5, 6}, 2), (std::vector<int32_t>{7, 8}));
  // The latest occurrence wins among equal lengths; the longest suffix before that.
  EXPECT_EQ(PromptLookupDraft({5, 6, 1, 4, 5, 6, 2, 4, 5, 6}, 1), (std::vector<int32_t>{2}));
  EXPECT_EQ(PromptLookupDraft({3, 5, 6, 1, 4, 5, 6, 2, 3, 5, 6}, 1), (std::vector<int32_t>{1}));
  // Cut at the end of the context.
  EXPECT_EQ(PromptLookupDraft({7, 7, 7}, 3), (std::vector<int32_t>{7}));
  EXPECT_TRUE(PromptLookupDraft({1, 2, 3, 4}, 0).empty());
}

}  // namespace
}  // namespace qwen::engine

namespace qwen::engine {
namespace {

// The upper quantile of the chi-square distribution with `dof` degrees of freedom at tail
// probability `alpha`, by Wilson and Hilferty's cube-root normal approximation (z: the normal
// quantile of 1 - alpha).
double ChiSquareQuantile(int dof, double z) {
  const double k = dof;
  const double t = 1.0 - 2.0 / (9.0 * k) + z * std::sqrt(2.0 / (9.0 * k));
  return k * t * t * t;
}

// Sampled runs keep the target's distribution: the frequencies of the 4th generated token over
// 400 seeds with speculation (drafts taken from other seeds' outputs, so that about half are
// accepted and half refused) against 400 other seeds without, by a two-sample chi-square test
// at a false-failure rate of 0.1% (the seeds are fixed, so the outcome is too: it was drawn once
// with that chance of failing a correct engine). That the same seed gives the very same tokens
// with and without speculation is checked above, bit for bit.
// The room a step leaves for drafts is shared out one position at a time (4 sequences decoding
// in a step of 8 positions draft one token each, not 3 + 1 + 0 + 0: several sequences drafting
// with the MTP head cost as many head passes as the longest draft); a sequence starts with a
// probe of one token, and a drafter that is always wrong only ever probes, after pauses of 8,
// 16, 32 ... steps, while one that is mostly right drafts 3 every step after the first.
TEST(EngineSpeculativeScheduling, RoomIsSharedAndRefusedDraftsPauseThenProbeWithOneToken) {
  auto m = LoadModel("models/tiny-qwen35-q8_0.gguf");
  ASSERT_NE(m.model, nullptr);
  std::shared_ptr<model::Model> model(std::move(m.model));
  const int32_t V = static_cast<int32_t>(model->config().n_vocab);
  const std::vector<int32_t> prompt = RandomTokens(12, 7, V);
  absl::Mutex mu;
  std::vector<int> asked;  // n of every drafter call, in order
  std::vector<int32_t> plain;
  bool right = true;
  auto make = [&](int slots, int max_draft) {
    EngineOptions o;
    o.n_slots = slots;
    o.n_ctx = 128;
    o.n_threads = 2;
    o.max_draft = max_draft;
    o.speculative_step_tokens = 8;
    o.test_drafter = [&](uint64_t, absl::Span<const int32_t> c, int n) {
      absl::MutexLock lock(&mu);
      asked.push_back(n);
      const int64_t g = static_cast<int64_t>(c.size()) - static_cast<int64_t>(prompt.size());
      std::vector<int32_t> d;
      for (int64_t p = g; p < g + n && p < static_cast<int64_t>(plain.size()); ++p) {
        d.push_back(right ? plain[p] : (plain[p] + 1) % V);
      }
      return d;
    };
    auto e = Engine::Create(model, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  };
  auto run = [&](Engine& e, int n_requests, int max_tokens) {
    std::vector<std::shared_ptr<Sink>> sinks;
    for (int i = 0; i < n_requests; ++i) {
      GenerationRequest r;
      r.id = static_cast<uint64_t>(i + 1);
      r.prompt = prompt;
      r.max_tokens = max_tokens;
      r.sampling.temperature = 0;
      auto sink = std::make_shared<Sink>();
      EXPECT_TRUE(e.Submit(r, sink).ok());
      sinks.push_back(sink);
    }
    std::vector<std::vector<int32_t>> out;
    for (auto& s : sinks) {
      EXPECT_TRUE(s->done.WaitForNotificationWithTimeout(absl::Seconds(300)));
      absl::MutexLock lock(&s->mu_);
      out.push_back(s->tokens);
    }
    return out;
  };
  {
    auto e = make(4, 0);
    plain = run(*e, 1, 40)[0];
    ASSERT_EQ(plain.size(), 40u);
  }
  // Four sequences in step (same prompt, prefilled together, same length): one draft each.
  {
    auto e = make(4, 3);
    const auto out = run(*e, 4, 40);
    for (const auto& o : out) EXPECT_EQ(o, plain);
    absl::MutexLock lock(&mu);
    ASSERT_FALSE(asked.empty());
    for (int n : asked) EXPECT_EQ(n, 1);
    asked.clear();
  }
  // One sequence alone, wrong every time: the first probe, then probes after pauses of 8 and 16
  // steps (the next, after 32, is beyond these 40 tokens).
  {
    right = false;
    auto e = make(4, 3);
    EXPECT_EQ(run(*e, 1, 40)[0], plain);
    absl::MutexLock lock(&mu);
    EXPECT_EQ(asked, (std::vector<int>{1, 1, 1}));
    asked.clear();
  }
  // Right 60% of the time (a token's draft is wrong when its position is a multiple of 5 or
  // 5k + 2), a drafter keeps drafting whatever its unlucky steps: no probes of one token.
  {
    right = true;
    auto e = make(4, 3);
    // Wrong where the drafter's hash says so: rebuild plain with a pattern.
    const std::vector<int32_t> good = plain;
    for (size_t p = 0; p < plain.size(); ++p) {
      if (p % 5 == 0 || p % 5 == 2) plain[p] = (good[p] + 1) % V;
    }
    const auto out = run(*e, 1, 40)[0];
    plain = good;
    EXPECT_EQ(out, good);
    absl::MutexLock lock(&mu);
    // The first step probes (position 1: right), every later one drafts 3 but the last, which
    // max_tokens shortens.
    ASSERT_GE(asked.size(), 10u) << ::testing::PrintToString(asked);
    EXPECT_EQ(asked[0], 1);
    for (size_t i = 1; i + 1 < asked.size(); ++i) {
      EXPECT_EQ(asked[i], 3) << "call " << i << " of " << ::testing::PrintToString(asked);
    }
  }
}

// The MTP heads' rows in the engine (Segment::mtp_defer), counted by Model::mtp_rows_run():
//   - in a full step (as many sequences decoding as the step has positions) nobody drafts and
//     the heads run no rows: only the prompt's, in its prefill;
//   - a sequence that has put kMaxMtpDeferredRows aside in full steps gives its head up instead
//     of running them;
//   - a sequence that drafts again runs its waiting rows first (MtpDraft refuses a head behind);
//   - a request that ends runs them before its state goes to the prefix cache, so that the next
//     turn restored from there drafts with the head.
// The output is plain decoding's throughout.
class EngineMtpRows : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModel("models/tiny-qwen35-mtp-q3_k_m.gguf");
    ASSERT_NE(m.model, nullptr);
    model_ = std::shared_ptr<model::Model>(std::move(m.model));
    V_ = static_cast<int32_t>(model_->config().n_vocab);
  }
  std::unique_ptr<Engine> Make(int slots, int max_draft, int step_tokens, size_t cache = 0) {
    EngineOptions o;
    o.n_slots = slots;
    o.n_ctx = 1024;
    o.n_threads = 2;
    o.max_draft = max_draft;
    o.speculative_step_tokens = step_tokens;
    o.prefix_cache_bytes = cache;
    auto e = Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }
  GenerationRequest Request(uint64_t id, std::vector<int32_t> prompt, int max_tokens) {
    GenerationRequest r;
    r.id = id;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.speculative = SpeculativeMode::kMtp;
    return r;
  }
  // Submits them all, then waits for each.
  std::vector<Result> Run(Engine& e, const std::vector<GenerationRequest>& reqs) {
    std::vector<std::shared_ptr<Sink>> sinks;
    for (const GenerationRequest& r : reqs) {
      auto sink = std::make_shared<Sink>();
      EXPECT_TRUE(e.Submit(r, sink).ok());
      sinks.push_back(sink);
    }
    std::vector<Result> out;
    for (auto& s : sinks) {
      EXPECT_TRUE(s->done.WaitForNotificationWithTimeout(absl::Seconds(300)));
      absl::MutexLock lock(&s->mu_);
      out.push_back({s->tokens, {}, {}, s->info});
    }
    return out;
  }
  std::shared_ptr<model::Model> model_;
  int32_t V_ = 0;
};

TEST_F(EngineMtpRows, AFullStepRunsNoHeadRowsAndGivesTheHeadUpAtTheCap) {
  const std::vector<int32_t> prompt = RandomTokens(20, 95, V_);
  const int long_run = static_cast<int>(model::kMaxMtpDeferredRows) + 40;
  std::vector<Result> plain;
  {
    auto e = Make(1, 0, 1);
    ASSERT_NE(e, nullptr);
    plain = Run(*e, {Request(1, prompt, 40), Request(2, prompt, long_run)});
  }
  // A step of one position: every step is full.
  auto e = Make(1, 3, 1);
  ASSERT_NE(e, nullptr);
  const int64_t before = model_->mtp_rows_run();
  const std::vector<Result> got = Run(*e, {Request(3, prompt, 40)});
  EXPECT_TRUE(Same(got[0], plain[0]));
  EXPECT_EQ(got[0].info.drafted_tokens, 0);
  EXPECT_EQ(model_->mtp_rows_run() - before, static_cast<int64_t>(prompt.size()))
      << "the head ran rows in full steps";
  // Past the cap: the head gives up rather than run the 512 rows put aside.
  const int64_t before_long = model_->mtp_rows_run();
  const std::vector<Result> got_long = Run(*e, {Request(4, prompt, long_run)});
  EXPECT_TRUE(Same(got_long[0], plain[1]));
  EXPECT_EQ(model_->mtp_rows_run() - before_long, static_cast<int64_t>(prompt.size()));
}

TEST_F(EngineMtpRows, ASequenceThatDraftsAgainRunsItsRowsFirst) {
  const int max_tokens[] = {12, 12, 12, 60};
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i)
    reqs.push_back(Request(i + 1, RandomTokens(20, 90 + i, V_), max_tokens[i]));
  std::vector<Result> plain;
  {
    auto e = Make(4, 0, 4);
    ASSERT_NE(e, nullptr);
    plain = Run(*e, reqs);
  }
  auto e = Make(4, 3, 4);
  ASSERT_NE(e, nullptr);
  const std::vector<Result> got = Run(*e, reqs);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(Same(got[i], plain[i])) << "request " << i;
  // The fourth drafts with its head once alone, after full steps put its rows aside (how many
  // depends on how the engine's thread met the submissions).
  EXPECT_GT(got[3].info.drafted_tokens, 0);
}

TEST_F(EngineMtpRows, TheNextTurnFromThePrefixCacheDraftsWithTheHead) {
  auto e = Make(1, 3, 8, 64 << 20);
  ASSERT_NE(e, nullptr);
  const std::vector<int32_t> prompt = RandomTokens(20, 97, V_);
  // The first turn ends on a step that cannot draft (its last token), with rows waiting.
  const std::vector<Result> first = Run(*e, {Request(1, prompt, 30)});
  ASSERT_EQ(first[0].tokens.size(), 30u);
  // Another conversation takes the only slot, so the next turn resumes from the cache.
  Run(*e, {Request(2, RandomTokens(20, 98, V_), 5)});
  std::vector<int32_t> next = prompt;
  next.insert(next.end(), first[0].tokens.begin(), first[0].tokens.end());
  for (int32_t t : RandomTokens(6, 99, V_)) next.push_back(t);
  const std::vector<Result> second = Run(*e, {Request(3, next, 10)});
  EXPECT_GE(second[0].info.cached_tokens, static_cast<int32_t>(prompt.size()) + 29);
  EXPECT_GT(second[0].info.drafted_tokens, 0) << "the cached state's head was behind";
}

TEST(EngineSpeculativeSampling, TokenFrequenciesMatchPlainSampling) {
  auto m = LoadModel("models/tiny-qwen35-q8_0.gguf");
  ASSERT_NE(m.model, nullptr);
  std::shared_ptr<model::Model> model(std::move(m.model));
  const int32_t V = static_cast<int32_t>(model->config().n_vocab);
  constexpr int kRuns = 400, kTokens = 4;
  const std::vector<int32_t> prompt = RandomTokens(12, 90, V);
  std::vector<std::vector<int32_t>> plain_out(kRuns);
  auto run = [&](bool speculate, uint64_t seed0, std::vector<std::vector<int32_t>>* outs,
                 int64_t* drafted, int64_t* accepted) {
    EngineOptions o;
    o.n_slots = 2;  // room in each step for drafts (8 decoding sequences leave none)
    o.n_ctx = 64;
    o.n_threads = 2;
    o.max_draft = speculate ? 3 : 0;
    if (speculate) {
      o.test_drafter = [&](uint64_t id, absl::Span<const int32_t> c, int n) {
        const std::vector<int32_t>& other = plain_out[id % kRuns];
        const int64_t g = static_cast<int64_t>(c.size()) - static_cast<int64_t>(prompt.size());
        std::vector<int32_t> d;
        for (int64_t p = g; p < g + n && p < static_cast<int64_t>(other.size()); ++p) {
          d.push_back(other[p]);
        }
        return d;
      };
    }
    auto e = Engine::Create(model, o);
    ASSERT_TRUE(e.ok());
    std::vector<std::shared_ptr<Sink>> sinks;
    for (int i = 0; i < kRuns; ++i) {
      GenerationRequest r;
      r.id = static_cast<uint64_t>(i);
      r.prompt = prompt;
      r.max_tokens = kTokens;
      r.sampling.temperature = 1.0f;
      r.sampling.top_k = 6;
      r.sampling.seed = seed0 + i;
      auto sink = std::make_shared<Sink>();
      ASSERT_TRUE((*e)->Submit(r, sink).ok());
      sinks.push_back(sink);
    }
    for (int i = 0; i < kRuns; ++i) {
      ASSERT_TRUE(sinks[i]->done.WaitForNotificationWithTimeout(absl::Seconds(300)));
      absl::MutexLock lock(&sinks[i]->mu_);
      (*outs)[i] = sinks[i]->tokens;
      *drafted += sinks[i]->info.drafted_tokens;
      *accepted += sinks[i]->info.accepted_tokens;
    }
  };
  int64_t drafted = 0, accepted = 0;
  run(false, 1, &plain_out, &drafted, &accepted);
  std::vector<std::vector<int32_t>> spec_out(kRuns);
  run(true, 100001, &spec_out, &drafted, &accepted);
  // Drafts were both accepted and refused.
  EXPECT_GT(accepted, drafted / 10);
  EXPECT_LT(accepted, drafted * 9 / 10);

  std::map<int32_t, std::pair<int, int>> counts;
  for (int i = 0; i < kRuns; ++i) {
    ASSERT_EQ(plain_out[i].size(), static_cast<size_t>(kTokens));
    ASSERT_EQ(spec_out[i].size(), static_cast<size_t>(kTokens));
    ++counts[plain_out[i][kTokens - 1]].first;
    ++counts[spec_out[i][kTokens - 1]].second;
  }
  // Categories with fewer than 10 draws in both samples together are pooled.
  std::vector<std::pair<int, int>> bins;
  std::pair<int, int> pooled{0, 0};
  for (const auto& [token, c] : counts) {
    if (c.first + c.second >= 10) {
      bins.push_back(c);
    } else {
      pooled.first += c.first;
      pooled.second += c.second;
    }
  }
  if (pooled.first + pooled.second > 0) bins.push_back(pooled);
  ASSERT_GE(bins.size(), 3u);
  double chi2 = 0;
  for (const auto& [a, b] : bins) {
    const double expected = (a + b) / 2.0;  // equal sample sizes
    chi2 += (a - expected) * (a - expected) / expected + (b - expected) * (b - expected) / expected;
  }
  const int dof = static_cast<int>(bins.size()) - 1;
  const double limit = ChiSquareQuantile(dof, 3.0902);  // z of 0.999
  std::printf(
      "chi-square %.2f with %d degrees of freedom (limit %.2f at 0.1%%), %lld of %lld drafts "
      "accepted\n",
      chi2, dof, limit, static_cast<long long>(accepted), static_cast<long long>(drafted));
  EXPECT_LT(chi2, limit);
}

}  // namespace
}  // namespace qwen::engine

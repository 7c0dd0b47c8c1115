// End to end, the real server and a real worker at each kernel level the machine has: a prompt's
// tokens and log-probabilities do not depend on what the worker batches with it or on a
// prefix-cache resume. The same prompt alone, beside one and three other prompts of other lengths
// (streamed concurrently to a single worker, so they share its steps), and as a second chat turn
// resumed from the prefix cache gives bit-identical results; and every level gives the scalar
// level's.
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "tests/service/server_process.h"

namespace qwen {
// Test names and failure messages show the level by name.
void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }
}  // namespace qwen

namespace qwen::testing {
namespace {

struct Case {
  std::string model;  // under tests/data/models
  Isa isa;
};

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, 1000);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

v1::GenerateRequest Greedy(const std::vector<int32_t>& prompt, int n, bool cache = true) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(n);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  req.mutable_output()->set_logprobs(true);
  req.mutable_output()->set_top_logprobs(5);
  if (!cache) req.set_prefix_cache(false);
  return req;
}

// Tokens, and every log-probability as a float, exactly.
::testing::AssertionResult Same(const GenerateResult& got, const GenerateResult& want) {
  if (!got.status.ok()) return ::testing::AssertionFailure() << got.status.error_message();
  if (got.token_ids != want.token_ids) {
    return ::testing::AssertionFailure() << "tokens " << ::testing::PrintToString(got.token_ids)
                                         << " vs " << ::testing::PrintToString(want.token_ids);
  }
  if (got.logprobs.size() != want.logprobs.size()) {
    return ::testing::AssertionFailure()
           << got.logprobs.size() << " logprobs vs " << want.logprobs.size();
  }
  for (size_t i = 0; i < want.logprobs.size(); ++i) {
    const v1::TokenLogprob& a = got.logprobs[i];
    const v1::TokenLogprob& b = want.logprobs[i];
    bool same = a.token_id() == b.token_id() && a.logprob() == b.logprob() &&
                a.top_logprobs_size() == b.top_logprobs_size();
    for (int k = 0; same && k < a.top_logprobs_size(); ++k) {
      same = a.top_logprobs(k).token_id() == b.top_logprobs(k).token_id() &&
             a.top_logprobs(k).logprob() == b.top_logprobs(k).logprob();
    }
    if (!same) {
      return ::testing::AssertionFailure()
             << "token " << i << ": logprob " << a.logprob() << " vs " << b.logprob() << " (top "
             << a.top_logprobs_size() << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Streams all requests at once and returns each one's result.
std::vector<GenerateResult> Together(ServerProcess& server,
                                     const std::vector<v1::GenerateRequest>& reqs) {
  std::vector<std::unique_ptr<v1::Qwen::Stub>> stubs;
  std::vector<std::unique_ptr<BackgroundStream>> streams;
  for (const auto& r : reqs) {
    stubs.push_back(server.Stub());
    streams.push_back(std::make_unique<BackgroundStream>(stubs.back().get(), r));
  }
  std::vector<GenerateResult> out;
  for (auto& s : streams) {
    EXPECT_TRUE(s->WaitDone(absl::Seconds(300)));
    out.push_back(s->result());
  }
  return out;
}

// The alone result of each model at the first level run (scalar), for the comparison across
// levels.
std::map<std::string, GenerateResult>& FirstLevelResults() {
  static auto* m = new std::map<std::string, GenerateResult>();
  return *m;
}

class BatchInvarianceE2e : public ::testing::TestWithParam<std::tuple<std::string, Isa>> {};

TEST_P(BatchInvarianceE2e, SameTokensAndLogprobsHoweverTheWorkerBatches) {
  const auto& [model, isa] = GetParam();
  if (static_cast<int>(BestIsa()) < static_cast<int>(isa)) {
    GTEST_SKIP() << "this CPU lacks " << IsaName(isa);
  }
  ServerProcess::Options o;
  o.model = "models/" + model;
  o.workers = 1;  // every request on one worker,
  o.slots = 4;    // all four in its steps at once
  o.extra = {"--prefix_cache_mb=64", "--snapshot_interval=32", "--prefill_chunk=96"};
  // The workers inherit the server's environment: they pick this level.
  setenv("QWEN_ISA", std::string(IsaName(isa)).c_str(), 1);
  std::string error;
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(o, &error);
  unsetenv("QWEN_ISA");
  ASSERT_NE(server, nullptr) << error;

  constexpr int kTokens = 12;
  const std::vector<int32_t> prompt = Tokens(211, 1);
  const std::vector<int32_t> others[3] = {Tokens(97, 2), Tokens(31, 3), Tokens(260, 4)};
  // Alone, and without the prefix cache, so that nothing is resumed.
  const GenerateResult alone = Together(*server, {Greedy(prompt, kTokens, false)})[0];
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  ASSERT_EQ(alone.token_ids.size(), static_cast<size_t>(kTokens));
  ASSERT_EQ(alone.logprobs.size(), static_cast<size_t>(kTokens));

  const auto two =
      Together(*server, {Greedy(prompt, kTokens, false), Greedy(others[0], kTokens, false)});
  EXPECT_TRUE(Same(two[0], alone)) << "beside one other prompt";
  const auto four =
      Together(*server, {Greedy(others[1], kTokens, false), Greedy(others[2], kTokens, false),
                         Greedy(prompt, kTokens, false), Greedy(others[0], kTokens, false)});
  EXPECT_TRUE(Same(four[2], alone)) << "beside three other prompts";
  for (const auto& r : four) EXPECT_TRUE(r.status.ok()) << r.status.error_message();

  // A chat: the first turn leaves snapshots, the second resumes from them.
  const GenerateResult turn1 = Together(*server, {Greedy(prompt, kTokens)})[0];
  EXPECT_TRUE(Same(turn1, alone)) << "first turn";
  std::vector<int32_t> next = prompt;
  next.insert(next.end(), turn1.token_ids.begin(), turn1.token_ids.end() - 1);
  const std::vector<int32_t> user = Tokens(29, 5);
  next.insert(next.end(), user.begin(), user.end());
  const GenerateResult fresh = Together(*server, {Greedy(next, kTokens, false)})[0];
  ASSERT_TRUE(fresh.status.ok()) << fresh.status.error_message();
  EXPECT_EQ(fresh.completion.usage().cached_tokens(), 0u);
  const auto resumed =
      Together(*server, {Greedy(next, kTokens), Greedy(others[2], kTokens, false)});
  EXPECT_GT(resumed[0].completion.usage().cached_tokens(), 0u);
  EXPECT_TRUE(Same(resumed[0], fresh)) << "second turn resumed from the prefix cache";

  auto& first = FirstLevelResults();
  if (first.count(model) == 0) {
    first[model] = alone;
  } else {
    EXPECT_TRUE(Same(alone, first[model]))
        << IsaName(isa) << " against the first level run (scalar unless filtered out)";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, BatchInvarianceE2e,
    ::testing::Combine(::testing::Values("tiny-qwen35-q3_k_m.gguf", "tiny-qwen35-q4_k_m.gguf"),
                       ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Gfni)),
    [](const auto& info) {
      std::string name = std::get<0>(info.param).substr(12);  // after "tiny-qwen35-"
      return name.substr(0, name.find('.')) + "_" + std::string(IsaName(std::get<1>(info.param)));
    });

}  // namespace
}  // namespace qwen::testing

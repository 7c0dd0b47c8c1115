// End to end: a conversation's second turn resumes from the prefix cache of the worker that
// served the first (requests are routed by their prompt's first tokens), reports the cached
// tokens in its usage, and gives the same tokens as when computed from scratch.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

class PrefixCacheE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.workers = 2;
    o.slots = 2;
    o.metrics_port = FreePort();
    o.extra = {"--prefix_cache_mb=64", "--snapshot_interval=32", "--heartbeat_interval=100ms"};
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
    metrics_port_ = o.metrics_port;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static std::vector<int32_t> Tokens(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> d(0, 1000);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = d(rng);
    return t;
  }
  static v1::GenerateRequest Greedy(const std::vector<int32_t>& prompt, int n, bool cache = true) {
    v1::GenerateRequest req;
    req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(n);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_return_token_ids(true);
    if (!cache) req.set_prefix_cache(false);
    return req;
  }

  static ServerProcess* server_;
  static int metrics_port_;
};

ServerProcess* PrefixCacheE2eTest::server_ = nullptr;
int PrefixCacheE2eTest::metrics_port_ = 0;

TEST_F(PrefixCacheE2eTest, SecondTurnsResumeOnTheWorkerOfTheirFirstTurn) {
  ASSERT_NE(server_, nullptr);
  auto stub = server_->Stub();
  // Conversations one after another: without routing by prompt they would all go to worker 0
  // (the least busy, lowest index, on an idle server).
  constexpr int kConversations = 6;
  for (int c = 0; c < kConversations; ++c) {
    const std::vector<int32_t> turn1 = Tokens(120, 100 + c);
    GenerateResult first = Generate(stub.get(), Greedy(turn1, 6));
    ASSERT_TRUE(first.status.ok()) << first.status.error_message();
    EXPECT_EQ(first.completion.usage().cached_tokens(), 0u);
    ASSERT_EQ(first.token_ids.size(), 6u);
    std::vector<int32_t> turn2 = turn1;
    turn2.insert(turn2.end(), first.token_ids.begin(), first.token_ids.end() - 1);
    const std::vector<int32_t> user = Tokens(15, 200 + c);
    turn2.insert(turn2.end(), user.begin(), user.end());
    GenerateResult second = Generate(stub.get(), Greedy(turn2, 6));
    ASSERT_TRUE(second.status.ok()) << second.status.error_message();
    EXPECT_EQ(second.completion.usage().cached_tokens(), 125u) << "conversation " << c;
    EXPECT_EQ(second.completion.usage().prompt_tokens(), 140u);
    // Opted out: computed from scratch, the same tokens.
    GenerateResult fresh = Generate(stub.get(), Greedy(turn2, 6, /*cache=*/false));
    ASSERT_TRUE(fresh.status.ok()) << fresh.status.error_message();
    EXPECT_EQ(fresh.completion.usage().cached_tokens(), 0u);
    EXPECT_EQ(fresh.token_ids, second.token_ids) << "conversation " << c;
  }
  // Both workers hold snapshots: the conversations were spread over them.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::vector<MetricSample> m;
  while (absl::Now() < deadline) {
    m = ParseMetrics(HttpGet(metrics_port_, "/metrics"));
    if (MetricValue(m, "qwen_prefix_cache_hits_total") >= kConversations) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GT(MetricValue(m, "qwen_prefix_cache_entries", {{"worker", "0"}}), 0);
  EXPECT_GT(MetricValue(m, "qwen_prefix_cache_entries", {{"worker", "1"}}), 0);
  EXPECT_EQ(MetricValue(m, "qwen_prefix_cache_hits_total"), kConversations);
  EXPECT_EQ(MetricValue(m, "qwen_prefix_cache_lookups_total"), 2 * kConversations);
  EXPECT_EQ(MetricValue(m, "qwen_prefix_cache_bytes", {{"kind", "budget"}}), 2.0 * (64 << 20));

  const v1::PrefixCacheInfo info = server_->Info().prefix_cache();
  EXPECT_TRUE(info.enabled());
  EXPECT_EQ(info.budget_bytes_per_worker(), 64u << 20);
  EXPECT_EQ(info.snapshot_interval(), 32u);
  EXPECT_GT(info.used_bytes(), 0u);
  EXPECT_LE(info.used_bytes(), 2u * (64u << 20));
  EXPECT_GT(info.entries(), 0u);
  EXPECT_EQ(info.lookups(), 2u * kConversations);
  EXPECT_EQ(info.hits(), static_cast<uint64_t>(kConversations));
  EXPECT_DOUBLE_EQ(info.hit_rate(), 0.5);
  EXPECT_EQ(info.cached_tokens(), 125u * kConversations);
  EXPECT_GT(info.state_bytes_per_snapshot(), 0u);
  EXPECT_GT(info.kv_bytes_per_token(), 0u);
}

}  // namespace
}  // namespace qwen::testing

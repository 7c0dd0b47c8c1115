// End to end: speculative decoding through the public API on a model file with an MTP head.
// Every mode gives plain decoding's tokens and log-probabilities (and stop strings end the text
// where they would), usage and metrics count the drafts, GetModelInfo says the file has an MTP
// head, and bad speculative options are INVALID_ARGUMENT naming the field.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

class SpeculativeE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-mtp-q3_k_m.gguf";
    o.workers = 1;
    o.slots = 2;
    o.metrics_port = FreePort();
    o.extra = {"--max_draft=3", "--heartbeat_interval=100ms"};
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
    metrics_port_ = o.metrics_port;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  // A prompt that repeats itself, so that prompt lookup finds drafts.
  static std::vector<int32_t> Prompt() {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> d(0, 1000);
    std::vector<int32_t> t(16);
    for (auto& x : t) x = d(rng);
    for (int i = 0; i < 3; ++i) t.insert(t.end(), t.begin(), t.begin() + 16);
    return t;
  }
  static v1::GenerateRequest Request(const std::string& mode, int n) {
    v1::GenerateRequest req;
    const std::vector<int32_t> p = Prompt();
    req.mutable_prompt_token_ids()->mutable_ids()->Assign(p.begin(), p.end());
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(n);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_return_token_ids(true);
    req.mutable_output()->set_logprobs(true);
    req.mutable_output()->set_top_logprobs(3);
    req.set_prefix_cache(false);
    if (!mode.empty()) req.mutable_speculative()->set_mode(mode);
    return req;
  }

  static ServerProcess* server_;
  static int metrics_port_;
};

ServerProcess* SpeculativeE2eTest::server_ = nullptr;
int SpeculativeE2eTest::metrics_port_ = 0;

TEST_F(SpeculativeE2eTest, EveryModeGivesPlainDecodingsOutput) {
  ASSERT_NE(server_, nullptr);
  EXPECT_TRUE(server_->Info().capabilities().mtp());
  auto stub = server_->Stub();
  const GenerateResult plain = Generate(stub.get(), Request("off", 40));
  ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
  ASSERT_EQ(plain.token_ids.size(), 40u);
  EXPECT_EQ(plain.completion.usage().drafted_tokens(), 0u);
  uint64_t drafted = 0;
  for (const std::string mode : {"", "auto", "mtp", "ngram"}) {
    const GenerateResult r = Generate(stub.get(), Request(mode, 40));
    ASSERT_TRUE(r.status.ok()) << mode << ": " << r.status.error_message();
    EXPECT_EQ(r.token_ids, plain.token_ids) << mode;
    EXPECT_EQ(r.text, plain.text) << mode;
    ASSERT_EQ(r.logprobs.size(), plain.logprobs.size()) << mode;
    for (size_t i = 0; i < r.logprobs.size(); ++i) {
      EXPECT_EQ(r.logprobs[i].SerializeAsString(), plain.logprobs[i].SerializeAsString())
          << mode << " token " << i;
    }
    const v1::Usage& u = r.completion.usage();
    EXPECT_LE(u.accepted_tokens(), u.drafted_tokens()) << mode;
    if (mode == "mtp") {
      EXPECT_GT(u.drafted_tokens(), 0u);
    }
    drafted += u.drafted_tokens();
  }
  // The metrics count what the usages reported.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  double metric = -1;
  while (absl::Now() < deadline) {
    metric = MetricValue(ParseMetrics(HttpGet(metrics_port_, "/metrics")),
                         "qwen_speculative_drafted_tokens_total");
    if (metric == static_cast<double>(drafted)) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(metric, static_cast<double>(drafted));
}

TEST_F(SpeculativeE2eTest, StopStringsEndTheTextWhereTheyWould) {
  ASSERT_NE(server_, nullptr);
  auto stub = server_->Stub();
  const GenerateResult plain = Generate(stub.get(), Request("off", 40));
  ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
  ASSERT_GE(plain.text.size(), 12u);
  const std::string stop = plain.text.substr(plain.text.size() / 2, 2);
  v1::GenerateRequest off = Request("off", 40), on = Request("auto", 40);
  off.mutable_stopping()->add_stop(stop);
  on.mutable_stopping()->add_stop(stop);
  const GenerateResult a = Generate(stub.get(), off);
  const GenerateResult b = Generate(stub.get(), on);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.completion.finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(b.completion.finish_reason(), a.completion.finish_reason());
  EXPECT_EQ(b.completion.stop_sequence(), a.completion.stop_sequence());
  EXPECT_EQ(b.text, a.text);
  EXPECT_EQ(b.token_ids, a.token_ids);
  EXPECT_EQ(b.completion.usage().generated_tokens(), a.completion.usage().generated_tokens());
}

TEST_F(SpeculativeE2eTest, BadOptionsNameTheField) {
  ASSERT_NE(server_, nullptr);
  auto stub = server_->Stub();
  v1::GenerateRequest req = Request("fast", 4);
  GenerateResult r = Generate(stub.get(), req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("speculative.mode"), std::string::npos)
      << r.status.error_message();
  req = Request("mtp", 4);
  req.mutable_speculative()->set_max_draft(9);
  r = Generate(stub.get(), req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("speculative.max_draft"), std::string::npos)
      << r.status.error_message();
  req.mutable_speculative()->set_max_draft(2);
  r = Generate(stub.get(), req);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

}  // namespace
}  // namespace qwen::testing

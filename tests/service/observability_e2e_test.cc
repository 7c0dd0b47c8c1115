// End to end: the metrics endpoint and the JSON logs of a real `qwen serve` after a known mix
// of requests (successes, an invalid one, a cancelled one, a text call), and across a worker
// restart.
#include <signal.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;

class ObservabilityE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.metrics_port = FreePort();
    o.extra = {"--log_level=debug", "--log_format=json", "--heartbeat_interval=200ms"};
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
    metrics_port_ = o.metrics_port;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static std::vector<MetricSample> Scrape() {
    const std::string body = HttpGet(metrics_port_, "/metrics");
    EXPECT_FALSE(body.empty()) << "no /metrics on port " << metrics_port_;
    return ParseMetrics(body);
  }

  // The server's log lines, each parsed (a line that is not JSON fails the test).
  static std::vector<nlohmann::json> LogLines() {
    std::vector<nlohmann::json> out;
    for (absl::string_view line : absl::StrSplit(server_->Log(), '\n', absl::SkipEmpty())) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << "not JSON: " << line;
      if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
  }

  static v1::GenerateRequest Greedy(const std::string& id, const std::string& prompt, int n) {
    v1::GenerateRequest req;
    req.set_request_id(id);
    req.set_prompt(prompt);
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(n);
    req.mutable_stopping()->set_ignore_eos(true);
    return req;
  }

  static ServerProcess* server_;
  static int metrics_port_;
};

ServerProcess* ObservabilityE2eTest::server_ = nullptr;
int ObservabilityE2eTest::metrics_port_ = 0;

// One test, in steps, because the counts accumulate over the server's life.
TEST_F(ObservabilityE2eTest, MetricsAndLogsAccountForEveryRequest) {
  auto stub = server_->Stub();
  const std::vector<MetricSample> before = Scrape();
  // Nothing generated yet (the harness's GetModelInfo calls are counted, though).
  EXPECT_EQ(MetricValue(before, "qwen_requests_total", {{"method", "Generate"}}), -1);
  EXPECT_GT(MetricValue(before, "qwen_requests_total", {{"method", "GetModelInfo"}}), 0);
  EXPECT_EQ(MetricValue(before, "qwen_worker_up"), 2);
  EXPECT_EQ(MetricValue(before, "qwen_queue_depth"), 0);
  EXPECT_EQ(MetricValue(before, "qwen_model_info", {{"architecture", "qwen35"}}), 1)
      << HttpGet(metrics_port_, "/metrics");
  EXPECT_EQ(MetricValue(before, "qwen_build_info"), 1);

  // Three successes (one with its id in metadata only), one invalid, one cancelled, one
  // Tokenize.
  uint32_t prompt_ok = 0, generated_ok = 0;
  std::map<std::string, std::string> expected;  // request id -> status
  for (int k = 0; k < 3; ++k) {
    v1::GenerateRequest req = Greedy(k == 2 ? "" : absl::StrCat("obs-ok-", k),
                                     absl::StrCat("Count to ", k + 3, ":"), 4 + k);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(180)));
    if (k == 2) ctx.AddMetadata("x-request-id", "obs-ok-2");
    GenerateResult r;
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse m;
    while (reader->Read(&m)) Accumulate(m, &r);
    r.status = reader->Finish();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_TRUE(r.has_completion);
    EXPECT_EQ(r.messages.back().request_id(), absl::StrCat("obs-ok-", k));
    prompt_ok += r.completion.usage().prompt_tokens();
    generated_ok += r.completion.usage().generated_tokens();
    expected[absl::StrCat("obs-ok-", k)] = "OK";
  }
  {
    v1::GenerateRequest bad = Greedy("obs-bad", "x", 4);
    bad.mutable_sampling()->set_top_p(2);
    GenerateResult r = Generate(stub.get(), bad);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    expected["obs-bad"] = "INVALID_ARGUMENT";
  }
  int cancelled_seen = 0;
  {
    v1::GenerateRequest long_req;
    long_req.set_request_id("obs-cancel");
    long_req.mutable_prompt_token_ids()->add_ids(11);
    long_req.mutable_prompt_token_ids()->add_ids(12);
    long_req.mutable_sampling()->set_temperature(0);
    long_req.mutable_stopping()->set_max_tokens(1500);
    long_req.mutable_stopping()->set_ignore_eos(true);
    long_req.mutable_output()->set_return_token_ids(true);
    BackgroundStream s(stub.get(), long_req);
    ASSERT_TRUE(s.WaitFirstMessage());
    s.Cancel();
    ASSERT_TRUE(s.WaitDone());
    EXPECT_EQ(s.result().status.error_code(), grpc::StatusCode::CANCELLED);
    cancelled_seen = s.tokens();
    expected["obs-cancel"] = "CANCELLED";
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-request-id", "obs-tok");
    v1::TokenizeRequest req;
    req.set_text("Hello");
    v1::TokenizeResponse resp;
    ASSERT_TRUE(stub->Tokenize(&ctx, req, &resp).ok());
    auto it = ctx.GetServerInitialMetadata().find("x-request-id");
    ASSERT_NE(it, ctx.GetServerInitialMetadata().end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), "obs-tok");
    expected["obs-tok"] = "OK";
  }

  // The cancelled stream's end is accounted for once the server has seen the cancel.
  std::vector<MetricSample> m;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  do {
    m = Scrape();
    if (MetricValue(m, "qwen_requests_total", {{"code", "CANCELLED"}}) == 1 &&
        MetricValue(m, "qwen_running_sequences") == 0) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);

  EXPECT_EQ(MetricValue(m, "qwen_requests_total", {{"method", "Generate"}, {"code", "OK"}}), 3);
  EXPECT_EQ(
      MetricValue(m, "qwen_requests_total", {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}}),
      1);
  EXPECT_EQ(MetricValue(m, "qwen_requests_total", {{"method", "Generate"}, {"code", "CANCELLED"}}),
            1);
  EXPECT_EQ(MetricValue(m, "qwen_requests_total", {{"method", "Tokenize"}, {"code", "OK"}}), 1);
  // Health checks and GetModelInfo of the test harness are requests too; reflection and health
  // are not counted.
  EXPECT_EQ(MetricValue(m, "qwen_requests_total", {{"method", "grpc.health.v1.Health/Check"}}), -1);

  // Every Generate call has a duration; the completed ones a queue wait and a finish reason.
  EXPECT_EQ(MetricValue(m, "qwen_request_duration_seconds_count"), 5);
  EXPECT_EQ(MetricValue(m, "qwen_queue_wait_seconds_count"), 3);
  EXPECT_EQ(MetricValue(m, "qwen_generate_finish_total", {{"reason", "length"}}), 3);
  // Every stream that produced a token has a first-token time: the 3 and the cancelled one.
  EXPECT_EQ(MetricValue(m, "qwen_time_to_first_token_seconds_count"), 4);
  // Tokens: the completed streams' usage, plus what the cancelled one made (at least what the
  // client saw).
  const double generated = MetricValue(m, "qwen_generated_tokens_total");
  EXPECT_GE(generated, generated_ok + cancelled_seen);
  EXPECT_EQ(MetricValue(m, "qwen_prompt_tokens_total"), prompt_ok + 2);
  // One inter-token interval per token after each stream's first.
  EXPECT_EQ(MetricValue(m, "qwen_inter_token_latency_seconds_count"), generated - 4);
  // Histograms are cumulative and end with +Inf = count.
  for (const char* h : {"qwen_time_to_first_token_seconds", "qwen_inter_token_latency_seconds",
                        "qwen_request_duration_seconds", "qwen_queue_wait_seconds"}) {
    double last = 0;
    for (const MetricSample& s : m) {
      if (s.name != absl::StrCat(h, "_bucket")) continue;
      EXPECT_GE(s.value, last) << h;
      last = s.value;
    }
    EXPECT_EQ(MetricValue(m, absl::StrCat(h, "_bucket"), {{"le", "+Inf"}}),
              MetricValue(m, absl::StrCat(h, "_count")))
        << h;
  }
  EXPECT_EQ(MetricValue(m, "qwen_queue_depth"), 0);
  EXPECT_EQ(MetricValue(m, "qwen_worker_slots"), 8);

  // The workers' own counts arrive with the heartbeats.
  const absl::Time hb_deadline = absl::Now() + absl::Seconds(30);
  while (MetricValue(m, "qwen_worker_decode_tokens_total") < generated &&
         absl::Now() < hb_deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    m = Scrape();
  }
  EXPECT_GE(MetricValue(m, "qwen_worker_decode_tokens_total"), generated);
  EXPECT_GE(MetricValue(m, "qwen_worker_prefill_tokens_total"), prompt_ok);
  EXPECT_GT(MetricValue(m, "qwen_worker_state_bytes", {{"kind", "kv_reserved"}}), 0);
  EXPECT_GT(MetricValue(m, "qwen_worker_state_bytes", {{"kind", "recurrent"}}), 0);
  EXPECT_EQ(MetricValue(m, "qwen_worker_state", {{"state", "up"}}), 2);
  EXPECT_EQ(MetricValue(m, "qwen_worker_restarts_total"), 0);
  EXPECT_GE(MetricValue(m, "qwen_decode_tokens_per_second"), 0);

  // The logs: every line is JSON; one request line per request, with its status.
  std::map<std::string, int> lines_per_id;
  std::set<std::string> worker_ids;
  for (const nlohmann::json& j : LogLines()) {
    ASSERT_TRUE(j.contains("ts") && j.contains("level") && j.contains("msg")) << j.dump();
    if (j.value("component", "") == "request" && j.value("method", "") != "GetModelInfo" &&
        j.value("method", "").find('/') == std::string::npos) {
      const std::string id = j.value("request_id", "");
      ++lines_per_id[id];
      ASSERT_TRUE(expected.count(id)) << "unexpected request line " << j.dump();
      EXPECT_EQ(j["status"], expected[id]) << j.dump();
      EXPECT_THAT(j.value("peer", ""), HasSubstr("127.0.0.1")) << j.dump();
      EXPECT_TRUE(j.contains("duration_ms")) << j.dump();
      if (j["method"] == "Generate" && j["status"] == "OK") {
        EXPECT_GT(j["prompt_tokens"].get<int>(), 0);
        EXPECT_GT(j["generated_tokens"].get<int>(), 0);
        EXPECT_TRUE(j.contains("queue_wait_ms")) << j.dump();
        EXPECT_TRUE(j.contains("time_to_first_token_ms")) << j.dump();
        EXPECT_EQ(j["finish_reason"], "length");
      }
      if (id == "obs-bad") {
        EXPECT_THAT(j.value("error", ""), HasSubstr("sampling.top_p"));
      }
    }
    // The workers log the request id of what they run (debug level).
    if (j.value("component", "") == "worker" && j.contains("request_id")) {
      EXPECT_TRUE(j.contains("worker")) << j.dump();
      worker_ids.insert(j["request_id"].get<std::string>());
    }
  }
  for (const auto& [id, status] : expected) EXPECT_EQ(lines_per_id[id], 1) << id;
  for (const char* id : {"obs-ok-0", "obs-ok-1", "obs-ok-2", "obs-cancel"}) {
    EXPECT_TRUE(worker_ids.count(id)) << id << " not in the workers' lines";
  }
}

// A request gRPC cannot parse (a string field that is not UTF-8) never reaches GenerateCall; it
// is still one request line, one count and one observation of the duration histogram (whose
// count the README promises equals the Generate calls).
TEST_F(ObservabilityE2eTest, AnUnparsableGenerateIsCountedAndLogged) {
  auto stub = server_->Stub();
  const std::vector<MetricSample> start = Scrape();
  const double before = MetricValue(start, "qwen_requests_total",
                                    {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}});
  const double durations_before =
      std::max(MetricValue(start, "qwen_request_duration_seconds_count"), 0.0);
  v1::GenerateRequest req;
  req.set_prompt("caf\xc3 \xff");
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-request-id", "obs-unparsed");
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  const grpc::Status st = reader->Finish();
  ASSERT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  std::vector<MetricSample> m;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    m = Scrape();
    if (MetricValue(m, "qwen_requests_total",
                    {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}}) ==
        std::max(before, 0.0) + 1) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  EXPECT_EQ(
      MetricValue(m, "qwen_requests_total", {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}}),
      std::max(before, 0.0) + 1);
  EXPECT_EQ(MetricValue(m, "qwen_request_duration_seconds_count"), durations_before + 1);
  int lines = 0;
  for (const nlohmann::json& j : LogLines()) {
    if (j.value("component", "") == "request" && j.value("request_id", "") == "obs-unparsed") {
      ++lines;
      EXPECT_EQ(j["status"], "INVALID_ARGUMENT") << j.dump();
      EXPECT_EQ(j["method"], "Generate") << j.dump();
    }
  }
  EXPECT_EQ(lines, 1);
}

TEST_F(ObservabilityE2eTest, ADeadlineCountsAsDeadlineExceeded) {
  auto stub = server_->Stub();
  v1::GenerateRequest req;
  req.set_request_id("obs-deadline");
  req.mutable_prompt_token_ids()->add_ids(21);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(1800);
  req.mutable_stopping()->set_ignore_eos(true);
  const GenerateResult r = Generate(stub.get(), req, absl::Seconds(2));
  ASSERT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  std::vector<MetricSample> m;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  do {
    m = Scrape();
    if (MetricValue(m, "qwen_requests_total", {{"code", "DEADLINE_EXCEEDED"}}) == 1) break;
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  EXPECT_EQ(MetricValue(m, "qwen_requests_total",
                        {{"method", "Generate"}, {"code", "DEADLINE_EXCEEDED"}}),
            1);
  int lines = 0;
  for (const nlohmann::json& j : LogLines()) {
    if (j.value("component", "") == "request" && j.value("request_id", "") == "obs-deadline") {
      ++lines;
      EXPECT_EQ(j["status"], "DEADLINE_EXCEEDED") << j.dump();
    }
  }
  EXPECT_EQ(lines, 1);
}

TEST_F(ObservabilityE2eTest, CountersSurviveAWorkerRestart) {
  auto stub = server_->Stub();
  GenerateResult r = Generate(stub.get(), Greedy("obs-before-kill", "Before", 6));
  ASSERT_TRUE(r.status.ok());
  // Wait for the heartbeats to report it.
  std::vector<MetricSample> m = Scrape();
  const double requests = MetricValue(m, "qwen_requests_total");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  double decode = MetricValue(m, "qwen_worker_decode_tokens_total");
  while (absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(500));
    m = Scrape();
    const double now = MetricValue(m, "qwen_worker_decode_tokens_total");
    if (now == decode) break;  // settled
    decode = now;
  }
  const v1::ServingInfo info = server_->Info().serving();
  ASSERT_EQ(info.worker_status_size(), 2);
  const pid_t victim = static_cast<pid_t>(info.worker_status(0).pid());
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  // The pool notices, restarts it, and the metrics say so.
  const absl::Time restart_deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < restart_deadline) {
    m = Scrape();
    if (MetricValue(m, "qwen_worker_restarts_total", {{"worker", "0"}}) == 1 &&
        MetricValue(m, "qwen_worker_up", {{"worker", "0"}}) == 1) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(MetricValue(m, "qwen_worker_restarts_total", {{"worker", "0"}}), 1);
  EXPECT_EQ(MetricValue(m, "qwen_worker_up", {{"worker", "0"}}), 1);
  // Nothing went backwards (GetModelInfo calls of the harness may have added to the total).
  EXPECT_GE(MetricValue(m, "qwen_requests_total"), requests);
  absl::SleepFor(absl::Seconds(1));  // heartbeats of the new process
  m = Scrape();
  EXPECT_GE(MetricValue(m, "qwen_worker_decode_tokens_total"), decode);
  // The lifecycle events are in the log.
  bool exited = false, up_again = false;
  for (const nlohmann::json& j : LogLines()) {
    if (j.value("event", "") == "worker_exited" && j.value("worker", -1) == 0) exited = true;
    if (exited && j.value("event", "") == "worker_up" && j.value("worker", -1) == 0) {
      up_again = true;
    }
  }
  EXPECT_TRUE(exited);
  EXPECT_TRUE(up_again);
}

}  // namespace
}  // namespace qwen::testing

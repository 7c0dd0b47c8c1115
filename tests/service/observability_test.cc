// Unit tests of the log line format, the request line and the metrics (no server).
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "service/dispatcher.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/request_log.h"
#include "service/rpc_observer.h"

namespace qwen::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class LogFormatTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetLogFormat(LogFormat::kJson);
    SetLogLevel(LogLevel::kInfo);
  }
};

TEST_F(LogFormatTest, JsonLineHasTheStandardKeysThenTheFields) {
  SetLogFormat(LogFormat::kJson);
  const std::string line =
      FormatLogLine(LogLevel::kWarning, "pool", "worker 1 exited", {{"worker", 1}, {"pid", 42}},
                    absl::FromUnixMillis(1700000000123));
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // one line
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(line);
  EXPECT_EQ(j["ts"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["component"], "pool");
  EXPECT_EQ(j["msg"], "worker 1 exited");
  EXPECT_EQ(j["worker"], 1);
  EXPECT_EQ(j["pid"], 42);  // a field may override the process's pid key
  EXPECT_TRUE(j.contains("process"));
  EXPECT_EQ(j.begin().key(), "ts");
}

TEST_F(LogFormatTest, InvalidUtf8AndControlCharactersStayOneValidLine) {
  const std::string line = FormatLogLine(LogLevel::kError, "x", "bad \xff byte\nnext line",
                                         {{"peer", "a\"b"}}, absl::Now());
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["msg"], "bad \xEF\xBF\xBD byte\nnext line");
  EXPECT_EQ(j["peer"], "a\"b");
}

TEST_F(LogFormatTest, TextLineIsForPeople) {
  SetLogFormat(LogFormat::kText);
  const std::string line =
      FormatLogLine(LogLevel::kInfo, "pool", "worker 0 is up",
                    {{"worker", 0}, {"note", "two words"}}, absl::FromUnixMillis(1700000000123));
  EXPECT_THAT(line, HasSubstr("2023-11-14T22:13:20.123Z I "));
  EXPECT_THAT(line, HasSubstr("] pool: worker 0 is up worker=0 note=\"two words\"\n"));
}

TEST_F(LogFormatTest, LevelsFilterAndParse) {
  SetLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  EXPECT_EQ(*ParseLogLevel("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarning);
  EXPECT_FALSE(ParseLogLevel("verbose").ok());
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("xml").ok());
  EXPECT_STREQ(LogLevelName(LogLevel::kError), "error");
}

RequestSummary OkGenerate() {
  RequestSummary r;
  r.method = "Generate";
  r.request_id = "abc";
  r.peer = "ipv4:127.0.0.1:1234";
  r.duration = absl::Milliseconds(1500);
  r.generate = true;
  r.worker = 1;
  r.attempts = 1;
  r.prompt_tokens = 10;
  r.generated_tokens = 5;
  r.cached_tokens = 2;
  r.queue_wait = absl::Milliseconds(3);
  r.time_to_first_token = absl::Milliseconds(250);
  r.finish_reason = "length";
  return r;
}

TEST(RequestLogTest, FieldsOfAGenerateLine) {
  const LogFields f = RequestLogFields(OkGenerate());
  EXPECT_EQ(f["request_id"], "abc");
  EXPECT_EQ(f["method"], "Generate");
  EXPECT_EQ(f["status"], "OK");
  EXPECT_FALSE(f.contains("error"));
  EXPECT_EQ(f["prompt_tokens"], 10);
  EXPECT_EQ(f["generated_tokens"], 5);
  EXPECT_DOUBLE_EQ(f["duration_ms"].get<double>(), 1500.0);
  EXPECT_DOUBLE_EQ(f["queue_wait_ms"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(f["time_to_first_token_ms"].get<double>(), 250.0);
  EXPECT_EQ(f["finish_reason"], "length");
  EXPECT_EQ(f["worker"], 1);
}

TEST(RequestLogTest, ErrorsCarryTheirMessageAndLevel) {
  RequestSummary r;
  r.method = "Tokenize";
  r.status = absl::UnavailableError("no worker");
  const LogFields f = RequestLogFields(r);
  EXPECT_EQ(f["status"], "UNAVAILABLE");
  EXPECT_EQ(f["error"], "no worker");
  EXPECT_FALSE(f.contains("prompt_tokens"));  // not a Generate
  EXPECT_EQ(RequestLogLevel(absl::StatusCode::kOk), LogLevel::kInfo);
  EXPECT_EQ(RequestLogLevel(absl::StatusCode::kCancelled), LogLevel::kInfo);
  EXPECT_EQ(RequestLogLevel(absl::StatusCode::kResourceExhausted), LogLevel::kWarning);
  EXPECT_EQ(RequestLogLevel(absl::StatusCode::kInternal), LogLevel::kError);
}

TEST(RpcObserverTest, MethodLabels) {
  EXPECT_EQ(MethodLabel("/qwen.v1.Qwen/Tokenize"), "Tokenize");
  EXPECT_EQ(MethodLabel("/qwen.v1.Qwen/Generate"), "Generate");
  // Clients choose the path: a made-up method must not become a new label value.
  EXPECT_EQ(MethodLabel("/qwen.v1.Qwen/NoSuchMethod"), "unknown");
  EXPECT_EQ(MethodLabel("/qwen.v1.Qwen/"), "unknown");
  EXPECT_EQ(MethodLabel("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
}

// The value of the series `name{labels}` in a text exposition; -1 when absent.
double Sample(const std::string& text, const std::string& series) {
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

class MetricsTest : public ::testing::Test {
 protected:
  Metrics metrics_{{{"architecture", "qwen35"}, {"file_type", "Q3_K_M"}}, BuildInfoLabels()};
};

TEST_F(MetricsTest, RequestsCountByMethodAndCode) {
  metrics_.RecordRequest(OkGenerate());
  metrics_.RecordRequest(OkGenerate());
  RequestSummary cancelled;
  cancelled.method = "Generate";
  cancelled.generate = true;
  cancelled.status = absl::CancelledError("bye");
  cancelled.attempts = 1;
  cancelled.prompt_tokens = 7;
  cancelled.generated_tokens = 3;
  metrics_.RecordRequest(cancelled);
  RequestSummary tok;
  tok.method = "Tokenize";
  metrics_.RecordRequest(tok);
  const std::string text = metrics_.Render();
  EXPECT_EQ(Sample(text, "qwen_requests_total{code=\"OK\",method=\"Generate\",protocol=\"grpc\"}"),
            2);
  EXPECT_EQ(
      Sample(text, "qwen_requests_total{code=\"CANCELLED\",method=\"Generate\",protocol=\"grpc\"}"),
      1);
  EXPECT_EQ(Sample(text, "qwen_requests_total{code=\"OK\",method=\"Tokenize\",protocol=\"grpc\"}"),
            1);
  EXPECT_EQ(Sample(text, "qwen_request_duration_seconds_count{protocol=\"grpc\"}"), 3);
  EXPECT_EQ(Sample(text, "qwen_queue_wait_seconds_count{protocol=\"grpc\"}"),
            2);  // the completed ones
  EXPECT_EQ(Sample(text, "qwen_prompt_tokens_total"), 27);
  EXPECT_EQ(Sample(text, "qwen_generated_tokens_total"), 13);
  EXPECT_EQ(Sample(text, "qwen_cached_tokens_total"), 4);
  EXPECT_EQ(Sample(text, "qwen_generate_finish_total{protocol=\"grpc\",reason=\"length\"}"), 2);
  EXPECT_EQ(Sample(text, "qwen_model_info{architecture=\"qwen35\",file_type=\"Q3_K_M\"}"), 1);
  EXPECT_THAT(text, HasSubstr("qwen_build_info{"));
  EXPECT_THAT(text, HasSubstr("isa=\""));
}

TEST_F(MetricsTest, InterTokenLatencyCountsEveryTokenAfterTheFirst) {
  metrics_.ObserveTimeToFirstToken(absl::Milliseconds(300));
  metrics_.ObserveInterTokenLatency(absl::ZeroDuration(), 0);
  metrics_.ObserveInterTokenLatency(absl::Milliseconds(40), 1);
  metrics_.ObserveInterTokenLatency(absl::Milliseconds(90), 3);  // 30 ms each
  const std::string text = metrics_.Render();
  EXPECT_EQ(Sample(text, "qwen_time_to_first_token_seconds_count{protocol=\"grpc\"}"), 1);
  EXPECT_EQ(Sample(text, "qwen_inter_token_latency_seconds_count{protocol=\"grpc\"}"), 4);
  EXPECT_NEAR(Sample(text, "qwen_inter_token_latency_seconds_sum{protocol=\"grpc\"}"), 0.13, 1e-9);
  EXPECT_EQ(Sample(text, "qwen_inter_token_latency_seconds_bucket{protocol=\"grpc\",le=\"0.025\"}"),
            0);
  EXPECT_EQ(Sample(text, "qwen_inter_token_latency_seconds_bucket{protocol=\"grpc\",le=\"0.05\"}"),
            4);
  EXPECT_EQ(Sample(text, "qwen_inter_token_latency_seconds_bucket{protocol=\"grpc\",le=\"+Inf\"}"),
            4);
}

TEST_F(MetricsTest, WorkerCountersSurviveARestart) {
  worker::v1::HealthResponse h;
  const absl::Time t0 = absl::Now();
  h.set_tokens_prefilled(100);
  h.set_tokens_generated(10);
  metrics_.OnWorkerHealth(0, 1, h, t0);
  h.set_tokens_prefilled(600);
  h.set_tokens_generated(60);
  metrics_.OnWorkerHealth(0, 1, h, t0 + Metrics::kRateWindow);
  Metrics::WorkerTotals t = metrics_.GetWorkerTotals(0);
  EXPECT_EQ(t.prefill_tokens, 600);
  EXPECT_EQ(t.decode_tokens, 60);
  EXPECT_DOUBLE_EQ(t.prefill_per_second, 500 / absl::ToDoubleSeconds(Metrics::kRateWindow));
  EXPECT_DOUBLE_EQ(t.decode_per_second, 50 / absl::ToDoubleSeconds(Metrics::kRateWindow));
  // Restarted: the new process counts from zero; the totals go on from where they were.
  h.set_tokens_prefilled(50);
  h.set_tokens_generated(5);
  metrics_.OnWorkerHealth(0, 2, h, t0 + absl::Seconds(7));
  t = metrics_.GetWorkerTotals(0);
  EXPECT_EQ(t.prefill_tokens, 650);
  EXPECT_EQ(t.decode_tokens, 65);
  EXPECT_EQ(t.decode_per_second, 0);  // a new window
  // A late answer of the old process is ignored.
  h.set_tokens_prefilled(700);
  metrics_.OnWorkerHealth(0, 1, h, t0 + absl::Seconds(8));
  EXPECT_EQ(metrics_.GetWorkerTotals(0).prefill_tokens, 650);
  EXPECT_EQ(metrics_.GetWorkerTotals(3).prefill_tokens, 0);  // never heard of
  // Without a pool there are no per-worker series.
  EXPECT_THAT(metrics_.Render(), Not(HasSubstr("qwen_worker_up{")));
}

// The HTTP API's requests are observed in the same histograms, under protocol="http".
TEST_F(MetricsTest, TheProtocolLabelSeparatesHttpFromGrpc) {
  RequestSummary r = OkGenerate();
  r.protocol = "http";
  metrics_.RecordRequest(r);
  metrics_.ObserveTimeToFirstToken(absl::Milliseconds(10), "http");
  metrics_.ObserveInterTokenLatency(absl::Milliseconds(10), 2, "http");
  const std::string text = metrics_.Render();
  EXPECT_EQ(Sample(text, "qwen_request_duration_seconds_count{protocol=\"http\"}"), 1);
  EXPECT_EQ(Sample(text, "qwen_request_duration_seconds_count{protocol=\"grpc\"}"), 0);
  EXPECT_EQ(Sample(text, "qwen_time_to_first_token_seconds_count{protocol=\"http\"}"), 1);
  EXPECT_EQ(Sample(text, "qwen_inter_token_latency_seconds_count{protocol=\"http\"}"), 2);
  EXPECT_EQ(Sample(text, "qwen_queue_wait_seconds_count{protocol=\"http\"}"), 1);
  // The request and finish counters carry the label too.
  EXPECT_EQ(Sample(text, "qwen_requests_total{code=\"OK\",method=\"Generate\",protocol=\"http\"}"),
            1);
  EXPECT_EQ(Sample(text, "qwen_generate_finish_total{protocol=\"http\",reason=\"length\"}"), 1);
  EXPECT_THAT(text, Not(HasSubstr("qwen_requests_total{code=\"OK\",method=\"Generate\","
                                  "protocol=\"grpc\"}")));
  EXPECT_EQ(Sample(text, "qwen_request_retries_total{protocol=\"http\"}"), 0);
  EXPECT_EQ(Sample(text, "qwen_request_retries_total{protocol=\"grpc\"}"), 0);
  // Anything but "http" is gRPC: a stray value adds no series.
  r.protocol = "stray-protocol";
  r.attempts = 3;
  metrics_.RecordRequest(r);
  const std::string after = metrics_.Render();
  EXPECT_EQ(Sample(after, "qwen_requests_total{code=\"OK\",method=\"Generate\",protocol=\"grpc\"}"),
            1);
  EXPECT_EQ(Sample(after, "qwen_request_retries_total{protocol=\"grpc\"}"), 2);
  EXPECT_THAT(after, Not(HasSubstr("stray-protocol")));
}

// The gauges the inference gateway's endpoint picker reads: single series, slots as a share.
TEST_F(MetricsTest, GatewayGauges) {
  Dispatcher dispatcher(/*n_workers=*/1, /*queue_capacity=*/4);
  dispatcher.WorkerUp(0, 1, 4);
  std::vector<WorkerRef> started;
  for (uint64_t id = 1; id <= 2; ++id) {
    Dispatcher::Job job;
    job.id = id;
    job.start = [&started](WorkerRef w) { started.push_back(w); };
    job.fail = [](absl::Status) {};
    ASSERT_TRUE(dispatcher.Submit(std::move(job)).ok());
  }
  metrics_.SetSources(&dispatcher, nullptr);
  const std::string text = metrics_.Render();
  metrics_.SetSources(nullptr, nullptr);
  EXPECT_EQ(started.size(), 2u);
  EXPECT_EQ(Sample(text, "qwen_requests_running"), 2);
  EXPECT_EQ(Sample(text, "qwen_slot_utilization"), 0.5);
  EXPECT_EQ(Sample(text, "qwen_queue_depth"), 0);
  EXPECT_EQ(Sample(text, "qwen_kv_cache_utilization"), 0);  // no worker has reported KV yet
}

}  // namespace
}  // namespace qwen::service

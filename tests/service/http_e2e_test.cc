// End to end: the OpenAI-compatible HTTP API (qwen serve --http_port) of the real server and its
// workers, driven with curl and with the official `openai` npm package (installed by npm into
// the build folder, never committed).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

struct HttpResult {
  int status = 0;
  std::string headers;
  std::string body;
  double seconds = 0;
  Json json() const { return Json::parse(body, nullptr, false); }
};

// A shell command's exit status and output.
CommandResult Sh(const std::string& command) {
  CommandResult r;
  r.out = RunCommand(command, &r.status);
  return r;
}

std::string TempPath(const std::string& tag) {
  char path[] = "/tmp/qwen-http-test-XXXXXX";
  const int fd = mkstemp(path);
  if (fd >= 0) close(fd);
  return absl::StrCat(path, tag);
}

// One request with curl. `headers` are "Name: value" (no single quotes).
HttpResult Curl(const std::string& method, const std::string& url, const std::string& body = "",
                const std::vector<std::string>& headers = {}, const std::string& extra = "") {
  const std::string body_file = TempPath(".body"), out_file = TempPath(".out"),
                    header_file = TempPath(".hdr");
  std::string cmd = absl::StrCat("curl -sS -N -X ", method, " -D '", header_file, "' -o '",
                                 out_file, "' -w '%{http_code} %{time_total}' ", extra);
  if (!body.empty() || method == "POST") {
    std::ofstream(body_file, std::ios::binary) << body;
    absl::StrAppend(&cmd, " -H 'Content-Type: application/json' --data-binary @'", body_file, "'");
  }
  for (const std::string& h : headers) absl::StrAppend(&cmd, " -H '", h, "'");
  absl::StrAppend(&cmd, " '", url, "' 2>&1");
  const CommandResult c = Sh(cmd);
  HttpResult r;
  std::vector<std::string> parts = absl::StrSplit(c.out, ' ');
  if (parts.size() >= 2) {
    r.status = std::atoi(parts[parts.size() - 2].c_str());
    r.seconds = std::atof(parts.back().c_str());
  }
  r.body = ReadFile(out_file);
  r.headers = ReadFile(header_file);
  unlink(body_file.c_str());
  unlink(out_file.c_str());
  unlink(header_file.c_str());
  return r;
}

// The JSON events of a Server-Sent Events body, and whether it ended with [DONE].
struct Events {
  std::vector<Json> chunks;
  bool done = false;
};
Events ParseEvents(const std::string& body) {
  Events e;
  for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    if (!absl::ConsumePrefix(&block, "data: ")) continue;
    if (block == "[DONE]") {
      e.done = true;
      continue;
    }
    e.chunks.push_back(Json::parse(block, nullptr, false));
  }
  return e;
}

class HttpE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-q3_k_m.gguf";
    o.workers = 2;
    o.slots = 2;
    o.ctx_size = 4096;
    o.extra = {"--http_port=-1", "--served_model_name=tiny"};
    o.metrics_port = FreePort();
    metrics_port_ = o.metrics_port;
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
    ASSERT_GT(server_->http_port(), 0) << server_->Log();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop(absl::Seconds(30));
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static std::string Url(const std::string& path) { return server_->http_url() + path; }
  static HttpResult Chat(const Json& body, const std::vector<std::string>& headers = {}) {
    return Curl("POST", Url("/v1/chat/completions"), body.dump(), headers);
  }
  static Json Hello() {
    return Json::array({{{"role", "user"}, {"content", "Hello, who are you?"}}});
  }

  static std::vector<MetricSample> Scrape() {
    return ParseMetrics(HttpGet(metrics_port_, "/metrics"));
  }

  static ServerProcess* server_;
  static int metrics_port_;
};

ServerProcess* HttpE2eTest::server_ = nullptr;
int HttpE2eTest::metrics_port_ = 0;

// HTTP requests count in the request counter and histograms of gRPC calls, under
// protocol="http"; gRPC's series do not move.
TEST_F(HttpE2eTest, RequestsCountUnderTheHttpProtocol) {
  const std::vector<MetricSample> before = Scrape();
  ASSERT_FALSE(before.empty());
  HttpResult r = Chat({{"messages", Hello()},
                       {"max_tokens", 4},
                       {"chat_template_kwargs", {{"enable_thinking", false}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  HttpResult t = Curl("POST", Url("/tokenize"), R"({"content": "Hello"})");
  ASSERT_EQ(t.status, 200) << t.body;
  // Refused by the Generate call it became (the context is too small for it), and by the HTTP
  // API itself (a field it refuses, an unknown model): all count.
  HttpResult bad = Chat({{"messages", Hello()}, {"max_tokens", 1000000}});
  ASSERT_EQ(bad.status, 400) << bad.body;
  HttpResult refused = Chat({{"messages", Hello()}, {"top_k", -5}});
  ASSERT_EQ(refused.status, 400) << refused.body;
  HttpResult unknown = Chat({{"messages", Hello()}, {"model", "no-such-model"}});
  ASSERT_EQ(unknown.status, 404) << unknown.body;
  const std::vector<MetricSample> after = Scrape();
  auto delta = [&](const std::string& name, const std::map<std::string, std::string>& labels) {
    return std::max(0.0, MetricValue(after, name, labels)) -
           std::max(0.0, MetricValue(before, name, labels));
  };
  EXPECT_EQ(
      delta("qwen_requests_total", {{"method", "Generate"}, {"code", "OK"}, {"protocol", "http"}}),
      1);
  EXPECT_EQ(delta("qwen_requests_total",
                  {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}, {"protocol", "http"}}),
            2);
  EXPECT_EQ(delta("qwen_requests_total",
                  {{"method", "Generate"}, {"code", "NOT_FOUND"}, {"protocol", "http"}}),
            1);
  EXPECT_EQ(
      delta("qwen_requests_total", {{"method", "Tokenize"}, {"code", "OK"}, {"protocol", "http"}}),
      1);
  EXPECT_EQ(delta("qwen_requests_total", {{"protocol", "grpc"}}), 0);
  EXPECT_EQ(delta("qwen_generate_finish_total", {{"protocol", "http"}}), 1);
  EXPECT_EQ(delta("qwen_time_to_first_token_seconds_count", {{"protocol", "http"}}), 1);
  EXPECT_EQ(delta("qwen_request_duration_seconds_count", {{"protocol", "http"}}), 4);
  EXPECT_EQ(delta("qwen_request_duration_seconds_count", {{"protocol", "grpc"}}), 0);
}

TEST_F(HttpE2eTest, HealthAndModels) {
  HttpResult h = Curl("GET", Url("/health"));
  EXPECT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(h.json()["status"], "ok");

  HttpResult m = Curl("GET", Url("/v1/models"));
  ASSERT_EQ(m.status, 200) << m.body;
  const Json models = m.json();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["context_length"], 4096);

  EXPECT_EQ(Curl("GET", Url("/v1/models/tiny")).status, 200);
  HttpResult unknown = Curl("GET", Url("/v1/models/other"));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.json()["error"]["code"], "model_not_found");

  HttpResult nowhere = Curl("GET", Url("/v1/nothing"));
  EXPECT_EQ(nowhere.status, 404);
  EXPECT_EQ(nowhere.json()["error"]["type"], "not_found_error");
}

// The kernel's count of connections dropped at a full listen queue (all sockets of the machine).
int64_t ListenOverflows() {
  std::ifstream in("/proc/net/netstat");
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (!absl::StartsWith(names, "TcpExt:")) continue;
    std::vector<std::string> n = absl::StrSplit(names, ' '), v = absl::StrSplit(values, ' ');
    for (size_t i = 0; i < n.size() && i < v.size(); ++i) {
      int64_t x = 0;
      if (n[i] == "ListenOverflows" && absl::SimpleAtoi(v[i], &x)) return x;
    }
  }
  return -1;
}

// A gateway opening its connections to a replica opens many at once. cpp-httplib listens with a
// backlog of 5: the kernel dropped the handshake of the 7th connection of a burst, and its client
// only retried a second later. The server raises the backlog; no connection of a burst of 64 is
// dropped, and each is served.
TEST_F(HttpE2eTest, ABurstOfConnectionsIsAcceptedAtOnce) {
  const int64_t overflows_before = ListenOverflows();
  ASSERT_GE(overflows_before, 0) << "no ListenOverflows in /proc/net/netstat";
  constexpr int kConnections = 64;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->http_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> fds;
  absl::Cleanup close_all = [&fds] {
    for (int fd : fds) close(fd);
  };
  for (int i = 0; i < kConnections; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    const int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << strerror(errno);
  }
  const std::string request = "GET /health HTTP/1.1\r\nHost: qwen\r\nConnection: close\r\n\r\n";
  int served = 0;
  for (int fd : fds) {
    pollfd p{fd, POLLOUT, 0};
    ASSERT_EQ(poll(&p, 1, 30000), 1) << "a connection was not established in 30 s";
    int err = 0;
    socklen_t len = sizeof(err);
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    ASSERT_EQ(err, 0) << strerror(err);
    ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
  }
  for (int fd : fds) {
    std::string response;
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 30000) != 1) break;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      response.append(buf, static_cast<size_t>(n));
    }
    if (absl::StartsWith(response, "HTTP/1.1 200")) ++served;
  }
  EXPECT_EQ(served, kConnections);
  // Counted by the kernel for the whole machine: another program's full queue at this moment
  // would show here too, which nothing else in this suite makes.
  EXPECT_EQ(ListenOverflows(), overflows_before)
      << "the kernel dropped connections at a full listen queue";
}

TEST_F(HttpE2eTest, NonStreamedChat) {
  HttpResult r = Chat({{"model", "tiny"},
                       {"messages", Hello()},
                       {"max_tokens", 8},
                       {"temperature", 0},
                       {"chat_template_kwargs", {{"enable_thinking", false}}}},
                      {"X-Request-Id: hello-1"});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "chatcmpl-hello-1");
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string()) << r.body;
  EXPECT_THAT(j["choices"][0]["finish_reason"].get<std::string>(),
              ::testing::AnyOf("stop", "length"));
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(j["usage"]["completion_tokens"].get<int>(), 0);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(j["usage"]["total_tokens"].get<int>(),
            j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
}

// The same request streamed: a role chunk first, content deltas, a finish_reason, the usage
// chunk (include_usage) with no choices, then [DONE]; the text is the non-streamed one.
TEST_F(HttpE2eTest, StreamedChatMatchesTheWholeResponse) {
  Json body = {{"messages", Hello()},
               {"max_tokens", 12},
               {"temperature", 0},
               {"chat_template_kwargs", {{"enable_thinking", false}}}};
  HttpResult whole = Chat(body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  HttpResult r = Chat(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("text/event-stream"));
  const Events e = ParseEvents(r.body);
  EXPECT_TRUE(e.done) << r.body;
  ASSERT_GE(e.chunks.size(), 3u) << r.body;
  EXPECT_EQ(e.chunks.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(e.chunks.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  std::string finish;
  for (const Json& c : e.chunks) {
    EXPECT_TRUE(c.contains("usage")) << c.dump();  // null but present with include_usage
    for (const Json& ch : c["choices"]) {
      if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
  }
  const Json last = e.chunks.back();
  EXPECT_TRUE(last["choices"].empty()) << last.dump();
  EXPECT_EQ(last["usage"]["completion_tokens"], whole.json()["usage"]["completion_tokens"]);
  EXPECT_EQ(content, whole.json()["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, whole.json()["choices"][0]["finish_reason"]);
}

// The same request through gRPC and through HTTP at temperature 0: the same tokens, the same
// log-probabilities and the same text.
TEST_F(HttpE2eTest, GrpcAndHttpGiveTheSameTokens) {
  HttpResult r = Chat({{"messages", Hello()},
                       {"max_tokens", 16},
                       {"temperature", 0},
                       {"logprobs", true},
                       {"chat_template_kwargs", {{"enable_thinking", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hello, who are you?");
  req.mutable_chat()->set_enable_thinking(true);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(16);
  req.mutable_output()->set_logprobs(true);
  GenerateResult g = Generate(server_->Stub().get(), req);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  const Json& lp = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), g.logprobs.size()) << r.body;
  for (size_t k = 0; k < lp.size(); ++k) {
    EXPECT_EQ(lp[k]["token"], g.logprobs[k].token()) << k;
    EXPECT_FLOAT_EQ(lp[k]["logprob"].get<float>(), g.logprobs[k].logprob()) << k;
  }
  const Json& msg = j["choices"][0]["message"];
  EXPECT_EQ(msg["content"].is_null() ? std::string() : msg["content"].get<std::string>(), g.text);
  EXPECT_EQ(msg.value("reasoning_content", std::string()), g.reasoning);
}

TEST_F(HttpE2eTest, SeveralChoicesAndLogprobs) {
  HttpResult r = Chat(
      {{"messages", Json::array({{{"role", "user"}, {"content", "Name two colours of the sea."}}})},
       {"max_tokens", 4},
       {"n", 2},
       {"seed", 3},
       {"logprobs", true},
       {"top_logprobs", 3}},
      {"X-Request-Id: choices"});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  ASSERT_EQ(j["choices"].size(), 2u);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(j["choices"][k]["index"], k);
    const Json& lp = j["choices"][k]["logprobs"]["content"];
    ASSERT_FALSE(lp.empty()) << r.body;
    for (const Json& t : lp) {
      EXPECT_LE(t["logprob"].get<double>(), 0.0);
      EXPECT_EQ(t["top_logprobs"].size(), 3u);
      EXPECT_TRUE(t["bytes"].is_array());
    }
  }
  // Usage counts the shared prompt once and both choices' tokens.
  EXPECT_GT(j["usage"]["completion_tokens"].get<int>(), 4);
  // The prompt was computed once: the second choice ("choices-1") resumed all of it but the
  // last token from the prefix cache, as its request log line says.
  int cached = -1, prompt = -1;
  for (absl::string_view line : absl::StrSplit(server_->Log(), '\n')) {
    const Json l = Json::parse(line, nullptr, false);
    if (l.is_object() && l.value("request_id", "") == "choices-1" && l.contains("cached_tokens")) {
      cached = l["cached_tokens"];
      prompt = l["prompt_tokens"];
    }
  }
  ASSERT_GT(prompt, 0) << server_->Log();
  EXPECT_GE(cached, prompt - 1) << server_->Log();
}

// A reasoning budget: after max_reasoning_tokens tokens of thinking the server closes the block
// itself ("\n</think>\n\n") and the model answers; the same through gRPC. A budget of 0
// (reasoning_effort "none") is thinking off.
TEST_F(HttpE2eTest, TheReasoningBudgetEndsTheThinkingBlock) {
  constexpr int kBudget = 5;
  HttpResult r = Chat({{"messages", Hello()},
                       {"max_tokens", 24},
                       {"ignore_eos", true},
                       {"temperature", 0},
                       {"logprobs", true},
                       {"max_reasoning_tokens", kBudget},
                       {"chat_template_kwargs", {{"enable_thinking", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  const Json& lp = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 24u) << r.body;
  std::string after;
  for (size_t k = kBudget; k < lp.size(); ++k) after += lp[k]["token"].get<std::string>();
  EXPECT_THAT(after, ::testing::StartsWith("\n</think>\n\n")) << r.body;
  std::string thought;
  for (size_t k = 0; k < kBudget; ++k) thought += lp[k]["token"].get<std::string>();
  const Json& msg = j["choices"][0]["message"];
  ASSERT_TRUE(msg.contains("reasoning_content")) << r.body;
  EXPECT_EQ(msg["reasoning_content"].get<std::string>(),
            std::string(absl::StripTrailingAsciiWhitespace(thought)))
      << r.body;
  EXPECT_TRUE(msg["content"].is_string()) << r.body;  // the model answered after the block

  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hello, who are you?");
  req.mutable_chat()->set_enable_thinking(true);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(24);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_stopping()->set_max_reasoning_tokens(kBudget);
  GenerateResult g = Generate(server_->Stub().get(), req);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.reasoning, msg["reasoning_content"].get<std::string>());
  EXPECT_EQ(g.text, msg["content"].get<std::string>());

  HttpResult off = Chat({{"messages", Hello()},
                         {"max_tokens", 8},
                         {"reasoning_effort", "none"},
                         {"chat_template_kwargs", {{"enable_thinking", true}}}});
  ASSERT_EQ(off.status, 200) << off.body;
  EXPECT_FALSE(off.json()["choices"][0]["message"].contains("reasoning_content")) << off.body;
}

TEST_F(HttpE2eTest, ContextLengthExceededAndDeadline) {
  HttpResult r = Chat({{"messages", Hello()}, {"max_tokens", 100000}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "context_length_exceeded") << r.body;
  EXPECT_EQ(r.json()["error"]["param"], "max_tokens") << r.body;

  HttpResult late = Chat({{"messages", Hello()}, {"max_tokens", 3500}, {"ignore_eos", true}},
                         {"X-Request-Timeout: 0.05"});
  EXPECT_EQ(late.status, 504) << late.body;
  EXPECT_EQ(late.json()["error"]["type"], "timeout_error") << late.body;
}

TEST_F(HttpE2eTest, BodyTooLargeIs413) {
  std::string big = absl::StrCat(R"({"messages": [{"role": "user", "content": ")",
                                 std::string(9 << 20, 'a'), R"("}]})");
  HttpResult r = Curl("POST", Url("/v1/chat/completions"), big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.json()["error"]["code"], "request_too_large") << r.body;
  EXPECT_EQ(Curl("GET", Url("/health")).status, 200);
}

// Every bad field gets 400 (404 for the model) naming it in `param`, and the server serves on.
TEST_F(HttpE2eTest, BadInputTable) {
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  const std::string weather =
      R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])";
  struct Row {
    std::string body;
    int status;
    std::string param;  // "" : null
  };
  const std::vector<Row> rows = {
      {"not json", 400, ""},
      {"[1, 2]", 400, ""},
      {"{}", 400, "messages"},
      {R"({"messages": "hi"})", 400, "messages"},
      {R"({"messages": []})", 400, "messages"},
      {R"({"messages": [{"content": "x"}]})", 400, "messages[0].role"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", 400, "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "audio"}]}]})", 400,
       "messages[0].content[0].type"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", 400,
       "messages[0].content[0].text"},
      {R"({"messages": [{"role": "user", "content": "a\u0000b"}]})", 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "b"}]})",
       400, "messages[1].role"},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "",
          "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f",
          "arguments": "nope"}}]}]})",
       400, "messages[1].tool_calls[0].function.arguments"},
      {absl::StrCat("{", user, R"(, "model": "nope"})"), 404, "model"},
      {absl::StrCat("{", user, R"(, "temperature": "hot"})"), 400, "temperature"},
      {absl::StrCat("{", user, R"(, "temperature": 5})"), 400, "temperature"},
      {absl::StrCat("{", user, R"(, "top_p": 0})"), 400, "top_p"},
      {absl::StrCat("{", user, R"(, "top_k": -5})"), 400, "top_k"},
      {absl::StrCat("{", user, R"(, "min_p": 2})"), 400, "min_p"},
      {absl::StrCat("{", user, R"(, "repetition_penalty": 0})"), 400, "repetition_penalty"},
      {absl::StrCat("{", user, R"(, "presence_penalty": 3})"), 400, "presence_penalty"},
      {absl::StrCat("{", user, R"(, "frequency_penalty": -3})"), 400, "frequency_penalty"},
      {absl::StrCat("{", user, R"(, "max_tokens": 0})"), 400, "max_tokens"},
      {absl::StrCat("{", user, R"(, "max_tokens": "ten"})"), 400, "max_tokens"},
      {absl::StrCat("{", user, R"(, "max_completion_tokens": -1})"), 400, "max_completion_tokens"},
      {absl::StrCat("{", user, R"(, "stop": 5})"), 400, "stop"},
      {absl::StrCat("{", user, R"(, "stop": ["a", 1]})"), 400, "stop[1]"},
      {absl::StrCat("{", user, R"(, "stop": [""]})"), 400, "stop[0]"},
      {absl::StrCat("{", user, R"(, "seed": -5})"), 400, "seed"},
      {absl::StrCat("{", user, R"(, "seed": "x"})"), 400, "seed"},
      {absl::StrCat("{", user, R"(, "n": 0})"), 400, "n"},
      {absl::StrCat("{", user, R"(, "n": 100})"), 400, "n"},
      {absl::StrCat("{", user, R"(, "logprobs": "yes"})"), 400, "logprobs"},
      {absl::StrCat("{", user, R"(, "top_logprobs": 3})"), 400, "top_logprobs"},
      {absl::StrCat("{", user, R"(, "logprobs": true, "top_logprobs": 50})"), 400, "top_logprobs"},
      {absl::StrCat("{", user, R"(, "logit_bias": {"abc": 1}})"), 400, "logit_bias"},
      {absl::StrCat("{", user, R"(, "logit_bias": {"99999999": 1}})"), 400, "logit_bias"},
      {absl::StrCat("{", user, R"(, "tools": "x"})"), 400, "tools"},
      {absl::StrCat("{", user,
                    R"(, "tools": [{"type": "function", "function": {"name": "bad name"}}]})"),
       400, "tools[0].function.name"},
      {absl::StrCat("{", user, R"(, "tools": [{"type": "web"}]})"), 400, "tools[0].type"},
      {absl::StrCat("{", user, ", ", weather, R"(, "tool_choice": "sometimes"})"), 400,
       "tool_choice"},
      {absl::StrCat("{", user, R"(, "tool_choice": "required"})"), 400, "tool_choice"},
      {absl::StrCat("{", user, ", ", weather,
                    R"(, "tool_choice": {"type": "function", "function": {"name": "g"}}})"),
       400, "tool_choice.function.name"},
      {absl::StrCat("{", user, R"(, "response_format": {"type": "xml"}})"), 400,
       "response_format.type"},
      {absl::StrCat(
           "{", user, R"(, "response_format": {"type": "json_schema", "json_schema": )",
           R"({"name": "x", "schema": {"type": "object", "patternProperties": {"^a": {}}}}}})"),
       400, "response_format.json_schema.schema"},
      {absl::StrCat("{", user, R"(, "stream": "yes"})"), 400, "stream"},
      {absl::StrCat("{", user, R"(, "stream_options": {"include_usage": true}})"), 400,
       "stream_options"},
      {absl::StrCat("{", user, R"(, "chat_template_kwargs": {"foo": 1}})"), 400,
       "chat_template_kwargs.foo"},
      {absl::StrCat("{", user, R"(, "chat_template_kwargs": {"enable_thinking": "no"}})"), 400,
       "chat_template_kwargs.enable_thinking"},
      {absl::StrCat("{", user, R"(, "modalities": ["audio"]})"), 400, "modalities"},
  };
  ASSERT_GE(rows.size(), 30u);
  for (const Row& row : rows) {
    SCOPED_TRACE(row.body);
    HttpResult r = Curl("POST", Url("/v1/chat/completions"), row.body);
    EXPECT_EQ(r.status, row.status) << r.body;
    const Json j = r.json();
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
    EXPECT_TRUE(j["error"]["type"].is_string()) << r.body;
    if (row.param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null()) << r.body;
    } else {
      EXPECT_THAT(j["error"]["param"].is_string() ? j["error"]["param"].get<std::string>() : "",
                  ::testing::StartsWith(row.param))
          << r.body;
    }
    EXPECT_EQ(Curl("GET", Url("/health")).status, 200);
  }
  // A malformed body names the byte where it broke.
  HttpResult r = Curl("POST", Url("/v1/chat/completions"), R"({"messages": [}})");
  EXPECT_THAT(r.json()["error"]["message"].get<std::string>(), HasSubstr("at byte 15"));
  // And it still generates.
  HttpResult ok = Chat({{"messages", Hello()}, {"max_tokens", 2}});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

// llama-server's /tokenize and /detokenize, and the legacy /v1/completions (text or token-id
// prompts, batches, echo, logprobs, streaming).
TEST_F(HttpE2eTest, CompletionsTokenizeAndDetokenize) {
  HttpResult t = Curl("POST", Url("/tokenize"), R"({"content": "The capital of France is"})");
  ASSERT_EQ(t.status, 200) << t.body;
  grpc::ClientContext ctx;
  v1::TokenizeRequest tr;
  tr.set_text("The capital of France is");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(server_->Stub()->Tokenize(&ctx, tr, &tokens).ok());
  const std::vector<int32_t> ids(tokens.token_ids().begin(), tokens.token_ids().end());
  EXPECT_EQ(t.json()["tokens"].get<std::vector<int32_t>>(), ids);
  HttpResult pieces =
      Curl("POST", Url("/tokenize"), R"({"content": "Hello world", "with_pieces": true})");
  ASSERT_EQ(pieces.status, 200) << pieces.body;
  EXPECT_TRUE(pieces.json()["tokens"][0]["piece"].is_string()) << pieces.body;
  HttpResult d = Curl("POST", Url("/detokenize"), Json{{"tokens", ids}}.dump());
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.json()["content"], "The capital of France is");
  HttpResult bad = Curl("POST", Url("/detokenize"), R"({"tokens": [1, 999999999]})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_THAT(bad.json()["error"]["message"].get<std::string>(),
              ::testing::StartsWith("tokens[1]: "));

  // Text prompt with echo: the same text as gRPC's prompt input, after the prompt.
  HttpResult c = Curl("POST", Url("/v1/completions"),
                      R"({"prompt": "The capital of France is", "max_tokens": 6, )"
                      R"("temperature": 0, "echo": true})");
  ASSERT_EQ(c.status, 200) << c.body;
  const Json cj = c.json();
  EXPECT_EQ(cj["object"], "text_completion");
  EXPECT_THAT(cj["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  v1::GenerateRequest g;
  g.set_prompt("The capital of France is");
  g.mutable_sampling()->set_temperature(0);
  g.mutable_stopping()->set_max_tokens(6);
  GenerateResult gr = Generate(server_->Stub().get(), g);
  ASSERT_TRUE(gr.status.ok());
  EXPECT_EQ(cj["choices"][0]["text"], "The capital of France is" + gr.text);

  // Token-id prompts in a batch, with logprobs: one choice per prompt, usage over both.
  HttpResult b = Curl("POST", Url("/v1/completions"),
                      Json{{"prompt", Json::array({ids, Json::array({ids[0]})})},
                           {"max_tokens", 3},
                           {"ignore_eos", true},
                           {"logprobs", 2}}
                          .dump());
  ASSERT_EQ(b.status, 200) << b.body;
  const Json bj = b.json();
  ASSERT_EQ(bj["choices"].size(), 2u);
  EXPECT_EQ(bj["usage"]["prompt_tokens"].get<size_t>(), ids.size() + 1);
  EXPECT_EQ(bj["usage"]["completion_tokens"], 6);
  for (const Json& ch : bj["choices"]) {
    EXPECT_EQ(ch["logprobs"]["tokens"].size(), 3u) << b.body;
    EXPECT_EQ(ch["logprobs"]["token_logprobs"].size(), 3u) << b.body;
    EXPECT_LE(ch["logprobs"]["top_logprobs"][0].size(), 2u) << b.body;
  }

  HttpResult st = Curl("POST", Url("/v1/completions"),
                       R"({"prompt": "Once upon", "max_tokens": 4, "stream": true, )"
                       R"("stream_options": {"include_usage": true}})");
  ASSERT_EQ(st.status, 200) << st.body;
  const Events e = ParseEvents(st.body);
  EXPECT_TRUE(e.done);
  ASSERT_FALSE(e.chunks.empty());
  EXPECT_EQ(e.chunks.front()["object"], "text_completion");
  EXPECT_LE(e.chunks.back()["usage"]["completion_tokens"].get<int>(), 4);

  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"max_tokens": 3})", "prompt"},
           {R"({"prompt": [999999999]})", "prompt[0]"},
           {R"({"prompt": 5})", "prompt"},
           {R"({"prompt": "x", "echo": true, "logprobs": 1})", "echo"},
           {R"({"prompt": "x", "suffix": "y"})", "suffix"},
           {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
       }) {
    HttpResult r = Curl("POST", Url("/v1/completions"), body);
    EXPECT_EQ(r.status, 400) << body << " " << r.body;
    EXPECT_EQ(r.json()["error"]["param"], param) << body << " " << r.body;
  }
}

// Anthropic's Messages API: a whole message, its event stream, a tool_use block sampled through
// the tool-call grammar, and Anthropic's error object.
TEST_F(HttpE2eTest, AnthropicMessages) {
  const Json body = {{"model", "tiny"},       {"max_tokens", 8},
                     {"system", "Be brief."}, {"messages", Hello()},
                     {"temperature", 0},      {"thinking", {{"type", "disabled"}}}};
  HttpResult r = Curl("POST", Url("/v1/messages"), body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const Json m = r.json();
  EXPECT_EQ(m["type"], "message");
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_THAT(m["id"].get<std::string>(), ::testing::StartsWith("msg_"));
  EXPECT_THAT(m["stop_reason"].get<std::string>(), ::testing::AnyOf("end_turn", "max_tokens"));
  EXPECT_GT(m["usage"]["input_tokens"].get<int>(), 0);
  EXPECT_GT(m["usage"]["output_tokens"].get<int>(), 0);
  std::string text;
  for (const Json& b : m["content"]) {
    if (b["type"] == "text") text += b["text"].get<std::string>();
  }

  Json streamed = body;
  streamed["stream"] = true;
  HttpResult s = Curl("POST", Url("/v1/messages"), streamed.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<std::string> types;
  std::string streamed_text;
  for (absl::string_view block : absl::StrSplit(s.body, "\n\n", absl::SkipEmpty())) {
    std::vector<std::string> lines = absl::StrSplit(block, '\n');
    ASSERT_EQ(lines.size(), 2u) << block;
    ASSERT_TRUE(absl::StartsWith(lines[0], "event: ")) << block;
    ASSERT_TRUE(absl::StartsWith(lines[1], "data: ")) << block;
    const Json e = Json::parse(lines[1].substr(6));
    EXPECT_EQ(lines[0].substr(7), e["type"].get<std::string>());
    types.push_back(e["type"]);
    if (e["type"] == "content_block_delta" && e["delta"]["type"] == "text_delta") {
      streamed_text += e["delta"]["text"].get<std::string>();
    }
  }
  ASSERT_GE(types.size(), 3u) << s.body;
  EXPECT_EQ(types.front(), "message_start");
  EXPECT_EQ(types[types.size() - 2], "message_delta");
  EXPECT_EQ(types.back(), "message_stop");
  EXPECT_EQ(streamed_text, text);

  const Json tools =
      Json::array({{{"name", "get_weather"},
                    {"description", "The weather of a city"},
                    {"input_schema",
                     {{"type", "object"},
                      {"properties", {{"city", {{"type", "string"}, {"maxLength", 12}}}}},
                      {"required", {"city"}}}}}});
  Json tool_use;
  for (int seed = 1; seed <= 10 && tool_use.is_null(); ++seed) {
    HttpResult t =
        Curl("POST", Url("/v1/messages"),
             Json{{"max_tokens", 200},
                  {"messages", Json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}})},
                  {"tools", tools},
                  {"tool_choice", {{"type", "any"}}},
                  {"thinking", {{"type", "disabled"}}}}
                 .dump(),
             {absl::StrCat("X-Request-Id: anthropic-tool-", seed)});
    ASSERT_EQ(t.status, 200) << t.body;
    const Json message = t.json();
    if (message["stop_reason"] != "tool_use") continue;
    for (const Json& b : message["content"]) {
      if (b["type"] == "tool_use") tool_use = b;
    }
  }
  ASSERT_FALSE(tool_use.is_null()) << "no seed of 10 ended in a tool_use block";
  EXPECT_EQ(tool_use["name"], "get_weather");
  EXPECT_TRUE(tool_use["input"]["city"].is_string()) << tool_use.dump();

  HttpResult bad = Curl("POST", Url("/v1/messages"),
                        R"({"max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.json()["type"], "error") << bad.body;
  EXPECT_EQ(bad.json()["error"]["type"], "invalid_request_error") << bad.body;
  EXPECT_THAT(bad.json()["error"]["message"].get<std::string>(),
              ::testing::StartsWith("max_tokens: "));
  HttpResult role =
      Curl("POST", Url("/v1/messages"), R"({"messages": [{"role": "system", "content": "hi"}]})");
  EXPECT_EQ(role.status, 400) << role.body;
  EXPECT_THAT(role.json()["error"]["message"].get<std::string>(),
              ::testing::StartsWith("messages[0].role: "));
}

// parallel_tool_calls false (Anthropic: disable_parallel_tool_use): generation ends once the first
// call is complete, so the model never spends tokens on a second one; streamed, the call's
// arguments come in pieces that add up to the whole response's. The model's output is forced
// (testing only) to two calls.
TEST_F(HttpE2eTest, OneToolCallEndsGeneration) {
  const std::string call =
      "<tool_call><function=get_weather><parameter=city>Paris</parameter><parameter=days>3"
      "</parameter></function></tool_call>";
  const std::string forced = absl::StrCat("X-Qwen-Testing-Forced-Output: ", call, call, "Done.");
  const Json weather = {
      {"type", "function"},
      {"function",
       {{"name", "get_weather"},
        {"parameters",
         {{"type", "object"},
          {"properties", {{"city", {{"type", "string"}}}, {"days", {{"type", "integer"}}}}}}}}}};
  Json body = {{"messages", Json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}})},
               {"tools", Json::array({weather})},
               {"max_tokens", 120},
               {"chat_template_kwargs", {{"enable_thinking", false}}}};
  HttpResult both = Chat(body, {forced});
  ASSERT_EQ(both.status, 200) << both.body;
  EXPECT_GE(both.json()["choices"][0]["message"]["tool_calls"].size(), 2u) << both.body;

  body["parallel_tool_calls"] = false;
  HttpResult one = Chat(body, {forced});
  ASSERT_EQ(one.status, 200) << one.body;
  const Json j = one.json();
  const Json& message = j["choices"][0]["message"];
  ASSERT_EQ(message["tool_calls"].size(), 1u) << one.body;
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Paris","days":3})");
  EXPECT_TRUE(message["content"].is_null()) << one.body;
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_LT(j["usage"]["completion_tokens"].get<int>(),
            both.json()["usage"]["completion_tokens"].get<int>() / 2 + 1)
      << "generation went on after the first call: " << one.body;

  body["stream"] = true;
  HttpResult s = Chat(body, {forced});
  ASSERT_EQ(s.status, 200) << s.body;
  const Events e = ParseEvents(s.body);
  EXPECT_TRUE(e.done) << s.body;
  std::string arguments, finish;
  int pieces = 0, starts = 0;
  for (const Json& c : e.chunks) {
    for (const Json& ch : c["choices"]) {
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
      if (!ch["delta"].contains("tool_calls")) continue;
      for (const Json& t : ch["delta"]["tool_calls"]) {
        EXPECT_EQ(t["index"], 0) << s.body;
        if (t.contains("id")) {
          ++starts;
          EXPECT_EQ(t["function"]["name"], "get_weather");
          EXPECT_EQ(t["function"]["arguments"], "");
          EXPECT_EQ(t["type"], "function");
        }
        const std::string piece = t["function"]["arguments"];
        if (!piece.empty()) ++pieces;
        arguments += piece;
      }
    }
  }
  EXPECT_EQ(starts, 1) << s.body;
  EXPECT_EQ(pieces, 3) << s.body;  // city, days, the closing brace
  EXPECT_EQ(arguments, message["tool_calls"][0]["function"]["arguments"]);
  EXPECT_EQ(finish, "tool_calls");

  // Anthropic, streamed: one tool_use block whose input_json_delta pieces add up to the input.
  const Json anthropic = {
      {"max_tokens", 120},
      {"messages", Json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}})},
      {"tools", Json::array({{{"name", "get_weather"},
                              {"input_schema", weather["function"]["parameters"]}}})},
      {"tool_choice", {{"type", "auto"}, {"disable_parallel_tool_use", true}}},
      {"thinking", {{"type", "disabled"}}},
      {"stream", true}};
  HttpResult a = Curl("POST", Url("/v1/messages"), anthropic.dump(), {forced});
  ASSERT_EQ(a.status, 200) << a.body;
  std::string partial, stop_reason;
  int tool_blocks = 0;
  for (absl::string_view block : absl::StrSplit(a.body, "\n\n", absl::SkipEmpty())) {
    const size_t data = block.find("data: ");
    ASSERT_NE(data, absl::string_view::npos) << block;
    const Json ev = Json::parse(block.substr(data + 6));
    if (ev["type"] == "content_block_start" && ev["content_block"]["type"] == "tool_use") {
      ++tool_blocks;
    }
    if (ev["type"] == "content_block_delta" && ev["delta"]["type"] == "input_json_delta") {
      partial += ev["delta"]["partial_json"].get<std::string>();
    }
    if (ev["type"] == "message_delta") stop_reason = ev["delta"]["stop_reason"];
  }
  EXPECT_EQ(tool_blocks, 1) << a.body;
  EXPECT_EQ(partial, R"({"city":"Paris","days":3})") << a.body;
  EXPECT_EQ(stop_reason, "tool_use") << a.body;
}

// The README's curl commands, as written but for the port: each answers a chat completion.
TEST_F(HttpE2eTest, TheReadmeCurlCommandsWork) {
  const std::string readme = ReadFile("README.md");
  int run = 0;
  for (absl::string_view line : absl::StrSplit(readme, '\n')) {
    if (!absl::StartsWith(line, "curl ")) continue;
    std::string cmd(line);
    const size_t at = cmd.find("localhost:8080");
    ASSERT_NE(at, std::string::npos) << cmd;  // where scripts/run listens
    cmd.replace(at, std::string("localhost:8080").size(),
                absl::StrCat("127.0.0.1:", server_->http_port()));
    const CommandResult c = Sh(cmd);
    ++run;
    EXPECT_EQ(c.status, 0) << cmd << "\n" << c.out;
    if (absl::StrContains(cmd, "\"stream\": true")) {
      const Events e = ParseEvents(c.out);
      EXPECT_TRUE(e.done) << c.out;
      EXPECT_FALSE(e.chunks.empty()) << c.out;
    } else {
      EXPECT_EQ(Json::parse(c.out, nullptr, false)["object"], "chat.completion") << c.out;
    }
  }
  EXPECT_EQ(run, 2);
}

// The official SDK: plain and streamed chat, a required tool call sampled through the grammar
// (whole, and streamed in pieces the SDK assembles),
// json_schema output parsed by the client, n = 2, logprobs, errors as the SDK's error classes.
TEST_F(HttpE2eTest, TheOpenAINodeSdk) {
  CommandResult c = Sh("command -v node >/dev/null && command -v npm >/dev/null");
  ASSERT_EQ(c.status, 0) << "node and npm are needed (scripts/setup.sh installs them)";
  const std::string dir = BinPath("../npm/openai-client");
  const std::string src = DataPath("../service/openai_client");
  c = Sh(absl::StrCat("mkdir -p '", dir, "' && cp '", src, "/package.json' '", src, "/chat.js' '",
                      dir, "/' && cd '", dir,
                      "' && (test -d node_modules/openai || npm install --no-audit "
                      "--no-fund --loglevel=error) 2>&1"));
  ASSERT_EQ(c.status, 0) << c.out;
  c = Sh(absl::StrCat("cd '", dir, "' && timeout 600 node chat.js ", server_->http_url(),
                      " tiny 2>&1"));
  ASSERT_EQ(c.status, 0) << c.out;
  const Json got = Json::parse(c.out, nullptr, false);
  ASSERT_FALSE(got.is_discarded()) << c.out;

  EXPECT_EQ(got["plain"]["object"], "chat.completion");
  EXPECT_EQ(got["plain"]["role"], "assistant");
  EXPECT_GT(got["plain"]["usage"]["completion_tokens"].get<int>(), 0);
  // Streamed and whole at temperature 0: the same text.
  EXPECT_EQ(got["stream"]["content"], got["plain"]["content"]);
  EXPECT_EQ(got["stream"]["finish_reason"], got["plain"]["finish_reason"]);
  EXPECT_EQ(got["stream"]["usage"]["prompt_tokens"], got["plain"]["usage"]["prompt_tokens"]);
  EXPECT_EQ(got["stream"]["usage"]["completion_tokens"],
            got["plain"]["usage"]["completion_tokens"]);

  ASSERT_TRUE(got["tool"].is_object()) << "no seed of 10 ended in a tool call: " << c.out;
  EXPECT_EQ(got["tool"]["finish_reason"], "tool_calls");
  EXPECT_EQ(got["tool"]["type"], "function");
  EXPECT_EQ(got["tool"]["name"], "get_weather");
  EXPECT_THAT(got["tool"]["id"].get<std::string>(), ::testing::StartsWith("call_"));
  ASSERT_TRUE(got["tool"]["arguments"]["city"].is_string()) << c.out;
  ASSERT_TRUE(got["tool"]["arguments"]["days"].is_number_integer()) << c.out;
  // Streamed, the same call came in pieces (one per parameter and the closing brace), which
  // the SDK put together into exactly the arguments of the whole response.
  const Json& streamed = got["streamed_tool"];
  ASSERT_TRUE(streamed.is_object()) << c.out;
  EXPECT_EQ(streamed["finish_reason"], "tool_calls") << c.out;
  EXPECT_EQ(streamed["calls"], 1) << c.out;
  EXPECT_EQ(streamed["type"], "function");
  EXPECT_EQ(streamed["name"], "get_weather");
  EXPECT_THAT(streamed["id"].get<std::string>(), ::testing::StartsWith("call_"));
  EXPECT_EQ(streamed["arguments_text"], got["tool"]["arguments_text"]) << c.out;
  EXPECT_GE(streamed["fragments"].size(), 3u) << c.out;
  std::string joined;
  for (const Json& f : streamed["fragments"]) joined += f.get<std::string>();
  EXPECT_EQ(joined, streamed["arguments_text"]) << c.out;

  ASSERT_TRUE(got["json"].is_object()) << "no seed of 10 completed the JSON: " << c.out;
  EXPECT_TRUE(got["json"]["name"].is_string()) << c.out;
  EXPECT_TRUE(got["json"]["score"].is_number_integer()) << c.out;

  EXPECT_EQ(got["n"]["choices"], Json::array({0, 1}));
  ASSERT_EQ(got["logprobs"].size(), 4u) << c.out;
  for (const Json& t : got["logprobs"]) EXPECT_EQ(t["top"], 2);

  EXPECT_EQ(got["errors"]["model"]["status"], 404) << c.out;
  EXPECT_EQ(got["errors"]["model"]["kind"], "NotFoundError") << c.out;
  EXPECT_EQ(got["errors"]["temperature"]["status"], 400) << c.out;
  EXPECT_EQ(got["errors"]["temperature"]["param"], "temperature") << c.out;
  EXPECT_EQ(got["errors"]["temperature"]["kind"], "BadRequestError") << c.out;
  EXPECT_EQ(got["models"], Json::array({"tiny"}));
}

// One worker with one slot and no queue: a second request is refused at once (429 with
// Retry-After), a client that goes away frees the slot, and a draining server answers 503.
class HttpOverloadE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-q3_k_m.gguf";
    o.workers = 1;
    o.slots = 1;
    o.queue_size = 0;
    o.ctx_size = 32768;
    o.extra = {"--http_port=-1"};
    std::string error;
    server_ = ServerProcess::Start(o, &error);
    ASSERT_NE(server_, nullptr) << error;
  }

  // A long stream in a background curl; returns its pid. Its output goes to `out`.
  pid_t StartLongStream(const std::string& out) {
    const std::string body_file = TempPath(".body");
    std::ofstream(body_file) << Json{
        {"messages", Json::array({{{"role", "user"}, {"content", "Count"}}})},
        {"max_tokens", 30000},
        {"ignore_eos", true},
        {"stream", true}}.dump();
    CommandResult c = Sh(absl::StrCat(
        "curl -sS -N -H 'Content-Type: application/json' --data-binary @'", body_file, "' '",
        server_->http_url(), "/v1/chat/completions' > '", out, "' 2>&1 & echo $!"));
    return static_cast<pid_t>(std::atoi(c.out.c_str()));
  }
  bool WaitForData(const std::string& out) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (ReadFile(out).find("\"content\":\"") != std::string::npos ||
          ReadFile(out).find("\"reasoning_content\":\"") != std::string::npos) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  int BusySlots() { return static_cast<int>(server_->Info().serving().busy_slots()); }

  std::unique_ptr<ServerProcess> server_;
};

TEST_F(HttpOverloadE2eTest, QueueFullIs429AndADisconnectFreesTheSlot) {
  const std::string out = TempPath(".sse");
  const pid_t curl = StartLongStream(out);
  ASSERT_GT(curl, 0);
  ASSERT_TRUE(WaitForData(out)) << ReadFile(out) << server_->Log();
  EXPECT_EQ(BusySlots(), 1);

  const std::string url = server_->http_url() + "/v1/chat/completions";
  const Json body = {{"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})},
                     {"max_tokens", 2}};
  HttpResult r = Curl("POST", url, body.dump());
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_LT(r.seconds, 0.05);
  EXPECT_THAT(r.headers, HasSubstr("Retry-After: 1"));
  EXPECT_EQ(r.json()["error"]["type"], "rate_limit_error") << r.body;

  // The client goes away: the slot is free again well before the 30000 tokens.
  kill(curl, SIGKILL);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (BusySlots() != 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(BusySlots(), 0) << server_->Log();
  r = Curl("POST", url, body.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(server_->Log(), HasSubstr("CANCELLED"));
  unlink(out.c_str());
}

TEST_F(HttpOverloadE2eTest, DrainingIs503) {
  const std::string out = TempPath(".sse");
  const pid_t curl = StartLongStream(out);
  ASSERT_TRUE(WaitForData(out)) << ReadFile(out) << server_->Log();
  kill(server_->pid(), SIGTERM);
  // The running stream holds the server in its grace period.
  const std::string url = server_->http_url();
  absl::SleepFor(absl::Milliseconds(200));
  HttpResult h = Curl("GET", url + "/health");
  EXPECT_EQ(h.status, 503) << h.body;
  HttpResult r = Curl("POST", url + "/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.json()["error"]["type"], "service_unavailable_error") << r.body;
  kill(curl, SIGKILL);
  unlink(out.c_str());
}

// Bearer tokens apply to HTTP as to gRPC; /health stays open to probes.
TEST(HttpAuthE2eTest, BearerTokens) {
  const std::string tokens = TempPath(".tokens");
  std::ofstream(tokens) << "secret-1\n";
  ServerProcess::Options o;
  o.model = "models/tiny-qwen35-q3_k_m.gguf";
  o.workers = 1;
  o.auth_token = "secret-1";
  o.extra = {"--http_port=-1", absl::StrCat("--auth_tokens_file=", tokens)};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  const std::string chat = server->http_url() + "/v1/chat/completions";
  const std::string body = R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})";
  HttpResult none = Curl("POST", chat, body);
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(none.json()["error"]["type"], "authentication_error");
  EXPECT_THAT(none.headers, HasSubstr("WWW-Authenticate: Bearer"));
  EXPECT_EQ(Curl("POST", chat, body, {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(Curl("GET", server->http_url() + "/v1/models").status, 401);
  HttpResult ok = Curl("POST", chat, body, {"Authorization: Bearer secret-1"});
  EXPECT_EQ(ok.status, 200) << ok.body;
  // Anthropic's clients send x-api-key; their errors come in Anthropic's shape.
  const std::string messages = server->http_url() + "/v1/messages";
  const std::string anthropic =
      R"({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})";
  HttpResult denied = Curl("POST", messages, anthropic, {"x-api-key: wrong"});
  EXPECT_EQ(denied.status, 401) << denied.body;
  EXPECT_EQ(denied.json()["error"]["type"], "authentication_error") << denied.body;
  EXPECT_EQ(Curl("POST", messages, anthropic, {"x-api-key: secret-1"}).status, 200);
  EXPECT_EQ(Curl("GET", server->http_url() + "/health").status, 200);
  unlink(tokens.c_str());
}

// video_url parts (vLLM's shape) with a data: URL: the same prompt and tokens as the gRPC request
// with that video; a bad one is a 400 naming the field, and the server serves on.
TEST(HttpVideoE2eTest, VideoUrlPartsWithDataUrls) {
  ServerProcess::Options o;
  o.workers = 1;
  o.extra = {"--http_port=-1", "--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f32.gguf"),
             "--video_max_frame_pixels=100000"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  const std::string chat = server->http_url() + "/v1/chat/completions";
  const std::string url =
      "data:video/webm;base64," + absl::Base64Escape(ReadFile(DataPath("video/clip_vp8.webm")));
  Json body = {{"messages",
                Json::array({{{"role", "user"},
                              {"content",
                               Json::array({{{"type", "video_url"}, {"video_url", {{"url", url}}}},
                                            {{"type", "text"}, {"text", "Describe it."}}})}}})},
               {"max_tokens", 4},
               {"temperature", 0},
               {"chat_template_kwargs", {{"enable_thinking", false}}}};
  HttpResult r = Curl("POST", chat, body.dump());
  ASSERT_EQ(r.status, 200) << r.body;

  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->add_parts()->mutable_video()->set_url(url);
  m->add_parts()->set_text("Describe it.");
  req.mutable_chat()->set_enable_thinking(false);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(4);
  GenerateResult g = Generate(server->Stub().get(), req);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_GT(g.completion.usage().video_tokens(), 0u);
  const Json j = r.json();
  EXPECT_EQ(j["usage"]["prompt_tokens"], g.completion.usage().prompt_tokens()) << r.body;
  EXPECT_EQ(j["usage"]["completion_tokens"], g.completion.usage().generated_tokens());
  const Json& content = j["choices"][0]["message"]["content"];
  EXPECT_EQ(content.is_null() ? std::string() : content.get<std::string>(), g.text) << r.body;

  const std::pair<std::string, std::string> bad[] = {
      {"https://example.com/clip.mp4", "messages[0].content[0].video_url.url"},
      {"data:video/mp4;base64,AAAAAAAA", "messages[0].content[0].video_url"},
  };
  for (const auto& [bad_url, param] : bad) {
    Json b = body;
    b["messages"][0]["content"][0]["video_url"]["url"] = bad_url;
    HttpResult e = Curl("POST", chat, b.dump());
    EXPECT_EQ(e.status, 400) << bad_url << ": " << e.body;
    EXPECT_THAT(e.json()["error"]["param"].get<std::string>(), ::testing::StartsWith(param))
        << e.body;
  }
  EXPECT_EQ(Curl("POST", chat, body.dump()).status, 200);
}

// TLS and mutual TLS apply to the HTTP port as to gRPC: the same certificate, and a client
// certificate signed by --tls_client_ca is required.
TEST(HttpTlsE2eTest, MutualTls) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(DataPath("tls/ca.pem"));
  ssl.pem_cert_chain = ReadFile(DataPath("tls/client.pem"));
  ssl.pem_private_key = ReadFile(DataPath("tls/client.key"));
  ServerProcess::Options o;
  o.model = "models/tiny-qwen35-q3_k_m.gguf";
  o.workers = 1;
  o.credentials = grpc::SslCredentials(ssl);
  o.extra = {"--http_port=-1", "--tls_cert=" + DataPath("tls/server.pem"),
             "--tls_key=" + DataPath("tls/server.key"),
             "--tls_client_ca=" + DataPath("tls/ca.pem")};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  ASSERT_GT(server->http_port(), 0) << server->Log();
  const std::string https = absl::StrCat("https://127.0.0.1:", server->http_port());
  const std::string ca = absl::StrCat("--cacert '", DataPath("tls/ca.pem"), "'");
  const std::string cert = absl::StrCat(" --cert '", DataPath("tls/client.pem"), "' --key '",
                                        DataPath("tls/client.key"), "'");
  HttpResult ok =
      Curl("POST", https + "/v1/chat/completions",
           R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})", {}, ca + cert);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(Curl("GET", https + "/health", "", {}, ca).status, 0);  // no client certificate
  EXPECT_EQ(Curl("GET", absl::StrCat("http://127.0.0.1:", server->http_port(), "/health")).status,
            0);  // plaintext
}

}  // namespace
}  // namespace qwen::testing

// End to end: the real `qwen serve` with 2 workers on the tiny model, through a real gRPC client.
#include <cmath>
#include <fstream>
#include <thread>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace refl = ::grpc::reflection::v1alpha;

constexpr int32_t kImEnd = 1000;  // <|im_end|> in the tiny vocabulary

class ServiceE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      const int status = server_->Stop(absl::Seconds(30));
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status << "\n"
                                                                 << server_->Log();
    }
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->Stub();
  }

  std::vector<int32_t> Tokenize(const std::string& text) {
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_text(text);
    v1::TokenizeResponse resp;
    EXPECT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
    return {resp.token_ids().begin(), resp.token_ids().end()};
  }

  std::string Detokenize(const std::vector<int32_t>& ids) {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest req;
    req.mutable_token_ids()->Assign(ids.begin(), ids.end());
    v1::DetokenizeResponse resp;
    EXPECT_TRUE(stub_->Detokenize(&ctx, req, &resp).ok());
    return resp.text();
  }

  // `qwen generate`'s greedy tokens for a token prompt.
  static std::vector<int32_t> QwenGenerate(const std::vector<int32_t>& prompt, int max_tokens,
                                           const std::string& extra = "") {
    const std::string cmd =
        absl::StrCat(BinPath("qwen"), " generate --model ", DataPath("models/tiny-qwen35-f32.gguf"),
                     " --tokens ", absl::StrJoin(prompt, ","), " --temperature 0 --max_tokens ",
                     max_tokens, " --ignore_eos --threads 1 --json ", extra, " 2>/dev/null");
    int code = -1;
    const std::string out = RunCommand(cmd, &code);
    EXPECT_EQ(code, 0) << cmd;
    auto j = nlohmann::json::parse(out, nullptr, false);
    if (j.is_discarded()) {
      ADD_FAILURE() << "qwen generate printed: " << out;
      return {};
    }
    return j["tokens"].get<std::vector<int32_t>>();
  }

  static v1::GenerateRequest Greedy(int max_tokens) {
    v1::GenerateRequest req;
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(max_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_return_token_ids(true);
    return req;
  }

  static v1::Chat WeatherChat() {
    v1::Chat chat;
    v1::ChatMessage* m = chat.add_messages();
    m->set_role("user");
    m->set_content("What is the weather in Paris for the next days?");
    v1::Tool* t = chat.add_tools();
    t->set_name("get_weather");
    t->set_description("Get the weather forecast for a city.");
    t->set_parameters_json(R"({"type": "object", "properties": {"city": {"type": "string"}, )"
                           R"("days": {"type": "integer"}}, "required": ["city"]})");
    return chat;
  }

  static ServerProcess* server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

ServerProcess* ServiceE2eTest::server_ = nullptr;

TEST_F(ServiceE2eTest, HealthIsServingForTheServerAndTheService) {
  EXPECT_EQ(server_->Health(""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(server_->Health("qwen.v1.Qwen"), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(ServiceE2eTest, ReflectionListsAndDescribesTheServices) {
  auto stub = refl::ServerReflection::NewStub(server_->channel());
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  refl::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  refl::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  EXPECT_THAT(names, ::testing::IsSupersetOf({"qwen.v1.Qwen", "grpc.health.v1.Health"}));
  for (const std::string symbol :
       {"qwen.v1.Qwen", "qwen.v1.GenerateRequest", "grpc.health.v1.Health"}) {
    req.set_file_containing_symbol(symbol);
    ASSERT_TRUE(stream->Write(req));
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_FALSE(resp.has_error_response())
        << symbol << ": " << resp.error_response().error_message();
    EXPECT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0) << symbol;
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceE2eTest, GreedyTextPromptEqualsQwenGenerate) {
  const std::string prompt = "Hello, world! Tell me a story about a cat.";
  const std::vector<int32_t> ids = Tokenize(prompt);
  ASSERT_FALSE(ids.empty());
  v1::GenerateRequest req = Greedy(24);
  req.set_prompt(prompt);
  req.set_request_id("greedy-text");
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.token_ids, QwenGenerate(ids, 24));
  EXPECT_EQ(r.text, Detokenize(r.token_ids));
  ASSERT_TRUE(r.has_completion);
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.completion.usage().prompt_tokens(), ids.size());
  EXPECT_EQ(r.completion.usage().generated_tokens(), 24u);
  EXPECT_GT(r.completion.timings().total_ms(), 0);
  EXPECT_GE(r.completion.timings().total_ms(), r.completion.timings().time_to_first_token_ms());
  for (const auto& m : r.messages) EXPECT_EQ(m.request_id(), "greedy-text");
  // Only the last message carries the completion.
  for (size_t k = 0; k + 1 < r.messages.size(); ++k) EXPECT_FALSE(r.messages[k].has_completion());
}

TEST_F(ServiceE2eTest, GreedyTokenPromptEqualsQwenGenerate) {
  const std::vector<int32_t> prompt = {1, 2, 3, 40, 50, 60, 700};
  v1::GenerateRequest req = Greedy(20);
  req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.token_ids, QwenGenerate(prompt, 20));
}

TEST_F(ServiceE2eTest, SeededSamplingRepeatsAndAnUnseededRequestReportsItsSeed) {
  v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.mutable_sampling()->set_temperature(1.0f);
  req.mutable_sampling()->set_top_p(0.95f);
  req.mutable_sampling()->set_seed(1234);
  req.mutable_stopping()->set_max_tokens(24);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  GenerateResult a = Generate(stub_.get(), req);
  GenerateResult b = Generate(stub_.get(), req);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.completion.seed(), 1234u);

  req.mutable_sampling()->clear_seed();
  GenerateResult c = Generate(stub_.get(), req);
  ASSERT_TRUE(c.status.ok());
  const uint64_t seed = c.completion.seed();
  req.mutable_sampling()->set_seed(seed);
  GenerateResult d = Generate(stub_.get(), req);
  ASSERT_TRUE(d.status.ok());
  EXPECT_EQ(c.token_ids, d.token_ids) << "seed " << seed;
}

TEST_F(ServiceE2eTest, StopStringAcrossTokenBoundariesEndsTheStreamAndIsNotSent) {
  const std::vector<int32_t> prompt = {11, 22, 33, 44, 55};
  v1::GenerateRequest req = Greedy(40);
  req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  GenerateResult full = Generate(stub_.get(), req);
  ASSERT_TRUE(full.status.ok());
  // A stop string made of the end of one token's text and the start of the next one's.
  std::string stop;
  size_t boundary = 0;
  std::string so_far;
  for (size_t k = 5; k + 1 < full.token_ids.size() && stop.empty(); ++k) {
    const std::string a = Detokenize({full.token_ids.begin(), full.token_ids.begin() + k});
    const std::string b = Detokenize({full.token_ids.begin(), full.token_ids.begin() + k + 1});
    if (b.size() <= a.size() || a.size() < 2 || b.size() - a.size() < 2) continue;
    const std::string candidate = a.substr(a.size() - 2) + b.substr(a.size(), 2);
    bool ascii = true;
    for (char c : candidate) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (!ascii) continue;
    if (full.text.find(candidate) != a.size() - 2) continue;  // first occurrence must be here
    stop = candidate;
    boundary = a.size() - 2;
  }
  ASSERT_FALSE(stop.empty()) << "no usable token boundary in: " << full.text;
  req.mutable_stopping()->add_stop(stop);
  req.mutable_stopping()->add_stop("never-appears-in-output");
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, full.text.substr(0, boundary));
  ASSERT_TRUE(r.has_completion);
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(r.completion.stop_sequence(), stop);
  EXPECT_LT(r.completion.usage().generated_tokens(), 40u);
}

TEST_F(ServiceE2eTest, StopStringInForcedOutput) {
  v1::GenerateRequest req;
  req.set_prompt("Say something.");
  req.mutable_stopping()->set_max_tokens(40);
  req.mutable_stopping()->add_stop("stop");
  GenerateResult r =
      Generate(stub_.get(), req, absl::Seconds(120), "Hello world, stop here please.");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "Hello world, ");
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
}

// An engine failure carries its code from the worker: forced tokens (the caller's, testing only)
// that the output constraint refuses are the caller's error, INVALID_ARGUMENT naming the field,
// not INTERNAL. (A sampled token the constraint refuses is INTERNAL: the mask allowed it.)
TEST_F(ServiceE2eTest, ForcedTokensTheConstraintRefusesAreTheCallersError) {
  v1::GenerateRequest req;
  req.set_prompt("Is the sky blue?");
  req.mutable_stopping()->set_max_tokens(8);
  req.mutable_response_format()->mutable_choices()->add_choices("yes");
  req.mutable_response_format()->mutable_choices()->add_choices("no");
  GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120), "maybe");
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  EXPECT_THAT(r.status.error_message(), ::testing::StartsWith("forced_tokens[0]: token "))
      << r.status.error_message();
  // A forced output the constraint allows goes through.
  r = Generate(stub_.get(), req, absl::Seconds(120), "yes");
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "yes");
}

TEST_F(ServiceE2eTest, MaxTokensEndsWithLength) {
  v1::GenerateRequest req = Greedy(7);
  req.set_prompt("Count:");
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.token_ids.size(), 7u);
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.completion.usage().generated_tokens(), 7u);
}

TEST_F(ServiceE2eTest, EndOfGenerationEndsWithEosAndSendsNoText) {
  v1::GenerateRequest req;
  req.set_prompt("Stop at once.");
  req.mutable_sampling()->set_temperature(0);
  (*req.mutable_sampling()->mutable_logit_bias())[kImEnd] = 100.0f;
  req.mutable_stopping()->set_max_tokens(10);
  req.mutable_output()->set_return_token_ids(true);
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.token_ids, std::vector<int32_t>{kImEnd});
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_EQ(r.completion.stop_token_id(), kImEnd);
}

TEST_F(ServiceE2eTest, ClientStopTokenEndsWithStopToken) {
  v1::GenerateRequest req;
  req.set_prompt("Go.");
  req.mutable_sampling()->set_temperature(0);
  (*req.mutable_sampling()->mutable_logit_bias())[321] = 100.0f;
  req.mutable_stopping()->set_max_tokens(10);
  req.mutable_stopping()->add_stop_token_ids(321);
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(r.completion.stop_token_id(), 321);
  EXPECT_EQ(r.completion.usage().generated_tokens(), 1u);
  EXPECT_EQ(r.text, "");
}

TEST_F(ServiceE2eTest, LogprobsAreTheLogSoftmaxOfTheLogits) {
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  constexpr int kTokens = 6;
  v1::GenerateRequest req = Greedy(kTokens);
  req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  req.mutable_output()->set_logprobs(true);
  req.mutable_output()->set_top_logprobs(5);
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  ASSERT_EQ(r.logprobs.size(), static_cast<size_t>(kTokens));

  // The logits of the same sequence, from `qwen generate --dump_logits` (one row per fed token).
  char path[] = "/tmp/qwen-logits-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::vector<int32_t> tokens =
      QwenGenerate(prompt, kTokens, absl::StrCat("--dump_logits ", path));
  ASSERT_EQ(tokens, r.token_ids);
  const std::string raw = ReadFile(path);
  unlink(path);
  const int64_t V = 1024;
  ASSERT_EQ(raw.size() % (V * sizeof(float)), 0u);
  const float* rows = reinterpret_cast<const float*>(raw.data());
  for (int i = 0; i < kTokens; ++i) {
    // Row after prompt token p-1 predicts generated token 0, and so on.
    const float* l = rows + (prompt.size() - 1 + i) * V;
    double mx = l[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max<double>(mx, l[v]);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    auto logsoftmax = [&](int32_t id) { return l[id] - mx - std::log(sum); };
    const v1::TokenLogprob& lp = r.logprobs[i];
    EXPECT_EQ(lp.token_id(), r.token_ids[i]);
    EXPECT_NEAR(lp.logprob(), logsoftmax(lp.token_id()), 2e-3) << "position " << i;
    ASSERT_EQ(lp.top_logprobs_size(), 5);
    EXPECT_EQ(lp.top_logprobs(0).token_id(), lp.token_id());  // greedy picks the top one
    for (const auto& top : lp.top_logprobs()) {
      EXPECT_NEAR(top.logprob(), logsoftmax(top.token_id()), 2e-3);
    }
    for (int k = 1; k < 5; ++k) {
      EXPECT_GE(lp.top_logprobs(k - 1).logprob(), lp.top_logprobs(k).logprob());
    }
  }
}

TEST_F(ServiceE2eTest, ChatStreamsReasoningAndContentSeparately) {
  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi!");
  req.mutable_stopping()->set_max_tokens(64);
  GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120),
                              "The user greets me.\n</think>\n\nHello there!<|im_end|>");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.reasoning, "The user greets me.");
  EXPECT_EQ(r.text, "Hello there!");
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_EOS);
  // Reasoning and content never share a message's text: content only starts after </think>.
  bool content_started = false;
  for (const auto& msg : r.messages) {
    if (content_started) {
      EXPECT_TRUE(msg.reasoning().empty());
    }
    if (!msg.text().empty()) content_started = true;
  }
}

TEST_F(ServiceE2eTest, ChatWithToolsYieldsStructuredToolCalls) {
  v1::GenerateRequest req;
  *req.mutable_chat() = WeatherChat();
  req.mutable_stopping()->set_max_tokens(128);
  const std::string forced =
      "I should look it up.\n</think>\n\n<tool_call>\n<function=get_weather>\n"
      "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
      "</function>\n</tool_call><|im_end|>";
  GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120), forced);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.reasoning, "I should look it up.");
  EXPECT_EQ(r.text, "");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name(), "get_weather");
  EXPECT_EQ(nlohmann::json::parse(r.tool_calls[0].arguments()),
            nlohmann::json::parse(R"({"city": "Paris", "days": 3})"));
  EXPECT_TRUE(r.tool_calls[0].error().empty());
  EXPECT_FALSE(r.tool_calls[0].id().empty());
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  // The call arrives whole, in one message, after its pieces: a start with its id and name,
  // then the arguments a parameter at a time, which add up to the whole call's.
  int with_calls = 0;
  std::string streamed;
  std::vector<v1::ToolCallDelta> deltas;
  for (const auto& msg : r.messages) {
    for (const auto& d : msg.tool_call_deltas()) {
      EXPECT_EQ(with_calls, 0) << "a piece after the whole call";
      deltas.push_back(d);
      streamed += d.arguments();
    }
    with_calls += msg.tool_calls_size() > 0;
  }
  EXPECT_EQ(with_calls, 1);
  ASSERT_EQ(deltas.size(), 4u);
  EXPECT_EQ(deltas[0].id(), r.tool_calls[0].id());
  EXPECT_EQ(deltas[0].name(), "get_weather");
  EXPECT_EQ(streamed, r.tool_calls[0].arguments());
  EXPECT_EQ(r.tool_calls[0].arguments(), R"({"city":"Paris","days":3})");
}

// stopping.max_tool_calls: generation ends once that many calls are complete (the worker is
// cancelled rather than left to write more), with FINISH_REASON_TOOL_CALLS.
TEST_F(ServiceE2eTest, MaxToolCallsEndsGeneration) {
  v1::GenerateRequest req;
  *req.mutable_chat() = WeatherChat();
  req.mutable_chat()->set_enable_thinking(false);
  req.mutable_stopping()->set_max_tokens(128);
  const std::string call =
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "</function>\n</tool_call>";
  const std::string forced = call + "\n" + call + "\nDone.";
  GenerateResult all = Generate(stub_.get(), req, absl::Seconds(120), forced);
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  EXPECT_GE(all.tool_calls.size(), 2u);

  req.mutable_stopping()->set_max_tool_calls(1);
  GenerateResult one = Generate(stub_.get(), req, absl::Seconds(120), forced);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  ASSERT_EQ(one.tool_calls.size(), 1u);
  EXPECT_EQ(one.tool_calls[0].arguments(), R"({"city":"Paris"})");
  EXPECT_EQ(one.text, "");
  EXPECT_EQ(one.completion.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_LT(one.completion.usage().generated_tokens(),
            all.completion.usage().generated_tokens() / 2 + 1);
}

TEST_F(ServiceE2eTest, RenderChatIsThePromptGenerateRuns) {
  v1::RenderChatRequest rr;
  *rr.mutable_chat() = WeatherChat();
  grpc::ClientContext ctx;
  v1::RenderChatResponse rendered;
  ASSERT_TRUE(stub_->RenderChat(&ctx, rr, &rendered).ok());
  EXPECT_THAT(rendered.prompt(), HasSubstr("get_weather"));
  EXPECT_THAT(rendered.prompt(), ::testing::EndsWith("<|im_start|>assistant\n<think>\n"));
  EXPECT_TRUE(rendered.reasoning_open());
  v1::GenerateRequest req = Greedy(1);
  *req.mutable_chat() = WeatherChat();
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.completion.usage().prompt_tokens(), static_cast<uint32_t>(rendered.token_ids_size()));
}

TEST_F(ServiceE2eTest, EightConcurrentStreamsMatchTheirSequentialResults) {
  constexpr int kStreams = 8;
  std::vector<v1::GenerateRequest> reqs;
  for (int k = 0; k < kStreams; ++k) {
    v1::GenerateRequest req = Greedy(12 + k);
    const std::vector<int32_t> prompt = {100 + k, 200 + 3 * k, 300, 17 * k + 1};
    req.mutable_prompt_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
    reqs.push_back(req);
  }
  std::vector<std::vector<int32_t>> alone(kStreams);
  for (int k = 0; k < kStreams; ++k) {
    GenerateResult r = Generate(stub_.get(), reqs[k]);
    ASSERT_TRUE(r.status.ok());
    alone[k] = r.token_ids;
  }
  std::vector<GenerateResult> together(kStreams);
  std::vector<std::thread> threads;
  for (int k = 0; k < kStreams; ++k) {
    threads.emplace_back([&, k] { together[k] = Generate(stub_.get(), reqs[k]); });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < kStreams; ++k) {
    ASSERT_TRUE(together[k].status.ok()) << k << ": " << together[k].status.error_message();
    EXPECT_EQ(together[k].token_ids, alone[k]) << "stream " << k;
    EXPECT_EQ(together[k].token_ids.size(), static_cast<size_t>(12 + k));
  }
}

TEST_F(ServiceE2eTest, BadRequestsAreInvalidArgumentNamingTheField) {
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest*)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"no input", [](v1::GenerateRequest* r) { r->clear_prompt(); }, "input"},
      {"top_p", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); },
       "sampling.top_p"},
      {"temperature", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); },
       "sampling.temperature"},
      {"context", [](v1::GenerateRequest* r) { r->mutable_stopping()->set_max_tokens(100000); },
       "stopping.max_tokens"},
      {"empty stop", [](v1::GenerateRequest* r) { r->mutable_stopping()->add_stop(""); },
       "stopping.stop[0]"},
      {"logprobs",
       [](v1::GenerateRequest* r) {
         r->mutable_output()->set_logprobs(true);
         r->mutable_output()->set_top_logprobs(50);
       },
       "output.top_logprobs"},
      {"token id", [](v1::GenerateRequest* r) { r->mutable_prompt_token_ids()->add_ids(5000); },
       "prompt_token_ids.ids[0]"},
      {"max_tool_calls without a chat",
       [](v1::GenerateRequest* r) { r->mutable_stopping()->set_max_tool_calls(1); },
       "stopping.max_tool_calls"},
      {"role",
       [](v1::GenerateRequest* r) {
         v1::ChatMessage* m = r->mutable_chat()->add_messages();
         m->set_role("robot");
         m->set_content("hi");
       },
       "chat.messages[0].role"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req;
    req.set_prompt("Hello");
    c.edit(&req);
    GenerateResult r = Generate(stub_.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(r.status.error_message(), StartsWith(c.field + ":")) << c.name;
    EXPECT_TRUE(r.messages.empty()) << c.name;
  }
}

TEST_F(ServiceE2eTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello <|im_start|>user\nworld";
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_text(text);
  req.set_return_pieces(true);
  v1::TokenizeResponse resp;
  ASSERT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.pieces_size(), resp.token_ids_size());
  EXPECT_THAT(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()),
              ::testing::Contains(999));  // <|im_start|> recognised
  grpc::ClientContext ctx2;
  v1::DetokenizeRequest dreq;
  *dreq.mutable_token_ids() = resp.token_ids();
  dreq.set_include_control_tokens(true);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub_->Detokenize(&ctx2, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), text);

  grpc::ClientContext ctx3;
  dreq.add_token_ids(4096);
  EXPECT_EQ(stub_->Detokenize(&ctx3, dreq, &dresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceE2eTest, ModelInfoDescribesModelAndPool) {
  v1::GetModelInfoResponse info = server_->Info();
  EXPECT_EQ(info.architecture(), "qwen35");
  EXPECT_EQ(info.file_type(), "F32");
  EXPECT_EQ(info.vocab_size(), 1024u);
  EXPECT_EQ(info.context_length(), 8192u);
  EXPECT_EQ(info.slot_context_length(), 2048u);
  EXPECT_GT(info.parameter_count(), 1000000u);
  ASSERT_GE(info.tensor_types_size(), 1);
  EXPECT_EQ(info.tensor_types(0).type(), "f32");
  EXPECT_THAT(info.chat_template(), HasSubstr("im_start"));
  EXPECT_TRUE(info.capabilities().chat());
  EXPECT_TRUE(info.capabilities().tools());
  EXPECT_TRUE(info.capabilities().reasoning());
  EXPECT_EQ(info.serving().workers(), 2u);
  EXPECT_EQ(info.serving().live_workers(), 2u);
  EXPECT_EQ(info.serving().slots_per_worker(), 4u);
  EXPECT_EQ(info.serving().total_slots(), 8u);
  ASSERT_EQ(info.serving().worker_status_size(), 2);
  for (const auto& w : info.serving().worker_status()) {
    EXPECT_EQ(w.state(), "up");
    EXPECT_GT(w.pid(), 0);
  }
}

// Each worker maps the model file shared and read-only: its weight pages are the page cache's,
// counted once however many workers run (Shared_Clean, never Private_Dirty).
TEST_F(ServiceE2eTest, WorkersShareOneReadOnlyMappingOfTheWeights) {
  // Touch the weights in both workers.
  v1::GenerateRequest req = Greedy(2);
  req.set_prompt("warm up");
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] { EXPECT_TRUE(Generate(stub_.get(), req).status.ok()); });
  }
  for (auto& t : threads) t.join();
  const v1::GetModelInfoResponse info = server_->Info();
  ASSERT_EQ(info.serving().worker_status_size(), 2);
  for (const auto& w : info.serving().worker_status()) {
    const std::string smaps = ReadFile(absl::StrCat("/proc/", w.pid(), "/smaps"));
    ASSERT_FALSE(smaps.empty());
    const size_t at = smaps.find("tiny-qwen35-f32.gguf");
    ASSERT_NE(at, std::string::npos) << "worker " << w.index() << " does not map the model";
    const size_t line_start = smaps.rfind('\n', at) + 1;
    const std::string header = smaps.substr(line_start, at - line_start);
    EXPECT_THAT(header, HasSubstr(" r--s ")) << header;  // read-only, shared
    auto field = [&](const std::string& name) {
      const size_t f = smaps.find("\n" + name + ":", at);
      int64_t kb = -1;
      if (f != std::string::npos) {
        const size_t v = f + name.size() + 2;
        kb = std::strtoll(smaps.c_str() + v, nullptr, 10);
      }
      return kb;
    };
    EXPECT_EQ(field("Private_Dirty"), 0);
    EXPECT_GT(field("Shared_Clean"), 0) << "worker " << w.index();
  }
}

}  // namespace
}  // namespace qwen::testing

// End to end, hostile input: a table of bad Generate requests sent over the wire to the real
// server. Each must get INVALID_ARGUMENT with a message that starts with the offending field,
// stream nothing and reach no worker; afterwards the server still serves (same workers, no
// restart). The table is printed (one line per case) for docs/reliability.md.
#include <cmath>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::StartsWith;

constexpr int kContext = 2048;
constexpr int kVocab = 1024;  // the tiny model's
constexpr int kMaxMessageBytes = 65536;
constexpr int kMaxTools = 8;

struct Case {
  const char* name;
  std::function<void(v1::GenerateRequest*)> make;
  std::string field;  // the message starts with "<field>:"
};

v1::ChatMessage* Msg(v1::GenerateRequest* r, const std::string& role, const std::string& text) {
  v1::ChatMessage* m = r->mutable_chat()->add_messages();
  m->set_role(role);
  m->set_content(text);
  return m;
}

v1::Tool* AddTool(v1::GenerateRequest* r, const std::string& name, const std::string& schema) {
  if (r->chat().messages().empty()) Msg(r, "user", "What is the weather?");
  v1::Tool* t = r->mutable_chat()->add_tools();
  t->set_name(name);
  t->set_parameters_json(schema);
  return t;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

std::vector<Case> Cases() {
  auto prompt = [](v1::GenerateRequest* r) { r->set_prompt("Hello"); };
  std::vector<Case> c = {
      {"no input", [](v1::GenerateRequest* r) {}, "input"},
      {"empty prompt", [](v1::GenerateRequest* r) { r->set_prompt(""); }, "prompt"},
      {"empty token prompt", [](v1::GenerateRequest* r) { r->mutable_prompt_token_ids(); },
       "prompt_token_ids.ids"},
      {"prompt over the context (ids)",
       [](v1::GenerateRequest* r) {
         for (int k = 0; k < kContext; ++k) r->mutable_prompt_token_ids()->add_ids(k % kVocab);
       },
       "prompt_token_ids.ids"},
      {"prompt over the context (text)",
       [](v1::GenerateRequest* r) {
         std::string text;
         for (int k = 0; k < 3000; ++k) absl::StrAppend(&text, "w", k, " ");
         r->set_prompt(text);
       },
       "prompt"},
      {"max_tokens 0",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->set_max_tokens(0);
       },
       "stopping.max_tokens"},
      {"max_tokens negative",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->set_max_tokens(-5);
       },
       "stopping.max_tokens"},
      {"max_tokens absurd (2^31-1)",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->set_max_tokens(std::numeric_limits<int32_t>::max());
       },
       "stopping.max_tokens"},
      {"temperature < 0",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_temperature(-0.5f);
       },
       "sampling.temperature"},
      {"temperature NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_temperature(kNaN);
       },
       "sampling.temperature"},
      {"temperature infinite",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_temperature(kInf);
       },
       "sampling.temperature"},
      {"top_p 0",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_top_p(0);
       },
       "sampling.top_p"},
      {"top_p > 1",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_top_p(1.5f);
       },
       "sampling.top_p"},
      {"top_p NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_top_p(kNaN);
       },
       "sampling.top_p"},
      {"top_k < 0",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_top_k(-1);
       },
       "sampling.top_k"},
      {"min_p < 0",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_min_p(-0.1f);
       },
       "sampling.min_p"},
      {"min_p > 1",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_min_p(1.01f);
       },
       "sampling.min_p"},
      {"min_p NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_min_p(kNaN);
       },
       "sampling.min_p"},
      {"repetition_penalty NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_repetition_penalty(kNaN);
       },
       "sampling.repetition_penalty"},
      {"repetition_penalty infinite",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_repetition_penalty(kInf);
       },
       "sampling.repetition_penalty"},
      {"presence_penalty NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_presence_penalty(kNaN);
       },
       "sampling.presence_penalty"},
      {"presence_penalty infinite",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_presence_penalty(-kInf);
       },
       "sampling.presence_penalty"},
      {"frequency_penalty NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_frequency_penalty(kNaN);
       },
       "sampling.frequency_penalty"},
      {"frequency_penalty infinite",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_sampling()->set_frequency_penalty(kInf);
       },
       "sampling.frequency_penalty"},
      {"prompt token id < 0",
       [](v1::GenerateRequest* r) {
         r->mutable_prompt_token_ids()->add_ids(5);
         r->mutable_prompt_token_ids()->add_ids(-1);
       },
       "prompt_token_ids.ids[1]"},
      {"prompt token id = vocabulary size",
       [](v1::GenerateRequest* r) { r->mutable_prompt_token_ids()->add_ids(kVocab); },
       "prompt_token_ids.ids[0]"},
      {"stop token id outside the vocabulary",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->add_stop_token_ids(1 << 30);
       },
       "stopping.stop_token_ids[0]"},
      {"logit bias for an unknown token",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         (*r->mutable_sampling()->mutable_logit_bias())[kVocab + 7] = 2.0f;
       },
       "sampling.logit_bias"},
      {"logit bias NaN",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         (*r->mutable_sampling()->mutable_logit_bias())[3] = kNaN;
       },
       "sampling.logit_bias"},
      {"prompt with invalid UTF-8",
       [](v1::GenerateRequest* r) { r->set_prompt("caf\xc3 \xff\xfe"); },
       "qwen.v1.GenerateRequest.prompt"},
      {"prompt with a NUL byte",
       [](v1::GenerateRequest* r) { r->set_prompt(std::string("before\0after", 12)); }, "prompt"},
      {"chat content with invalid UTF-8",
       [](v1::GenerateRequest* r) { Msg(r, "user", "\xc0\x80"); }, "qwen.v1.ChatMessage.content"},
      {"chat content with a NUL byte",
       [](v1::GenerateRequest* r) { Msg(r, "user", std::string("a\0b", 3)); },
       "chat.messages[0].content"},
      {"stop string with a NUL byte",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->add_stop(std::string("\0", 1));
       },
       "stopping.stop[0]"},
      {"unknown role", [](v1::GenerateRequest* r) { Msg(r, "wizard", "hi"); },
       "chat.messages[0].role"},
      {"empty role", [](v1::GenerateRequest* r) { Msg(r, "", "hi"); }, "chat.messages[0].role"},
      {"no messages", [](v1::GenerateRequest* r) { r->mutable_chat(); }, "chat.messages"},
      {"system message not first",
       [](v1::GenerateRequest* r) {
         Msg(r, "user", "hi");
         Msg(r, "system", "be brief");
       },
       "chat.messages[1].role"},
      {"tool schema not an object schema",
       [](v1::GenerateRequest* r) { AddTool(r, "get_weather", R"({"type": "string"})"); },
       "chat.tools[0].parameters_json.type"},
      {"tool schema with an unknown type",
       [](v1::GenerateRequest* r) {
         AddTool(r, "get_weather",
                 R"({"type": "object", "properties": {"city": {"type": "strnig"}}})");
       },
       "chat.tools[0].parameters_json.properties.city.type"},
      {"tool schema with required not a list",
       [](v1::GenerateRequest* r) {
         AddTool(r, "get_weather", R"({"type": "object", "required": "city"})");
       },
       "chat.tools[0].parameters_json.required"},
      {"tool schema that is not JSON",
       [](v1::GenerateRequest* r) { AddTool(r, "get_weather", R"({"type": )"); },
       "chat.tools[0].parameters_json"},
      {"duplicate tool names",
       [](v1::GenerateRequest* r) {
         AddTool(r, "get_weather", R"({"type": "object"})");
         AddTool(r, "get_weather", R"({"type": "object"})");
       },
       "chat.tools[1].name"},
      {"tool name with spaces",
       [](v1::GenerateRequest* r) { AddTool(r, "get weather", R"({"type": "object"})"); },
       "chat.tools[0].name"},
      {"more tools than --max_tools",
       [](v1::GenerateRequest* r) {
         for (int k = 0; k <= kMaxTools; ++k) AddTool(r, absl::StrCat("t", k), "{}");
       },
       "chat.tools"},
      {"thousands of stop strings",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         for (int k = 0; k < 3000; ++k) r->mutable_stopping()->add_stop(absl::StrCat("s", k));
       },
       "stopping.stop"},
      {"an overlong stop string",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_stopping()->add_stop(std::string(1000, 'x'));
       },
       "stopping.stop[0]"},
      {"too many top logprobs",
       [&](v1::GenerateRequest* r) {
         prompt(r);
         r->mutable_output()->set_logprobs(true);
         r->mutable_output()->set_top_logprobs(1000);
       },
       "output.top_logprobs"},
      {"message over --max_message_bytes",
       [](v1::GenerateRequest* r) { r->set_prompt(std::string(kMaxMessageBytes + 100, 'a')); },
       "request"},
  };
  return c;
}

TEST(BadInputE2eTest, EveryBadRequestIsRefusedNamingTheFieldAndTheServerKeepsServing) {
  ServerProcess::Options o;
  o.ctx_size = kContext;
  o.extra = {absl::StrCat("--max_message_bytes=", kMaxMessageBytes),
             absl::StrCat("--max_tools=", kMaxTools), "--max_stop_strings=16"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  const v1::ServingInfo before = server->Info().serving();

  std::cout << "| bad input | status | message |\n|---|---|---|\n";
  int passed = 0;
  const std::vector<Case> cases = Cases();
  for (const Case& c : cases) {
    v1::GenerateRequest req;
    c.make(&req);
    GenerateResult r = Generate(stub.get(), req, absl::Seconds(30));
    const bool ok = r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                    absl::StartsWith(r.status.error_message(), c.field + ":") && r.messages.empty();
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(r.status.error_message(), StartsWith(c.field + ":")) << c.name;
    EXPECT_TRUE(r.messages.empty()) << c.name;
    std::string message = r.status.error_message().substr(0, 110);
    std::cout << "| " << c.name << " | "
              << (r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT
                      ? "INVALID_ARGUMENT"
                      : absl::StrCat("code ", r.status.error_code()))
              << " | `" << message << "` |" << (ok ? "" : " FAILED") << "\n";
    passed += ok;
  }
  std::cout << "bad inputs: " << passed << " of " << cases.size() << " refused correctly\n";

  // Far beyond the limit the transport refuses the bytes unread.
  {
    v1::GenerateRequest huge;
    huge.set_prompt(std::string(4 * kMaxMessageBytes + (1 << 20), 'a'));
    GenerateResult r = Generate(stub.get(), huge, absl::Seconds(30));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }

  // Still serving, with the same worker processes: no bad input reached or hurt a worker.
  v1::GenerateRequest good;
  good.set_prompt("Hello");
  good.mutable_stopping()->set_max_tokens(4);
  good.mutable_stopping()->set_ignore_eos(true);
  GenerateResult r = Generate(stub.get(), good);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().generated_tokens(), 4u);
  const v1::ServingInfo after = server->Info().serving();
  ASSERT_EQ(after.worker_status_size(), before.worker_status_size());
  for (int k = 0; k < after.worker_status_size(); ++k) {
    EXPECT_EQ(after.worker_status(k).pid(), before.worker_status(k).pid());
    EXPECT_EQ(after.worker_status(k).restarts(), 0u);
  }
  EXPECT_EQ(server->Health(), ::grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace qwen::testing

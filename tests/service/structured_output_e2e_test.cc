// End to end: response_format through the real server and its worker on the tiny model.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::StartsWith;
using Json = nlohmann::json;

class StructuredOutputE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-q3_k_m.gguf";
    o.workers = 1;
    o.forced_output = false;
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop(absl::Seconds(30));
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->Stub();
  }
  int32_t TokenId(const std::string& text) {
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_text(text);
    v1::TokenizeResponse resp;
    EXPECT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.token_ids_size(), 1) << text;
    return resp.token_ids_size() == 1 ? resp.token_ids(0) : -1;
  }
  static v1::Chat WeatherChat(bool thinking) {
    v1::Chat chat;
    v1::ChatMessage* m = chat.add_messages();
    m->set_role("user");
    m->set_content("What is the weather in Paris?");
    v1::Tool* t = chat.add_tools();
    t->set_name("get_weather");
    t->set_parameters_json(
        R"({"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, )"
        R"("days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]})");
    chat.set_enable_thinking(thinking);
    return chat;
  }

  static ServerProcess* server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

ServerProcess* StructuredOutputE2eTest::server_ = nullptr;

TEST_F(StructuredOutputE2eTest, JsonSchemaOutputIsAValidInstance) {
  const std::string schema =
      R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, )"
      R"("score": {"type": "integer", "minimum": 0, "maximum": 10}, )"
      R"("tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}}, )"
      R"("required": ["name", "score"]})";
  int complete = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    v1::GenerateRequest req;
    req.set_prompt("Describe a player as JSON:");
    req.mutable_sampling()->set_seed(seed);
    req.mutable_stopping()->set_max_tokens(200);
    req.mutable_response_format()->set_json_schema(schema);
    GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    if (r.completion.finish_reason() == v1::FINISH_REASON_LENGTH) continue;
    ++complete;
    EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_EOS);
    Json v = Json::parse(r.text, nullptr, false);
    ASSERT_FALSE(v.is_discarded()) << r.text;
    ASSERT_TRUE(v.is_object()) << r.text;
    ASSERT_TRUE(v.contains("name") && v["name"].is_string()) << r.text;
    ASSERT_TRUE(v.contains("score") && v["score"].is_number_integer()) << r.text;
    EXPECT_GE(v["score"].get<int>(), 0);
    EXPECT_LE(v["score"].get<int>(), 10);
    for (const auto& [k, x] : v.items()) {
      EXPECT_TRUE(k == "name" || k == "score" || k == "tags") << r.text;
    }
  }
  EXPECT_GE(complete, 8);
}

TEST_F(StructuredOutputE2eTest, ChoicesAndRegex) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    v1::GenerateRequest req;
    req.set_prompt("Sentiment:");
    req.mutable_sampling()->set_seed(seed);
    for (const char* c : {"positive", "negative", "neutral"}) {
      req.mutable_response_format()->mutable_choices()->add_choices(c);
    }
    GenerateResult r = Generate(stub_.get(), req, absl::Seconds(60));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(r.text == "positive" || r.text == "negative" || r.text == "neutral") << r.text;
    EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_EOS);

    req.mutable_response_format()->set_regex(R"([0-9]{3}-[A-Z]{2})");
    r = Generate(stub_.get(), req, absl::Seconds(60));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.text.size(), 6u) << r.text;
    EXPECT_EQ(r.text[3], '-') << r.text;
  }
}

TEST_F(StructuredOutputE2eTest, UncompilableFormatsAreInvalidArgumentNamingTheConstruct) {
  struct Case {
    std::function<void(v1::ResponseFormat*)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](v1::ResponseFormat* f) {
         f->set_json_schema(
             R"({"type":"object","properties":{"x":{"type":"object","patternProperties":{}}}})");
       },
       "response_format.json_schema: unsupported keyword \"patternProperties\" at "
       "#/properties/x"},
      {[](v1::ResponseFormat* f) { f->set_json_schema("{not json"); },
       "response_format.json_schema: is not valid JSON"},
      {[](v1::ResponseFormat* f) { f->set_regex("a(?=b)"); }, "response_format.regex: "},
      {[](v1::ResponseFormat* f) { f->set_grammar("root ::= value"); },
       "response_format.grammar: gbnf: undefined rule \"value\""},
      {[](v1::ResponseFormat* f) { f->mutable_choices(); }, "response_format.choices: "},
      {[](v1::ResponseFormat* f) { f->mutable_tool_calls(); },
       "response_format.tool_calls: needs chat input with tools"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req;
    req.set_prompt("Hello");
    c.set(req.mutable_response_format());
    GenerateResult r = Generate(stub_.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(r.status.error_message(), StartsWith(c.message));
  }
}

TEST_F(StructuredOutputE2eTest, ToolCallArgumentsMatchTheToolSchema) {
  int calls = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    v1::GenerateRequest req;
    *req.mutable_chat() = WeatherChat(/*thinking=*/false);
    req.mutable_sampling()->set_seed(seed);
    req.mutable_stopping()->set_max_tokens(200);
    req.mutable_response_format()->mutable_tool_calls()->set_required(true);
    GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    if (r.completion.finish_reason() == v1::FINISH_REASON_LENGTH) continue;
    EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
    EXPECT_EQ(r.text, "");
    ASSERT_FALSE(r.tool_calls.empty());
    for (const v1::ToolCall& c : r.tool_calls) {
      ++calls;
      EXPECT_EQ(c.name(), "get_weather");
      EXPECT_EQ(c.error(), "") << c.raw();
      Json args = Json::parse(c.arguments());
      ASSERT_TRUE(args["city"].is_string()) << c.arguments();
      ASSERT_TRUE(args["days"].is_number_integer()) << c.arguments();
      EXPECT_GE(args["days"].get<int>(), 1);
      EXPECT_LE(args["days"].get<int>(), 7);
    }
  }
  EXPECT_GE(calls, 3);
}

// A tool call the model itself samples (no forced output): with tool_calls required the grammar
// makes even random weights call the tool. The parsed call comes back whole (an id, the tool's
// name, arguments that satisfy the schema, finish TOOL_CALLS), and it round-trips: sent back as
// the assistant's turn with the tool's answer, the template renders exactly those arguments and
// the next turn generates.
TEST_F(StructuredOutputE2eTest, ASampledToolCallRoundTripsThroughTheNextTurn) {
  v1::ToolCall call;
  for (uint64_t seed = 1; seed <= 10 && call.name().empty(); ++seed) {
    v1::GenerateRequest req;
    *req.mutable_chat() = WeatherChat(/*thinking=*/false);
    req.set_request_id(absl::StrCat("sampled-call-", seed));
    req.mutable_sampling()->set_seed(seed);
    req.mutable_stopping()->set_max_tokens(200);
    req.mutable_response_format()->mutable_tool_calls()->set_required(true);
    GenerateResult r = Generate(stub_.get(), req, absl::Seconds(120));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    if (r.completion.finish_reason() != v1::FINISH_REASON_TOOL_CALLS) continue;
    ASSERT_FALSE(r.tool_calls.empty());
    call = r.tool_calls[0];
    EXPECT_EQ(call.id(), absl::StrCat("call_sampled-call-", seed, "_0"));
  }
  ASSERT_FALSE(call.name().empty()) << "no seed of 10 finished with a tool call";
  EXPECT_EQ(call.name(), "get_weather");
  EXPECT_EQ(call.error(), "") << call.raw();
  const Json args = Json::parse(call.arguments());
  ASSERT_TRUE(args["city"].is_string()) << call.arguments();
  // maxLength counts code points: the UTF-8 bytes that do not continue one.
  const std::string city = args["city"].get<std::string>();
  EXPECT_LE(std::count_if(city.begin(), city.end(), [](char c) { return (c & 0xC0) != 0x80; }), 12)
      << city;
  ASSERT_TRUE(args["days"].is_number_integer()) << call.arguments();

  // The next turn: the call as the assistant made it, and the tool's answer.
  v1::Chat chat = WeatherChat(/*thinking=*/false);
  v1::ChatMessage* assistant = chat.add_messages();
  assistant->set_role("assistant");
  *assistant->add_tool_calls() = call;
  v1::ChatMessage* tool = chat.add_messages();
  tool->set_role("tool");
  tool->set_tool_call_id(call.id());
  tool->set_content(R"({"temperature_c": 21})");
  v1::RenderChatRequest rr;
  *rr.mutable_chat() = chat;
  v1::RenderChatResponse rendered;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->RenderChat(&ctx, rr, &rendered).ok());
  EXPECT_THAT(rendered.prompt(), ::testing::HasSubstr("<function=get_weather>"));
  EXPECT_THAT(rendered.prompt(), ::testing::HasSubstr(absl::StrCat(
                                     "<parameter=city>\n", args["city"].get<std::string>())));
  EXPECT_THAT(rendered.prompt(), ::testing::HasSubstr(R"({"temperature_c": 21})"));
  v1::GenerateRequest next;
  *next.mutable_chat() = chat;
  next.mutable_sampling()->set_seed(1);
  next.mutable_stopping()->set_max_tokens(8);
  GenerateResult r = Generate(stub_.get(), next, absl::Seconds(60));
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().prompt_tokens(), static_cast<uint32_t>(rendered.token_ids_size()));
}

TEST_F(StructuredOutputE2eTest, WithThinkingTheConstraintAppliesToTheAnswer) {
  const int32_t close = TokenId("</think>");
  int answered = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    v1::GenerateRequest req;
    v1::ChatMessage* m = req.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content("Is Paris in France?");
    req.mutable_sampling()->set_seed(seed);
    // Random weights seldom end their reasoning: make </think> likely.
    (*req.mutable_sampling()->mutable_logit_bias())[close] = 8.0f;
    req.mutable_stopping()->set_max_tokens(64);
    req.mutable_response_format()->mutable_choices()->add_choices("yes");
    req.mutable_response_format()->mutable_choices()->add_choices("no");
    GenerateResult r = Generate(stub_.get(), req, absl::Seconds(60));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    if (r.completion.finish_reason() != v1::FINISH_REASON_EOS) continue;
    ++answered;
    EXPECT_TRUE(r.text == "yes" || r.text == "no") << r.text << " / reasoning: " << r.reasoning;
  }
  EXPECT_GE(answered, 3);
}

}  // namespace
}  // namespace qwen::testing

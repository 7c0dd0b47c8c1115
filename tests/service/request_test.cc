// Request validation and preparation (no processes: the tiny model's metadata only).
#include "service/request.h"

#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace qwen::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class RequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = TextModel::Load(qwen::testing::DataPath("models/tiny-qwen35-f32.gguf"));
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static RequestLimits Limits() {
    RequestLimits l;
    l.slot_context = 256;
    l.default_max_tokens = 100;
    return l;
  }
  static v1::GenerateRequest FromJson(const std::string& json) {
    v1::GenerateRequest r;
    auto st = google::protobuf::util::JsonStringToMessage(json, &r);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return r;
  }
  absl::StatusOr<PreparedGenerate> Prepare(const v1::GenerateRequest& r,
                                           RequestLimits limits = Limits()) {
    return PrepareGenerate(r, *model_, limits, 7);
  }
  static RequestLimits LargeContext() {
    RequestLimits l = Limits();
    l.slot_context = 2048;
    return l;
  }
  static TextModel* model_;
};

TextModel* RequestTest::model_ = nullptr;

// Every bad request is INVALID_ARGUMENT and the message starts with the field's path.
TEST_F(RequestTest, ValidationTableNamesTheField) {
  struct Case {
    std::string json;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"({})", "input"},
      {R"({"prompt": ""})", "prompt"},
      {R"({"prompt_token_ids": {"ids": []}})", "prompt_token_ids.ids"},
      {R"({"prompt_token_ids": {"ids": [1, 2, -3]}})", "prompt_token_ids.ids[2]"},
      {R"({"prompt_token_ids": {"ids": [1024]}})", "prompt_token_ids.ids[0]"},
      {R"({"prompt": "hi", "sampling": {"temperature": -0.5}})", "sampling.temperature"},
      {R"({"prompt": "hi", "sampling": {"top_k": -1}})", "sampling.top_k"},
      {R"({"prompt": "hi", "sampling": {"top_p": 0}})", "sampling.top_p"},
      {R"({"prompt": "hi", "sampling": {"top_p": 1.01}})", "sampling.top_p"},
      {R"({"prompt": "hi", "sampling": {"min_p": 2}})", "sampling.min_p"},
      {R"({"prompt": "hi", "sampling": {"repetition_penalty": 0}})", "sampling.repetition_penalty"},
      {R"({"prompt": "hi", "sampling": {"presence_penalty": 101}})", "sampling.presence_penalty"},
      {R"({"prompt": "hi", "sampling": {"frequency_penalty": -101}})",
       "sampling.frequency_penalty"},
      {R"({"prompt": "hi", "sampling": {"logit_bias": {"5000": 1}}})", "sampling.logit_bias"},
      {R"({"prompt": "hi", "stopping": {"max_tokens": 0}})", "stopping.max_tokens"},
      {R"({"prompt": "hi", "stopping": {"max_tokens": 300}})", "stopping.max_tokens"},
      {R"({"prompt": "hi", "stopping": {"stop": ["a", ""]}})", "stopping.stop[1]"},
      {R"({"prompt": "hi", "stopping": {"stop_token_ids": [7, 99999]}})",
       "stopping.stop_token_ids[1]"},
      {R"({"prompt": "hi", "output": {"logprobs": true, "top_logprobs": 21}})",
       "output.top_logprobs"},
      {R"({"prompt": "hi", "output": {"top_logprobs": 3}})", "output.top_logprobs"},
      {R"({"prompt": "hi", "output": {"raw_text": true}})", "output.raw_text"},
      {R"({"chat": {}})", "chat.messages"},
      {R"({"chat": {"messages": [{"role": "bot", "content": "x"}]}})", "chat.messages[0].role"},
      {R"({"chat": {"messages": [{"role": "user", "content": "x", "parts": [{"text": "y"}]}]}})",
       "chat.messages[0]"},
      {R"({"chat": {"messages": [{"role": "user", "parts": [{}]}]}})", "chat.messages[0].parts[0]"},
      {R"({"chat": {"messages": [{"role": "user", "content": "x"},
           {"role": "assistant", "tool_calls": [{"name": "f", "arguments": "[1]"}]}]}})",
       "chat.messages[1].tool_calls[0].arguments"},
      {R"({"chat": {"messages": [{"role": "user", "content": "x"}],
           "tools": [{"name": "f", "parameters_json": "nope"}]}})",
       "chat.tools[0].parameters_json"},
      {R"({"chat": {"messages": [{"role": "user", "content": "x"}], "tools": [{}]}})",
       "chat.tools[0].name"},
      // The template's own check: a conversation needs a user message.
      {R"({"chat": {"messages": [{"role": "system", "content": "x"}]}})", "chat"},
      {R"({"prompt": "hi", "speculative": {"mode": "fast"}})", "speculative.mode"},
      // This fixture has no MTP head.
      {R"({"prompt": "hi", "speculative": {"mode": "mtp"}})", "speculative.mode"},
      {R"({"prompt": "hi", "speculative": {"max_draft": 9}})", "speculative.max_draft"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<PreparedGenerate> p = Prepare(FromJson(c.json));
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(p.status().message()), StartsWith(c.field + ": ")) << c.json;
  }
}

TEST_F(RequestTest, PromptTooLongForTheContextNamesTheInput) {
  v1::GenerateRequest r;
  for (int k = 0; k < 256; ++k) r.mutable_prompt_token_ids()->add_ids(5);
  absl::StatusOr<PreparedGenerate> p = Prepare(r);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), StartsWith("prompt_token_ids.ids: "));
}

// Both context errors are recognised as such (HTTP: code "context_length_exceeded"); others not.
TEST_F(RequestTest, ContextLengthErrorsAreRecognised) {
  auto too_long = Prepare(FromJson(R"({"prompt": "hi", "stopping": {"max_tokens": 1000}})"));
  ASSERT_FALSE(too_long.ok());
  EXPECT_TRUE(IsContextLengthError(too_long.status())) << too_long.status();
  std::string long_prompt;
  for (int k = 0; k < 300; ++k) long_prompt += " hello";
  v1::GenerateRequest r;
  r.set_prompt(long_prompt);
  auto no_room = Prepare(r);
  ASSERT_FALSE(no_room.ok());
  EXPECT_TRUE(IsContextLengthError(no_room.status())) << no_room.status();
  auto other = Prepare(FromJson(R"({"prompt": "hi", "sampling": {"top_p": 2}})"));
  ASSERT_FALSE(other.ok());
  EXPECT_FALSE(IsContextLengthError(other.status()));
}

// The reasoning budget: with a prompt that opens a thinking block, the worker gets the budget,
// the </think> token and the closing tokens; 0 renders the chat with thinking off; other inputs
// are refused.
TEST_F(RequestTest, TheReasoningBudgetGoesToTheWorker) {
  v1::GenerateRequest r = FromJson(
      R"({"chat": {"messages": [{"role": "user", "content": "hi"}], "enable_thinking": true},)"
      R"( "stopping": {"max_reasoning_tokens": 7}})");
  auto p = Prepare(r, LargeContext());
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->parser_options.reasoning_open);
  const worker::v1::GenerateRequest& w = p->worker_request;
  ASSERT_TRUE(w.has_reasoning_budget());
  EXPECT_EQ(w.reasoning_budget(), 7);
  EXPECT_EQ(model_->tokenizer().Decode({w.reasoning_end()}, true), "</think>");
  std::vector<int32_t> close(w.reasoning_close().begin(), w.reasoning_close().end());
  EXPECT_EQ(model_->tokenizer().Decode(close, true), "\n</think>\n\n");

  r.mutable_stopping()->set_max_reasoning_tokens(0);
  auto off = Prepare(r, LargeContext());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->parser_options.reasoning_open);
  EXPECT_FALSE(off->worker_request.has_reasoning_budget());

  auto prompt = Prepare(FromJson(R"({"prompt": "hi", "stopping": {"max_reasoning_tokens": 3}})"));
  ASSERT_FALSE(prompt.ok());
  EXPECT_THAT(std::string(prompt.status().message()),
              StartsWith("stopping.max_reasoning_tokens: "));
}

// stopping.max_tool_calls reaches the output parser; without a parsed chat output it is refused,
// naming the field.
TEST_F(RequestTest, MaxToolCallsNeedsAParsedChat) {
  v1::GenerateRequest r = FromJson(R"({"chat": {"messages": [{"role": "user", "content": "hi"}]},)"
                                   R"( "stopping": {"max_tool_calls": 1}})");
  auto p = Prepare(r, LargeContext());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->parser_options.max_tool_calls, 1);

  r.mutable_output()->set_raw_text(true);
  auto raw = Prepare(r, LargeContext());
  ASSERT_FALSE(raw.ok());
  EXPECT_EQ(raw.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(raw.status().message()), StartsWith("stopping.max_tool_calls: "));

  auto prompt = Prepare(FromJson(R"({"prompt": "hi", "stopping": {"max_tool_calls": 2}})"));
  ASSERT_FALSE(prompt.ok());
  EXPECT_THAT(std::string(prompt.status().message()), StartsWith("stopping.max_tool_calls: "));
}

TEST_F(RequestTest, DefaultsFillTheWorkerRequest) {
  absl::StatusOr<PreparedGenerate> p = Prepare(FromJson(R"({"prompt": "Hello world"})"));
  ASSERT_TRUE(p.ok()) << p.status();
  const worker::v1::GenerateRequest& w = p->worker_request;
  EXPECT_EQ(p->request_id, "req-7");
  EXPECT_EQ(w.prompt_size(), p->prompt_tokens);
  EXPECT_EQ(w.max_tokens(), 100);
  EXPECT_FLOAT_EQ(w.sampling().temperature(), 1.0f);
  EXPECT_FLOAT_EQ(w.sampling().top_p(), 1.0f);
  EXPECT_FLOAT_EQ(w.sampling().repetition_penalty(), 1.0f);
  EXPECT_EQ(w.sampling().seed(), p->seed);
  EXPECT_EQ(w.logprobs(), -1);
  // Speculative decoding: auto, at the worker's longest draft.
  EXPECT_EQ(w.speculative(), "auto");
  EXPECT_EQ(w.max_draft(), 0);
  // End-of-generation tokens stop it.
  EXPECT_THAT(std::vector<int32_t>(w.stop_token_ids().begin(), w.stop_token_ids().end()),
              ::testing::IsSupersetOf({998, 1000}));
  EXPECT_FALSE(p->parse_output);
}

TEST_F(RequestTest, DefaultMaxTokensIsCappedByTheContext) {
  v1::GenerateRequest r;
  for (int k = 0; k < 200; ++k) r.mutable_prompt_token_ids()->add_ids(5);
  absl::StatusOr<PreparedGenerate> p = Prepare(r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->worker_request.max_tokens(), 56);
}

TEST_F(RequestTest, ExplicitFieldsPassThrough) {
  absl::StatusOr<PreparedGenerate> p = Prepare(FromJson(R"({
    "request_id": "mine",
    "prompt_token_ids": {"ids": [1, 2, 3]},
    "sampling": {"temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1,
                 "repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                 "seed": "42", "logit_bias": {"9": -3.5, "4": 2}},
    "stopping": {"max_tokens": 12, "stop": ["\n\n"], "stop_token_ids": [77], "ignore_eos": true},
    "output": {"logprobs": true, "top_logprobs": 3, "return_token_ids": true}})"));
  ASSERT_TRUE(p.ok()) << p.status();
  const worker::v1::GenerateRequest& w = p->worker_request;
  EXPECT_EQ(p->request_id, "mine");
  EXPECT_THAT(std::vector<int32_t>(w.prompt().begin(), w.prompt().end()), ElementsAre(1, 2, 3));
  EXPECT_FLOAT_EQ(w.sampling().temperature(), 0.0f);
  EXPECT_EQ(w.sampling().top_k(), 5);
  EXPECT_FLOAT_EQ(w.sampling().top_p(), 0.5f);
  EXPECT_FLOAT_EQ(w.sampling().min_p(), 0.1f);
  EXPECT_FLOAT_EQ(w.sampling().repetition_penalty(), 1.2f);
  EXPECT_FLOAT_EQ(w.sampling().presence_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(w.sampling().frequency_penalty(), 0.25f);
  EXPECT_EQ(w.sampling().seed(), 42u);
  EXPECT_EQ(p->seed, 42u);
  EXPECT_EQ(w.sampling().logit_bias().size(), 2u);
  EXPECT_FLOAT_EQ(w.sampling().logit_bias().at(9), -3.5f);
  EXPECT_EQ(w.max_tokens(), 12);
  // ignore_eos: only the client's stop id ends it.
  EXPECT_THAT(std::vector<int32_t>(w.stop_token_ids().begin(), w.stop_token_ids().end()),
              ElementsAre(77));
  EXPECT_TRUE(p->client_stop_ids.contains(77));
  EXPECT_THAT(p->stop, ElementsAre("\n\n"));
  EXPECT_EQ(w.logprobs(), 3);
  EXPECT_TRUE(p->return_token_ids);
}

TEST_F(RequestTest, UnseededRequestsGetDifferentSeeds) {
  absl::StatusOr<PreparedGenerate> a = Prepare(FromJson(R"({"prompt": "x"})"));
  absl::StatusOr<PreparedGenerate> b = Prepare(FromJson(R"({"prompt": "x"})"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->seed, b->seed);
}

TEST_F(RequestTest, ChatIsRenderedAndParsed) {
  absl::StatusOr<PreparedGenerate> p = Prepare(FromJson(R"({"chat": {
    "messages": [{"role": "user", "content": "Weather?"}],
    "tools": [{"name": "get_weather", "parameters_json": "{\"type\": \"object\"}"}]}})"),
                                               LargeContext());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->parse_output);
  EXPECT_TRUE(p->parser_options.reasoning_open);
  ASSERT_EQ(p->parser_options.tools.size(), 1u);
  EXPECT_EQ(p->parser_options.tools[0]["function"]["name"], "get_weather");

  absl::StatusOr<PreparedGenerate> off = Prepare(
      FromJson(
          R"({"chat": {"messages": [{"role": "user", "content": "Hi"}], "enable_thinking": false},
          "output": {"raw_text": true}})"),
      LargeContext());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->parse_output);
  EXPECT_FALSE(off->parser_options.reasoning_open);
}

TEST_F(RequestTest, RenderChatMatchesTheTemplateFixture) {
  v1::Chat chat;
  auto st = google::protobuf::util::JsonStringToMessage(
      R"({"messages": [{"role": "system", "content": "Be helpful."},
                       {"role": "user", "content": "Hello!"}]})",
      &chat);
  ASSERT_TRUE(st.ok());
  absl::StatusOr<RenderedChat> r = RenderChat(chat, *model_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt,
            "<|im_start|>system\nBe helpful.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n");
  EXPECT_EQ(r->token_ids.front(), 999);  // <|im_start|> as one control token
}

TEST_F(RequestTest, ChatHistoryWithToolCallsBecomesTemplateInput) {
  v1::Chat chat;
  auto st = google::protobuf::util::JsonStringToMessage(R"({
    "messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "reasoning_content": "Need a call.",
       "tool_calls": [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}]},
      {"role": "tool", "content": "{\"temp\": 18}", "tool_call_id": "c1"},
      {"role": "user", "parts": [{"text": "Thanks"}]}],
    "enable_thinking": true, "add_generation_prompt": false})",
                                                        &chat);
  ASSERT_TRUE(st.ok());
  absl::StatusOr<nlohmann::ordered_json> in = ChatToTemplateInput(chat, "chat");
  ASSERT_TRUE(in.ok()) << in.status();
  const auto& msgs = (*in)["messages"];
  EXPECT_EQ(msgs[1]["tool_calls"][0]["function"]["arguments"]["city"], "Paris");
  EXPECT_EQ(msgs[1]["reasoning_content"], "Need a call.");
  EXPECT_EQ(msgs[2]["tool_call_id"], "c1");
  EXPECT_EQ(msgs[3]["content"][0]["text"], "Thanks");
  EXPECT_EQ((*in)["enable_thinking"], true);
  EXPECT_EQ((*in)["add_generation_prompt"], false);
  absl::StatusOr<RenderedChat> r = RenderChat(chat, *model_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->prompt, HasSubstr("<function=get_weather>\n<parameter=city>\nParis\n"));
  EXPECT_THAT(r->prompt, HasSubstr("<tool_response>\n{\"temp\": 18}\n</tool_response>"));
}

TEST_F(RequestTest, StructSchemasKeepIntegersAndAConventionalKeyOrder) {
  google::protobuf::Struct s;
  auto st = google::protobuf::util::JsonStringToMessage(
      R"({"required": ["a"], "properties": {"b": {"minimum": 1, "type": "integer"},
          "a": {"type": "number", "maximum": 2.5}}, "type": "object"})",
      &s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(StructToJson(s).dump(),
            R"({"type":"object","properties":{"a":{"type":"number","maximum":2.5},)"
            R"("b":{"type":"integer","minimum":1}},"required":["a"]})");
}

TEST_F(RequestTest, ForcedOutputBecomesForcedTokens) {
  const std::string forced = "<tool_call>x";
  absl::StatusOr<PreparedGenerate> p =
      PrepareGenerate(FromJson(R"({"prompt": "x"})"), *model_, Limits(), 1, &forced);
  ASSERT_TRUE(p.ok());
  ASSERT_GE(p->worker_request.forced_tokens_size(), 2);
  EXPECT_EQ(p->worker_request.forced_tokens(0), 1012);  // <tool_call>
}

TEST_F(RequestTest, ResponseFormatIsCheckedAndForwarded) {
  absl::StatusOr<PreparedGenerate> p = Prepare(FromJson(R"({"prompt": "x",
      "response_format": {"json_schema": "{\"type\": \"integer\", \"maximum\": 9}"}})"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->worker_request.constraint().kind(), worker::v1::Constraint::KIND_JSON_SCHEMA);
  EXPECT_FALSE(p->worker_request.constraint().after_reasoning());

  // Chat with thinking on: the constraint starts after the reasoning; tools travel along.
  p = Prepare(FromJson(R"({"chat": {
    "messages": [{"role": "user", "content": "Weather?"}],
    "tools": [{"name": "get_weather", "parameters_json": "{\"type\": \"object\"}"}]},
    "response_format": {"tool_calls": {"required": true}}})"),
              LargeContext());
  ASSERT_TRUE(p.ok()) << p.status();
  const worker::v1::Constraint& c = p->worker_request.constraint();
  EXPECT_EQ(c.kind(), worker::v1::Constraint::KIND_TOOL_CALLS);
  EXPECT_TRUE(c.after_reasoning());
  EXPECT_TRUE(c.tool_calls_required());
  EXPECT_NE(c.tools_json().find("get_weather"), std::string::npos);

  p = Prepare(FromJson(R"({"prompt": "x", "response_format": {"json_schema_struct":
      {"type": "object", "properties": {"x": {"type": "string", "format": "hostname"}}}}})"));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            "response_format.json_schema_struct: unsupported format \"hostname\" at "
            "#/properties/x");
  EXPECT_FALSE(Prepare(FromJson(R"({"prompt": "x", "response_format": {}})")).ok());
}

}  // namespace
}  // namespace qwen::service

namespace qwen::service {
namespace {

// Images are measured from their header on the front end: a body cut after a good header still
// renders (the worker decodes, and refuses it then), at the size the header gives, and the
// limits (--max_image_bytes, --max_image_megapixels) are checked without decoding.
class RequestImagesTest : public ::testing::Test {
 protected:
  static std::unique_ptr<TextModel> Load(const vision::DecodeLimits& limits) {
    TextModel::VisionOptions v;
    v.mmproj_path = qwen::testing::DataPath("models/mmproj-tiny-qwen35-f32.gguf");
    v.decode = limits;
    auto m = TextModel::Load(qwen::testing::DataPath("models/tiny-qwen35-q3_k_m.gguf"), v);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }
  static v1::Chat ImageChat(const std::string& bytes) {
    v1::Chat chat;
    v1::ChatMessage* m = chat.add_messages();
    m->set_role("user");
    m->add_parts()->mutable_image()->set_data(bytes);
    m->add_parts()->set_text("What is it?");
    return chat;
  }
};

TEST_F(RequestImagesTest, OnlyTheHeaderIsRead) {
  auto model = Load({});
  ASSERT_NE(model, nullptr);
  std::string png = qwen::testing::ReadFile(qwen::testing::DataPath("vision/img_200x130.png"));
  ASSERT_GT(png.size(), 200u);
  png.resize(png.size() / 2);  // the header whole, half the pixels gone
  absl::StatusOr<RenderedChat> r = RenderChat(ImageChat(png), *model);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->images.size(), 1u);
  EXPECT_EQ(r->images[0].width, 200);
  EXPECT_EQ(r->images[0].height, 130);
}

TEST_F(RequestImagesTest, TheLimitsAreCheckedFromTheHeader) {
  const std::string png =
      qwen::testing::ReadFile(qwen::testing::DataPath("vision/img_200x130.png"));
  vision::DecodeLimits bytes;
  bytes.max_bytes = png.size() - 1;
  auto small = Load(bytes);
  ASSERT_NE(small, nullptr);
  absl::StatusOr<RenderedChat> r = RenderChat(ImageChat(png), *small);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::StartsWith("chat.messages[0].parts[0].image: "));
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("bytes is too large"));
  vision::DecodeLimits pixels;
  pixels.max_pixels = 200 * 130 - 1;
  auto few = Load(pixels);
  ASSERT_NE(few, nullptr);
  r = RenderChat(ImageChat(png), *few);
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::HasSubstr("200x130 pixels is too large"));
  // The worker is told the same limits.
  v1::GenerateRequest req;
  *req.mutable_chat() = ImageChat(png);
  auto plain = Load({});
  ASSERT_NE(plain, nullptr);
  absl::StatusOr<PreparedGenerate> p = PrepareGenerate(req, *plain, {}, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->worker_request.images_size(), 1);
  EXPECT_EQ(p->worker_request.images(0).max_bytes(), int64_t{20} << 20);
  EXPECT_EQ(p->worker_request.images(0).max_decoded_pixels(), 50'000'000);
}

}  // namespace
}  // namespace qwen::service

#include "service/openai_request.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/anthropic_request.h"
#include "service/http_shapes.h"
#include "service/openai_response.h"

namespace qwen::service {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(OpenAIRequestTest, AFullRequestMapsToGenerate) {
  absl::StatusOr<OpenAIChatRequest> r = ParseChatCompletionRequest(R"({
    "model": "tiny",
    "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                                   {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AA=="}}]},
      {"role": "assistant", "content": null, "reasoning_content": "hmm",
       "tool_calls": [{"id": "c1", "type": "function",
                       "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "42"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
               "parameters": {"type": "object"}}}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1,
    "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 7,
    "max_completion_tokens": 100, "max_tokens": 5, "stop": ["x", "y"],
    "logprobs": true, "top_logprobs": 3, "logit_bias": {"12": -100},
    "n": 2, "stream": true, "stream_options": {"include_usage": true},
    "parallel_tool_calls": false, "user": "u1",
    "chat_template_kwargs": {"enable_thinking": false}
  })");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "tiny");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->n, 2);
  EXPECT_TRUE(r->logprobs);
  EXPECT_FALSE(r->parallel_tool_calls);
  // One call at most: generation ends after it.
  EXPECT_EQ(r->request.stopping().max_tool_calls(), 1u);
  const v1::GenerateRequest& g = r->request;
  ASSERT_EQ(g.chat().messages_size(), 4);
  EXPECT_EQ(g.chat().messages(0).role(), "system");
  EXPECT_EQ(g.chat().messages(1).parts(0).text(), "What is this?");
  EXPECT_EQ(g.chat().messages(1).parts(1).image().url(), "data:image/png;base64,AA==");
  EXPECT_EQ(g.chat().messages(1).parts(2).video().url(), "data:video/mp4;base64,AA==");
  EXPECT_EQ(g.chat().messages(2).reasoning_content(), "hmm");
  EXPECT_EQ(g.chat().messages(2).tool_calls(0).name(), "f");
  EXPECT_EQ(g.chat().messages(2).tool_calls(0).arguments(), R"({"a": 1})");
  EXPECT_EQ(g.chat().messages(3).tool_call_id(), "c1");
  EXPECT_EQ(g.chat().tools(0).parameters_json(), R"({"type":"object"})");
  EXPECT_FALSE(g.chat().enable_thinking());
  EXPECT_TRUE(g.chat().has_enable_thinking());
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_EQ(g.sampling().top_k(), 40);
  EXPECT_EQ(g.sampling().seed(), 7u);
  EXPECT_FLOAT_EQ(g.sampling().logit_bias().at(12), -100.0f);
  EXPECT_EQ(g.stopping().max_tokens(), 100u);  // max_completion_tokens wins
  EXPECT_EQ(g.stopping().stop_size(), 2);
  EXPECT_TRUE(g.output().logprobs());
  EXPECT_EQ(g.output().top_logprobs(), 3u);
  EXPECT_FALSE(g.has_response_format());
}

TEST(OpenAIRequestTest, ToolChoiceAndResponseFormat) {
  const std::string base = R"("messages": [{"role": "user", "content": "hi"}], "tools": [)"
                           R"({"type": "function", "function": {"name": "f"}}, )"
                           R"({"type": "function", "function": {"name": "g"}}])";
  auto required = ParseChatCompletionRequest("{" + base + R"(, "tool_choice": "required"})");
  ASSERT_TRUE(required.ok()) << required.status();
  EXPECT_TRUE(required->request.response_format().tool_calls().required());
  EXPECT_EQ(required->request.chat().tools_size(), 2);

  auto named = ParseChatCompletionRequest(
      "{" + base + R"(, "tool_choice": {"type": "function", "function": {"name": "g"}}})");
  ASSERT_TRUE(named.ok()) << named.status();
  ASSERT_EQ(named->request.chat().tools_size(), 1);
  EXPECT_EQ(named->request.chat().tools(0).name(), "g");
  EXPECT_TRUE(named->request.response_format().tool_calls().required());

  auto none = ParseChatCompletionRequest("{" + base + R"(, "tool_choice": "none"})");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->request.chat().tools_size(), 0);
  EXPECT_FALSE(none->request.has_response_format());

  auto json_object = ParseChatCompletionRequest(
      R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})");
  ASSERT_TRUE(json_object.ok());
  EXPECT_EQ(json_object->request.response_format().json_schema(), R"({"type":"object"})");

  auto schema = ParseChatCompletionRequest(
      R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": )"
      R"("json_schema", "json_schema": {"name": "p", "strict": true, "schema": {"type": "integer"}}}})");
  ASSERT_TRUE(schema.ok());
  EXPECT_EQ(schema->request.response_format().json_schema(), R"({"type":"integer"})");

  auto both = ParseChatCompletionRequest(
      "{" + base + R"(, "tool_choice": "required", "response_format": {"type": "json_object"}})");
  EXPECT_FALSE(both.ok());
  EXPECT_THAT(std::string(both.status().message()), StartsWith("tool_choice: "));
}

TEST(OpenAIRequestTest, ErrorsNameTheParameter) {
  struct Case {
    const char* body;
    const char* starts;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "user", "content": "hi"}], "temperature": "x"})",
       "temperature: must be a number, not string"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].image_url: is required"},
      {R"({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": 3}]}]})",
       "messages[0].content[0].video_url: must be an object"},
      {R"({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]})",
       "messages[0].content[0].video_url.url: is required"},
      {R"({"messages": [{"role": "user", "content": [{"type": "audio_url"}]}]})",
       "messages[0].content[0].type: \"audio_url\" is not supported"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "n": 9})", "n: must be in [1, 8]"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "seed": 1.5})", "seed: must be an"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3000000000})",
       "max_tokens: is too large"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "extreme"})",
       "reasoning_effort: "},
  };
  for (const Case& c : cases) {
    auto r = ParseChatCompletionRequest(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), StartsWith(c.starts)) << c.body;
  }
}

TEST(OpenAIRequestTest, MalformedAndDeepBodies) {
  auto bad = ParseChatCompletionRequest(R"({"messages": [}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("at byte 15"));
  EXPECT_EQ(OpenAIParamOf(bad.status().message()).param, "");
  std::string deep(100, '[');
  deep += std::string(100, ']');
  auto d = ParseChatCompletionRequest(deep);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("nested deeper"));
  EXPECT_FALSE(ParseChatCompletionRequest("").ok());
  EXPECT_FALSE(ParseChatCompletionRequest("42").ok());
  // A number beyond a double's range is a parse error at its byte, not an exception that
  // escapes (the fuzzer found a bare "7E777777777" body ending the process).
  for (const char* body : {"7E777777777", R"({"temperature": 1e999})"}) {
    auto big = ParseChatCompletionRequest(body);
    ASSERT_FALSE(big.ok()) << body;
    EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(std::string(big.status().message()), HasSubstr("number overflow")) << body;
    EXPECT_THAT(std::string(big.status().message()), HasSubstr("at byte ")) << body;
  }
  auto anthropic = ParseMessagesRequest(R"({"max_tokens": -1e400})");
  ASSERT_FALSE(anthropic.ok());
  EXPECT_EQ(anthropic.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OpenAIRequestTest, ServerFieldPathsBecomeOpenAIParams) {
  const std::pair<const char*, const char*> cases[] = {
      {"chat.messages[1].role: bad", "messages[1].role"},
      {"chat.messages: is empty", "messages"},
      {"chat: No user query found", "messages"},
      {"chat.messages[0].parts[1].image.url: only data: URLs",
       "messages[0].content[1].image_url.url"},
      {"chat.messages[0].parts[1].image: no images", "messages[0].content[1].image_url"},
      {"chat.messages[0].parts[2].video.url: only data: URLs",
       "messages[0].content[2].video_url.url"},
      {"chat.messages[0].parts[0].video: does not decode", "messages[0].content[0].video_url"},
      {"chat.messages[0].parts[0].text: NUL", "messages[0].content[0].text"},
      {"chat.messages[2].tool_calls[0].arguments: not JSON",
       "messages[2].tool_calls[0].function.arguments"},
      {"chat.tools[3].name: bad", "tools[3].function.name"},
      {"chat.tools[3].parameters_json.properties: bad", "tools[3].function.parameters.properties"},
      {"chat.tools: 99 tools", "tools"},
      {"sampling.top_p: must be in (0, 1]", "top_p"},
      {"sampling.logit_bias: token", "logit_bias"},
      {"stopping.max_tokens: too many", "max_tokens"},
      {"stopping.stop[2]: is empty", "stop[2]"},
      {"output.top_logprobs: at most 20", "top_logprobs"},
      {"response_format.json_schema: unsupported", "response_format.json_schema.schema"},
      {"response_format.tool_calls: needs tools", "tool_choice"},
      {"the server is shutting down", ""},
  };
  for (const auto& [message, param] : cases) {
    const OpenAIParamError e = OpenAIParamOf(message);
    EXPECT_EQ(e.param, param) << message;
    if (*param != '\0') {
      EXPECT_THAT(e.message, StartsWith(std::string(param) + ": ")) << message;
    }
  }
}

TEST(OpenAIResponseTest, AccumulatesAChoice) {
  ChoiceAccumulator a;
  v1::GenerateResponse m;
  m.set_reasoning("think");
  m.set_text("Hi");
  v1::ToolCall* c = m.add_tool_calls();
  c->set_id("call_1");
  c->set_name("f");
  c->set_arguments(R"({"a":1})");
  v1::ToolCall* c2 = m.add_tool_calls();
  c2->set_id("call_2");
  c2->set_name("f");
  OrderedJson delta = a.Add(m);
  EXPECT_EQ(delta["reasoning_content"], "think");
  EXPECT_EQ(delta["content"], "Hi");
  // Calls that were not streamed come whole (each in one entry).
  ASSERT_EQ(delta["tool_calls"].size(), 2u);
  EXPECT_EQ(delta["tool_calls"][0]["index"], 0);
  EXPECT_EQ(delta["tool_calls"][1]["index"], 1);
  EXPECT_EQ(delta["tool_calls"][1]["id"], "call_2");
  EXPECT_EQ(delta["tool_calls"][0]["function"]["arguments"], R"({"a":1})");
  v1::GenerateResponse end;
  end.mutable_completion()->set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);
  end.mutable_completion()->mutable_usage()->set_prompt_tokens(5);
  end.mutable_completion()->mutable_usage()->set_generated_tokens(3);
  a.Add(end);
  EXPECT_TRUE(a.finished());
  OrderedJson choice = a.Choice(0, false);
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["reasoning_content"], "think");
  EXPECT_TRUE(choice["logprobs"].is_null());
  OrderedJson usage = UsageObject({&a.completion(), &a.completion()});
  EXPECT_EQ(usage["prompt_tokens"], 5);
  EXPECT_EQ(usage["completion_tokens"], 6);
  EXPECT_EQ(usage["total_tokens"], 11);
}

// The messages of one streamed call "call_r_0" of f(city, days), as the output assembler sends
// them: a start, a fragment per parameter and the brace, then the whole call.
std::vector<v1::GenerateResponse> StreamedCall(bool cut_off) {
  std::vector<v1::GenerateResponse> ms;
  auto delta = [&](const char* id, const char* name, const char* arguments) {
    v1::GenerateResponse m;
    v1::ToolCallDelta* d = m.add_tool_call_deltas();
    d->set_index(0);
    d->set_id(id);
    d->set_name(name);
    d->set_arguments(arguments);
    ms.push_back(m);
  };
  delta("call_r_0", "f", "");
  delta("", "", R"({"city":"Paris")");
  v1::GenerateResponse last;
  v1::ToolCall* c = last.add_tool_calls();
  c->set_id("call_r_0");
  c->set_name("f");
  if (cut_off) {
    c->set_arguments(R"({"city":"Paris")");
    c->set_error("unclosed <tool_call>");
    c->set_raw("<tool_call>...");
    last.mutable_completion()->set_finish_reason(v1::FINISH_REASON_LENGTH);
  } else {
    delta("", "", R"(,"days":3)");
    delta("", "", "}");
    c->set_arguments(R"({"city":"Paris","days":3})");
    last.mutable_completion()->set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);
  }
  ms.push_back(last);
  return ms;
}

TEST(OpenAIResponseTest, ToolCallsStreamAsOpenAIDoes) {
  for (bool cut_off : {false, true}) {
    ChoiceAccumulator a;
    std::vector<OrderedJson> entries;
    for (const v1::GenerateResponse& m : StreamedCall(cut_off)) {
      OrderedJson delta = a.Add(m);
      EXPECT_FALSE(delta.contains("content")) << delta.dump();
      if (delta.contains("tool_calls")) {
        for (const OrderedJson& e : delta["tool_calls"]) entries.push_back(e);
      }
    }
    ASSERT_EQ(entries.size(), cut_off ? 2u : 4u);
    EXPECT_EQ(entries[0].dump(),
              R"({"index":0,"id":"call_r_0","type":"function","function":{"name":"f",)"
              R"("arguments":""}})");
    EXPECT_EQ(entries[1].dump(), R"({"index":0,"function":{"arguments":"{\"city\":\"Paris\""}})");
    std::string assembled;
    for (const OrderedJson& e : entries) assembled += e["function"]["arguments"].get<std::string>();
    // The whole response holds what a stream consumer assembles, also for a call cut off by
    // max_tokens (which stays a call, its arguments cut short, as OpenAI returns them).
    const OrderedJson choice = a.Choice(0, false);
    ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
    EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], assembled);
    EXPECT_EQ(choice["message"]["tool_calls"][0]["id"], "call_r_0");
    EXPECT_TRUE(choice["message"]["content"].is_null());
    EXPECT_EQ(choice["finish_reason"], cut_off ? "length" : "tool_calls");
    EXPECT_EQ(assembled, cut_off ? R"({"city":"Paris")" : R"({"city":"Paris","days":3})");
  }
}

TEST(OpenAIResponseTest, AnInvalidCallThatNeverStartedIsContent) {
  ChoiceAccumulator a;
  v1::GenerateResponse m;
  v1::ToolCall* c = m.add_tool_calls();
  c->set_id("call_r_0");
  c->set_name("launch");
  c->set_error("unknown function 'launch'");
  c->set_raw("<tool_call>\n<function=launch>\n</function>\n</tool_call>");
  OrderedJson delta = a.Add(m);
  EXPECT_FALSE(delta.contains("tool_calls"));
  EXPECT_EQ(delta["content"], c->raw());
  EXPECT_FALSE(a.Choice(0, false)["message"].contains("tool_calls"));
}

TEST(HttpShapesTest, ChatStreamSendsEachPieceOfACallInItsOwnChunk) {
  std::unique_ptr<Shape> shape = MakeChatShape(1, false);
  std::vector<v1::GenerateResponse> ms = StreamedCall(false);
  // Everything in one message (a slow reader): still one chunk per piece.
  v1::GenerateResponse merged;
  for (const auto& m : ms) {
    for (const auto& d : m.tool_call_deltas()) *merged.add_tool_call_deltas() = d;
    for (const auto& c : m.tool_calls()) *merged.add_tool_calls() = c;
    if (m.has_completion()) *merged.mutable_completion() = m.completion();
  }
  std::vector<OrderedJson> events = shape->Events(0, merged);
  ASSERT_EQ(events.size(), 4u);
  std::string arguments;
  for (const OrderedJson& e : events) {
    ASSERT_EQ(e["choices"][0]["delta"]["tool_calls"].size(), 1u) << e.dump();
    arguments +=
        e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(arguments, R"({"city":"Paris","days":3})");
  EXPECT_EQ(shape->Whole()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            arguments);
}

TEST(HttpShapesTest, AnthropicStreamsToolUseInputAsJsonDeltas) {
  for (bool cut_off : {false, true}) {
    std::unique_ptr<Shape> shape = MakeAnthropicShape();
    std::vector<OrderedJson> events;
    for (const auto& m : StreamedCall(cut_off)) {
      for (OrderedJson& e : shape->Events(0, m)) events.push_back(std::move(e));
    }
    for (OrderedJson& e : shape->FinishEvents(0)) events.push_back(std::move(e));
    ASSERT_GE(events.size(), 4u);
    EXPECT_EQ(events[0]["type"], "content_block_start");
    EXPECT_EQ(events[0]["content_block"]["type"], "tool_use");
    EXPECT_EQ(events[0]["content_block"]["id"], "call_r_0");
    std::string partial;
    size_t stops = 0;
    for (const OrderedJson& e : events) {
      if (e["type"] == "content_block_delta") {
        EXPECT_EQ(e["delta"]["type"], "input_json_delta");
        partial += e["delta"]["partial_json"].get<std::string>();
      }
      if (e["type"] == "content_block_stop") ++stops;
    }
    EXPECT_EQ(stops, 1u);
    EXPECT_EQ(partial, cut_off ? R"({"city":"Paris")" : R"({"city":"Paris","days":3})");
    const OrderedJson message = shape->Whole();
    ASSERT_EQ(message["content"].size(), 1u) << message.dump();
    EXPECT_EQ(message["content"][0]["type"], "tool_use");
    // A cut-off call keeps the parameters it has, as Anthropic's SDKs read the partial JSON.
    EXPECT_EQ(message["content"][0]["input"],
              cut_off ? OrderedJson::parse(R"({"city":"Paris"})")
                      : OrderedJson::parse(R"({"city":"Paris","days":3})"));
    EXPECT_EQ(message["stop_reason"], cut_off ? "max_tokens" : "tool_use");
  }
}

}  // namespace
}  // namespace qwen::service

#include "inference/chat/chat_template.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/chat/jinja.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::chat {
namespace {

using Json = nlohmann::ordered_json;

std::string Qwen35Source() {
  return qwen::testing::ReadFile(qwen::testing::DataPath("chat/qwen3.5-chat-template.jinja"));
}

const ChatTemplate& Qwen35() {
  static const ChatTemplate* t = [] {
    auto r = ChatTemplate::FromSource(Qwen35Source());
    EXPECT_TRUE(r.ok()) << r.status();
    return r->release();
  }();
  return *t;
}

Json Cases() {
  return Json::parse(qwen::testing::ReadFile(qwen::testing::DataPath("chat/cases.json")));
}

// The request part of a fixture case: everything but its name and expectations.
Json RequestOf(const Json& c) {
  Json request = c;
  request.erase("name");
  request.erase("prompt");
  request.erase("error");
  return request;
}

TEST(ChatTemplateTest, FixtureCasesRenderByteForByte) {
  const Json cases = Cases();
  ASSERT_GE(cases.size(), 14u);
  for (const Json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto prompt = Qwen35().Render(RequestOf(c));
    if (c.contains("error")) {
      ASSERT_FALSE(prompt.ok());
      EXPECT_EQ(prompt.status().message(), c["error"].get<std::string>());
      EXPECT_TRUE(jinja::IsRaisedByTemplate(prompt.status()));
      EXPECT_EQ(prompt.status().code(), absl::StatusCode::kInvalidArgument);
    } else {
      ASSERT_TRUE(prompt.ok()) << prompt.status();
      EXPECT_EQ(*prompt, c["prompt"].get<std::string>());
    }
  }
}

TEST(ChatTemplateTest, TinyModelCarriesTheSameTemplate) {
  auto file = gguf::GgufFile::Open(qwen::testing::DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = ChatTemplate::FromGguf(**file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->source(), Qwen35Source());
  auto prompt = (*t)->Render(Json::parse(R"({"messages":[{"role":"user","content":"Hi"}]})"));
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST(ChatTemplateTest, VocabularyOnlyFileHasNoTemplate) {
  auto file = gguf::GgufFile::Open(qwen::testing::DataPath("tokenizer/qwen3-vocab-qwen35pre.gguf"));
  ASSERT_TRUE(file.ok());
  auto t = ChatTemplate::FromGguf(**file);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST(ChatTemplateTest, MoreConversations) {
  struct Case {
    const char* request;
    const char* prompt;
  };
  const Case cases[] = {
      // Thinking off and no generation prompt together.
      {R"({"messages":[{"role":"user","content":"a"}],"enable_thinking":false,
           "add_generation_prompt":false})",
       "<|im_start|>user\na<|im_end|>\n"},
      // Tool-call arguments: strings raw, others as JSON (non-ASCII kept, key order kept).
      {R"({"messages":[{"role":"user","content":"q"},
           {"role":"assistant","content":"","tool_calls":[{"function":{"name":"f",
            "arguments":{"s":"héllo","n":3,"x":1.5,"b":true,"z":null,"o":{"k":[1,"é"]}}}}]},
           {"role":"tool","content":"r"}],"add_generation_prompt":false})",
       "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
       "<tool_call>\n<function=f>\n<parameter=s>\nhéllo\n</parameter>\n<parameter=n>\n3\n"
       "</parameter>\n<parameter=x>\n1.5\n</parameter>\n<parameter=b>\nTrue\n</parameter>\n"
       "<parameter=z>\nNone\n</parameter>\n<parameter=o>\n{\"k\": [1, \"é\"]}\n</parameter>\n"
       "</function>\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nr\n"
       "</tool_response><|im_end|>\n"},
      // Videos and vision ids; a system message with list content.
      {R"({"messages":[{"role":"system","content":[{"type":"text","text":" S "}]},
           {"role":"user","content":[{"type":"video"},{"type":"image"},{"type":"text","text":"?"}]}],
           "add_vision_id":true})",
       "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nVideo 1: <|vision_start|>"
       "<|video_pad|><|vision_end|>Picture 1: <|vision_start|><|image_pad|><|vision_end|>?"
       "<|im_end|>\n<|im_start|>assistant\n<think>\n"},
  };
  for (const Case& c : cases) {
    auto prompt = Qwen35().Render(Json::parse(c.request));
    ASSERT_TRUE(prompt.ok()) << prompt.status() << "\n" << c.request;
    EXPECT_EQ(*prompt, c.prompt) << c.request;
  }
}

TEST(ChatTemplateTest, TemplateErrors) {
  struct Case {
    const char* request;
    const char* error;
  };
  const Case cases[] = {
      {R"({"messages":[]})", "No messages provided."},
      {R"({})", "No messages provided."},
      {R"({"messages":[{"role":"robot","content":"x"},{"role":"user","content":"y"}]})",
       "Unexpected message role."},
      {R"({"messages":[{"role":"user","content":42}]})", "Unexpected content type."},
      {R"({"messages":[{"role":"user","content":[{"type":"audio"}]}]})",
       "Unexpected item type in content."},
      {R"({"messages":[{"role":"system","content":[{"type":"image"}]},{"role":"user","content":"x"}]})",
       "System message cannot contain images."},
  };
  for (const Case& c : cases) {
    auto prompt = Qwen35().Render(Json::parse(c.request));
    ASSERT_FALSE(prompt.ok()) << c.request;
    EXPECT_EQ(prompt.status().message(), c.error) << c.request;
    EXPECT_TRUE(jinja::IsRaisedByTemplate(prompt.status()));
  }
  EXPECT_FALSE(Qwen35().Render(Json::array()).ok());
}

// An "Instruct" fine-tune: same format, thinking off unless asked for.
TEST(ChatTemplateTest, InstructVariantHonoursItsOwnDefault) {
  std::string source = Qwen35Source();
  const std::string from = "{%- if enable_thinking is defined and enable_thinking is false %}";
  const std::string to = "{%- if not (enable_thinking is defined and enable_thinking is true) %}";
  ASSERT_NE(source.find(from), std::string::npos);
  source.replace(source.find(from), from.size(), to);
  auto t = ChatTemplate::FromSource(source);
  ASSERT_TRUE(t.ok()) << t.status();
  auto off = (*t)->Render(Json::parse(R"({"messages":[{"role":"user","content":"Hi"}]})"));
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_FALSE(PromptOpensReasoning(*off));
  auto on = (*t)->Render(
      Json::parse(R"({"messages":[{"role":"user","content":"Hi"}],"enable_thinking":true})"));
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(PromptOpensReasoning(*on));
}

// A Qwen2.5-style template: tool calls as JSON objects inside <tool_call>.
TEST(ChatTemplateTest, Qwen25StyleTemplate) {
  const std::string source = R"({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)";
  auto t = ChatTemplate::FromSource(source);
  ASSERT_TRUE(t.ok()) << t.status();
  auto prompt = (*t)->Render(Json::parse(R"({"messages":[{"role":"user","content":"Hi"},
      {"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":{"a":"ü","b":[1,2]}}}]}],
      "tools":[{"name":"f"}]})"));
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.\n\n# Tools\n\n<tools>\n{\"name\": \"f\"}\n</tools><|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": "
            "\"f\", \"arguments\": {\"a\": \"ü\", \"b\": [1, 2]}}\n</tool_call><|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, UnsupportedJinjaIsAClearError) {
  auto t = ChatTemplate::FromSource("line one\n{% include 'other.jinja' %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("line 2"));
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("include"));
}

TEST(ChatTemplateTest, PromptOpensReasoning) {
  EXPECT_TRUE(PromptOpensReasoning("<|im_start|>assistant\n<think>\n"));
  EXPECT_FALSE(PromptOpensReasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(PromptOpensReasoning("<|im_start|>assistant\n"));
}

}  // namespace
}  // namespace qwen::chat

#include "inference/chat/output_parser.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/chat_fuzz_entry.h"

namespace qwen::chat {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

const Json& Tools() {
  static const Json* tools = new Json(Json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                     "unit": {"type": "string", "enum": ["c", "f"]}}}}},
    {"type": "function", "function": {"name": "all_types", "parameters": {"type": "object",
      "properties": {"s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"},
                     "b": {"type": "boolean"}, "z": {"type": "null"}, "o": {"type": "object"},
                     "a": {"type": "array"}, "maybe": {"type": ["integer", "null"]}}}}}
  ])"));
  return *tools;
}

OutputParserOptions WithTools(bool reasoning_open = true) {
  OutputParserOptions o;
  o.reasoning_open = reasoning_open;
  o.tools = Tools();
  return o;
}

OutputParserOptions NoThinking() {
  OutputParserOptions o;
  o.reasoning_open = false;
  return o;
}

// Parses `text` whole and byte by byte and checks both agree (the fuzz property too).
ParsedOutput ParseChecked(const std::string& text, const OutputParserOptions& options) {
  ParsedOutput whole = OutputParser::Parse(text, options);
  OutputParser stream(options);
  std::string reasoning, content;
  size_t calls = 0;
  for (char c : text) {
    ParserDelta d = stream.Add(std::string(1, c));
    reasoning += d.reasoning;
    content += d.content;
    calls += d.tool_calls.size();
  }
  ParserDelta d = stream.Finish();
  reasoning += d.reasoning;
  content += d.content;
  calls += d.tool_calls.size();
  EXPECT_EQ(reasoning, whole.reasoning) << text;
  EXPECT_EQ(content, whole.content) << text;
  EXPECT_EQ(calls, whole.tool_calls.size()) << text;
  EXPECT_EQ(stream.result().ToJson(), whole.ToJson()) << text;
  return whole;
}

TEST(OutputParserTest, ThinkingOn) {
  ParsedOutput r = ParseChecked("Let me think.\nOK.\n</think>\n\nThe answer is 4.", {});
  EXPECT_EQ(r.reasoning, "Let me think.\nOK.");
  EXPECT_EQ(r.content, "The answer is 4.");
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(OutputParserTest, ThinkingOnButNeverClosed) {
  ParsedOutput r = ParseChecked("still thinking <", {});
  EXPECT_EQ(r.reasoning, "still thinking <");
  EXPECT_EQ(r.content, "");
}

TEST(OutputParserTest, ThinkingOff) {
  ParsedOutput r = ParseChecked("Just the answer.\n", NoThinking());
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.content, "Just the answer.\n");
  // A model that opens its own <think> block anyway.
  r = ParseChecked("<think>\nhmm\n</think>\n\nAnswer", NoThinking());
  EXPECT_EQ(r.reasoning, "hmm");
  EXPECT_EQ(r.content, "Answer");
  // <think> only counts at the start.
  r = ParseChecked("A <think> B", NoThinking());
  EXPECT_EQ(r.content, "A <think> B");
}

TEST(OutputParserTest, SeveralToolCalls) {
  const std::string text =
      "Need weather.\n</think>\n\nLet me check.\n\n<tool_call>\n<function=get_weather>\n"
      "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n"
      "</tool_call>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSan Francisco, CA\n"
      "</parameter>\n<parameter=unit>\nc\n</parameter>\n</function>\n</tool_call>";
  ParsedOutput r = ParseChecked(text, WithTools());
  EXPECT_EQ(r.reasoning, "Need weather.");
  EXPECT_EQ(r.content, "Let me check.");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_TRUE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].arguments, Json::parse(R"({"city": "Paris", "days": 3})"));
  EXPECT_EQ(r.tool_calls[1].arguments, Json::parse(R"({"city": "San Francisco, CA", "unit": "c"})"));
  EXPECT_EQ(r.ToJson()["tool_calls"][0].dump(),
            R"({"name":"get_weather","arguments":{"city":"Paris","days":3}})");
}

TEST(OutputParserTest, ParameterTypesFollowTheSchema) {
  const std::string text =
      "<tool_call>\n<function=all_types>\n"
      "<parameter=s>\n  42 with spaces \n\n</parameter>\n"
      "<parameter=i>\n-7\n</parameter>\n"
      "<parameter=n>\n2.5e3\n</parameter>\n"
      "<parameter=b>\nTrue\n</parameter>\n"
      "<parameter=z>\nnull\n</parameter>\n"
      "<parameter=o>\n{\"nested\": {\"list\": [1, {\"deep\": \"ü\"}], \"t\": true}}\n</parameter>\n"
      "<parameter=a>\n[\"x\", 2, null]\n</parameter>\n"
      "<parameter=maybe>\nNone\n</parameter>\n"
      "<parameter=extra_json>\n{\"k\": 1}\n</parameter>\n"
      "<parameter=extra_text>\nnot json\n</parameter>\n"
      "</function>\n</tool_call>";
  ParsedOutput r = ParseChecked(text, WithTools(false));
  ASSERT_EQ(r.tool_calls.size(), 1u);
  const ToolCall& c = r.tool_calls[0];
  EXPECT_TRUE(c.valid) << c.error;
  EXPECT_EQ(c.arguments["s"], "  42 with spaces \n");  // one newline stripped each side
  EXPECT_EQ(c.arguments["i"], -7);
  EXPECT_TRUE(c.arguments["i"].is_number_integer());
  EXPECT_EQ(c.arguments["n"], 2500.0);
  EXPECT_EQ(c.arguments["b"], true);
  EXPECT_TRUE(c.arguments["z"].is_null());
  EXPECT_EQ(c.arguments["o"], Json::parse(R"({"nested": {"list": [1, {"deep": "ü"}], "t": true}})"));
  EXPECT_EQ(c.arguments["a"], Json::parse(R"(["x", 2, null])"));
  EXPECT_TRUE(c.arguments["maybe"].is_null());
  EXPECT_EQ(c.arguments["extra_json"], Json::parse(R"({"k": 1})"));
  EXPECT_EQ(c.arguments["extra_text"], "not json");
  EXPECT_EQ(r.content, "");
}

TEST(OutputParserTest, WithoutToolsAnyFunctionAndUntypedValues) {
  ParsedOutput r = ParseChecked(
      "<tool_call>\n<function=anything>\n<parameter=n>\n5\n</parameter>\n<parameter=s>\nhi\n"
      "</parameter>\n</function>\n</tool_call>",
      NoThinking());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_TRUE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].arguments, Json::parse(R"({"n": 5, "s": "hi"})"));
}

TEST(OutputParserTest, UnicodeEverywhere) {
  ParsedOutput r = ParseChecked(
      "思考中…🤔\n</think>\n\n天気を調べます。\n\n<tool_call>\n<function=get_weather>\n"
      "<parameter=city>\n東京 🗼\n</parameter>\n</function>\n</tool_call>",
      WithTools());
  EXPECT_EQ(r.reasoning, "思考中…🤔");
  EXPECT_EQ(r.content, "天気を調べます。");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments["city"], "東京 🗼");
}

TEST(OutputParserTest, PartialTagsAreHeldBack) {
  OutputParser p(NoThinking());
  EXPECT_EQ(p.Add("Hello <tool_").content, "Hello ");
  ParserDelta d = p.Add("call>\n<function=f>\n</function>\n</tool_call>");
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "f");

  OutputParser q(NoThinking());
  EXPECT_EQ(q.Add("a <tool").content, "a ");
  EXPECT_EQ(q.Add("box").content, "<toolbox");  // resolved: not a tag

  OutputParser t;
  EXPECT_EQ(t.Add("x</thi").reasoning, "x");
  EXPECT_EQ(t.Add("nk>y").content, "y");

  // A tag prefix at the very end is text after all.
  OutputParser u(NoThinking());
  EXPECT_EQ(u.Add("ends with <tool_").content, "ends with ");
  EXPECT_EQ(u.Finish().content, "<tool_");
  EXPECT_EQ(u.result().content, "ends with <tool_");
}

TEST(OutputParserTest, MalformedOutputIsKept) {
  // Unclosed block: an invalid call with everything in raw.
  ParsedOutput r = ParseChecked("Text\n<tool_call>\n<function=get_weather>\n<parameter=city>\nPar",
                                WithTools(false));
  EXPECT_EQ(r.content, "Text");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].raw, "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar");

  // Unknown function.
  r = ParseChecked("<tool_call>\n<function=launch>\n</function>\n</tool_call>", WithTools(false));
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].valid);
  EXPECT_THAT(r.tool_calls[0].error, HasSubstr("unknown function 'launch'"));
  EXPECT_EQ(r.tool_calls[0].name, "launch");

  // Invalid JSON for an object parameter.
  r = ParseChecked(
      "<tool_call>\n<function=all_types>\n<parameter=o>\n{broken\n</parameter>\n</function>\n"
      "</tool_call>",
      WithTools(false));
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].arguments["o"], "{broken");

  // No <function=...> at all; unclosed parameter.
  r = ParseChecked("<tool_call>\nhello\n</tool_call>", NoThinking());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].raw, "<tool_call>\nhello\n</tool_call>");
  r = ParseChecked("<tool_call>\n<function=f>\n<parameter=a>\n1\n</function>\n</tool_call>",
                   NoThinking());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls[0].valid);
  EXPECT_EQ(r.tool_calls[0].arguments["a"], 1);

  // Text after a tool call is still content.
  r = ParseChecked("<tool_call>\n<function=f>\n</function>\n</tool_call>\n\nafter", NoThinking());
  EXPECT_EQ(r.content, "after");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_TRUE(r.tool_calls[0].valid);

  // A stray closing tag in content is just text.
  r = ParseChecked("a </tool_call> b </think> c", NoThinking());
  EXPECT_EQ(r.content, "a </tool_call> b </think> c");
}

TEST(OutputParserTest, ChunkingNeverChangesTheResult) {
  const std::vector<std::string> texts = {
      "r\n</think>\n\nc\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nX\n"
      "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=nope>\n</function>\n"
      "</tool_call>tail\n\n",
      "<think></think><tool_call><tool_call></tool_call></tool_call>",
      "\n\n\n</think>\n\n\n<tool_call", "<<<tool_call>>>", "</think></think>\n<",
      "é\n\n\n</thinké</think>ü\n<tool_callü",
  };
  for (const std::string& t : texts) {
    for (char mode = 0; mode < 4; ++mode) {
      absl::Status s = CheckOutputParser(std::string(1, mode) + t);
      EXPECT_TRUE(s.ok()) << s << " mode " << int(mode) << " text " << t;
    }
  }
}

TEST(OutputParserTest, RandomTextNeverBreaksProperties) {
  const char* pieces[] = {"<tool_call>", "</tool_call>", "<function=f>", "<function=get_weather>",
                          "</function>", "<parameter=o>", "<parameter=i>", "</parameter>",
                          "<think>", "</think>", "\n", "\n\n", "{", "}", "[1]", "x", "ü", "<",
                          "</", "True", "3", " ", "\"s\""};
  uint32_t seed = 12345;
  for (int k = 0; k < 3000; ++k) {
    std::string text(1, static_cast<char>(k & 3));
    const int n = static_cast<int>(seed % 24);
    for (int j = 0; j < n; ++j) {
      seed = seed * 1103515245 + 12345;
      text += pieces[(seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];
    }
    seed = seed * 1103515245 + 12345;
    absl::Status s = CheckOutputParser(text);
    ASSERT_TRUE(s.ok()) << s << " " << nlohmann::json(text.substr(1)).dump();
  }
}

}  // namespace
}  // namespace qwen::chat

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
  EXPECT_EQ(r.tool_calls[1].arguments,
            Json::parse(R"({"city": "San Francisco, CA", "unit": "c"})"));
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
  EXPECT_EQ(c.arguments["o"],
            Json::parse(R"({"nested": {"list": [1, {"deep": "ü"}], "t": true}})"));
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
      "思考中…🤔\n</"
      "think>\n\n天気を調べます。\n\n<tool_call>\n<function=get_weather>\n"
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
      "\n\n\n</think>\n\n\n<tool_call",
      "<<<tool_call>>>",
      "</think></think>\n<",
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
  const char* pieces[] = {"<tool_call>",
                          "</tool_call>",
                          "<function=f>",
                          "<function=get_weather>",
                          "</function>",
                          "<parameter=o>",
                          "<parameter=i>",
                          "</parameter>",
                          "<think>",
                          "</think>",
                          "\n",
                          "\n\n",
                          "{",
                          "}",
                          "[1]",
                          "x",
                          "ü",
                          "<",
                          "</",
                          "True",
                          "3",
                          " ",
                          "\"s\"",
                          "<parameter=s>",
                          "<function=zz>"};
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

// The deltas of every call of `text` fed in pieces of `step` bytes: per call index, its name
// (from the first delta) and the concatenated fragments.
struct Streamed {
  std::vector<std::string> names;
  std::vector<std::string> arguments;
  std::vector<std::vector<std::string>> fragments;
};
Streamed StreamCalls(const std::string& text, const OutputParserOptions& options, size_t step,
                     std::vector<ToolCall>* calls = nullptr) {
  Streamed s;
  OutputParser p(options);
  auto take = [&](const ParserDelta& d) {
    for (const ToolCallDelta& t : d.tool_call_deltas) {
      if (static_cast<size_t>(t.index) >= s.names.size()) {
        s.names.resize(t.index + 1);
        s.arguments.resize(t.index + 1);
        s.fragments.resize(t.index + 1);
      }
      if (!t.name.empty()) s.names[t.index] = t.name;
      s.arguments[t.index] += t.arguments;
      s.fragments[t.index].push_back(t.arguments);
    }
  };
  for (size_t pos = 0; pos < text.size(); pos += step) take(p.Add(text.substr(pos, step)));
  take(p.Finish());
  if (calls != nullptr) *calls = p.result().tool_calls;
  return s;
}

TEST(OutputParserTest, ToolCallsStreamAsTheyAreWritten) {
  const std::string head = "Checking.\n<tool_call>\n<function=get_weather>";
  const std::string text = head +
                           "\n<parameter=city>\nSan Francisco, \"CA\"\n</parameter>\n"
                           "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n"
                           "<tool_call>\n<function=all_types>\n</function>\n</tool_call>";
  OutputParser p(WithTools(false));
  // The call starts as soon as its function is named, before any argument.
  ParserDelta d = p.Add(head);
  ASSERT_EQ(d.tool_call_deltas.size(), 1u);
  EXPECT_EQ(d.tool_call_deltas[0].index, 0);
  EXPECT_EQ(d.tool_call_deltas[0].name, "get_weather");
  EXPECT_EQ(d.tool_call_deltas[0].arguments, "");
  EXPECT_TRUE(d.tool_calls.empty());
  // A parameter streams when its </parameter> closes, not before.
  d = p.Add("\n<parameter=city>\nSan Francisco, \"CA\"\n</parameter");
  EXPECT_TRUE(d.tool_call_deltas.empty());
  d = p.Add(">");
  ASSERT_EQ(d.tool_call_deltas.size(), 1u);
  EXPECT_EQ(d.tool_call_deltas[0].arguments, R"({"city":"San Francisco, \"CA\"")");

  std::vector<ToolCall> calls;
  const Streamed s = StreamCalls(text, WithTools(false), 1, &calls);
  ASSERT_EQ(calls.size(), 2u);
  ASSERT_EQ(s.names.size(), 2u);
  EXPECT_EQ(s.names[0], "get_weather");
  EXPECT_EQ(s.fragments[0], (std::vector<std::string>{"", R"({"city":"San Francisco, \"CA\"")",
                                                      R"(,"days":3)", "}"}));
  EXPECT_EQ(s.arguments[0], R"({"city":"San Francisco, \"CA\"","days":3})");
  EXPECT_EQ(s.arguments[0], calls[0].arguments_text);
  EXPECT_EQ(calls[0].arguments_text, calls[0].arguments.dump());
  EXPECT_TRUE(calls[0].valid && calls[0].streamed);
  // Without parameters: "{}" when </function> closes.
  EXPECT_EQ(s.names[1], "all_types");
  EXPECT_EQ(s.fragments[1], (std::vector<std::string>{"", "{}"}));
  EXPECT_EQ(calls[1].arguments_text, "{}");
}

TEST(OutputParserTest, AnyChunkingStreamsTheSameArguments) {
  const std::string text =
      "<tool_call>\n<function=all_types>\n<parameter=s>\n a <b> </para c \n</parameter>\n"
      "<parameter=o>\n{\"k\": [1, 2]}\n</parameter>\n<parameter=b>\nFalse\n</parameter>\n"
      "<parameter=n>\n1.5\n</parameter>\n</function>\n</tool_call>";
  std::vector<ToolCall> calls;
  const Streamed whole = StreamCalls(text, WithTools(false), text.size(), &calls);
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_TRUE(calls[0].valid) << calls[0].error;
  EXPECT_EQ(whole.arguments[0], calls[0].arguments_text);
  EXPECT_EQ(whole.arguments[0], calls[0].arguments.dump());
  for (size_t step = 1; step < text.size(); ++step) {
    const Streamed s = StreamCalls(text, WithTools(false), step);
    ASSERT_EQ(s.arguments.size(), 1u) << step;
    EXPECT_EQ(s.arguments[0], whole.arguments[0]) << step;
    EXPECT_EQ(s.names[0], "all_types") << step;
  }
  // Every split into three pieces, too.
  for (size_t a = 1; a < text.size(); a += 3) {
    for (size_t b = a; b < text.size(); b += 5) {
      OutputParser p(WithTools(false));
      std::string args;
      for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)}) {
        for (const ToolCallDelta& t : p.Add(piece).tool_call_deltas) args += t.arguments;
      }
      for (const ToolCallDelta& t : p.Finish().tool_call_deltas) args += t.arguments;
      EXPECT_EQ(args, whole.arguments[0]) << a << " " << b;
    }
  }
}

TEST(OutputParserTest, CallsThatGoWrongAfterTheyStarted) {
  // Cut off (max_tokens): what was streamed stays, without a closing brace; the call is invalid.
  std::vector<ToolCall> calls;
  Streamed s = StreamCalls(
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "<parameter=days>\n1",
      WithTools(false), 1, &calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_FALSE(calls[0].valid);
  EXPECT_TRUE(calls[0].streamed);
  EXPECT_EQ(calls[0].error, "unclosed <parameter=days>");
  EXPECT_EQ(s.arguments[0], R"({"city":"Paris")");
  EXPECT_EQ(calls[0].arguments_text, s.arguments[0]);
  EXPECT_EQ(calls[0].arguments["days"], 1);  // what could be read, for gRPC clients

  // A value that does not fit its schema: nothing more streams after the last good parameter.
  s = StreamCalls(
      "<tool_call>\n<function=all_types>\n<parameter=i>\n1\n</parameter>\n<parameter=o>\n"
      "{bad\n</parameter>\n<parameter=s>\nx\n</parameter>\n</function>\n</tool_call>",
      WithTools(false), 2, &calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_FALSE(calls[0].valid);
  EXPECT_THAT(calls[0].error, HasSubstr("parameter 'o'"));
  EXPECT_EQ(s.arguments[0], R"({"i":1)");
  EXPECT_EQ(calls[0].arguments_text, s.arguments[0]);

  // An unknown function never starts.
  s = StreamCalls(
      "<tool_call>\n<function=launch>\n<parameter=x>\n1\n</parameter>\n</function>\n"
      "</tool_call>",
      WithTools(false), 1, &calls);
  EXPECT_TRUE(s.names.empty());
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_FALSE(calls[0].streamed);
  EXPECT_EQ(calls[0].arguments_text, R"({"x":1})");

  // A key given twice keeps its first value, in the stream and in the call.
  s = StreamCalls(
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "<parameter=city>\nLyon\n</parameter>\n</function>\n</tool_call>",
      WithTools(false), 3, &calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_TRUE(calls[0].valid);
  EXPECT_EQ(s.arguments[0], R"({"city":"Paris"})");
  EXPECT_EQ(calls[0].arguments_text, s.arguments[0]);
  EXPECT_EQ(calls[0].arguments, Json::parse(R"({"city": "Paris"})"));
}

TEST(OutputParserTest, MaxToolCallsEndsTheOutputAfterTheFirstCall) {
  OutputParserOptions o = WithTools(false);
  o.max_tool_calls = 1;
  const std::string call =
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "</function>\n</tool_call>";
  // An invalid call that never started does not count.
  const std::string text =
      "<tool_call>\n<function=nope>\n</function>\n</tool_call>\n" + call + "\nmore text\n" + call;
  for (size_t step : {size_t{1}, size_t{7}, text.size()}) {
    OutputParser p(o);
    size_t pos = 0;
    for (; pos < text.size() && !p.done(); pos += step) p.Add(text.substr(pos, step));
    p.Finish();
    EXPECT_TRUE(p.done()) << step;
    ASSERT_EQ(p.result().tool_calls.size(), 2u) << step;
    EXPECT_FALSE(p.result().tool_calls[0].valid);
    EXPECT_TRUE(p.result().tool_calls[1].valid);
    EXPECT_EQ(p.result().content, "") << step;
    // Whatever comes after is ignored.
    EXPECT_TRUE(p.Add(call).empty());
  }
}

}  // namespace
}  // namespace qwen::chat

// `qwen client` without a server: its command line and its terminal output.
#include <string>
#include <vector>

#include "cli/client_flags.h"
#include "cli/client_render.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qwen::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<ClientOptions> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "qwen client");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseClientFlags(static_cast<int>(argv.size()), argv.data());
}

TEST(ClientFlagsTest, BothSpellingsAndBothValueForms) {
  absl::StatusOr<ClientOptions> o =
      Parse({"--server", "h:1", "--max-tokens=12", "--no-thinking", "--chat", "--temperature", "0",
             "--stop", "a", "--stop=b", "--reasoning=hide", "--metadata", "X-Request-Id=r1",
             "--timeout=30s", "--tls_ca", "ca.pem"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->server, "h:1");
  EXPECT_EQ(o->max_tokens, 12);
  EXPECT_TRUE(o->no_thinking);
  EXPECT_TRUE(o->chat);
  EXPECT_EQ(o->temperature, 0.0);
  EXPECT_FALSE(o->top_p.has_value());  // not given: not sent
  EXPECT_EQ(o->stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(o->reasoning, ReasoningMode::kHide);
  ASSERT_EQ(o->metadata.size(), 1u);
  EXPECT_EQ(o->metadata[0].first, "x-request-id");
  EXPECT_EQ(o->metadata[0].second, "r1");
  EXPECT_EQ(o->timeout, absl::Seconds(30));
  EXPECT_EQ(o->tls_ca, "ca.pem");
}

TEST(ClientFlagsTest, Errors) {
  EXPECT_THAT(std::string(Parse({"--bogus"}).status().message()),
              HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(std::string(Parse({"--max_tokens", "x"}).status().message()),
              HasSubstr("--max_tokens"));
  EXPECT_THAT(std::string(Parse({"--reasoning=loud"}).status().message()),
              HasSubstr("show, dim or hide"));
  EXPECT_THAT(std::string(Parse({"--prompt"}).status().message()), HasSubstr("needs a value"));
  EXPECT_THAT(std::string(Parse({"hello"}).status().message()), HasSubstr("unexpected argument"));
  EXPECT_TRUE(Parse({"--help"})->help);
  EXPECT_THAT(ClientUsage(), HasSubstr("--auth_token_file FILE"));
}

v1::GenerateResponse Msg(const std::string& reasoning, const std::string& text) {
  v1::GenerateResponse m;
  m.set_reasoning(reasoning);
  m.set_text(text);
  return m;
}

std::string Render(ReasoningMode mode, bool color, const std::vector<v1::GenerateResponse>& ms) {
  std::string out;
  StreamPrinter p([&out](absl::string_view s) { out.append(s.data(), s.size()); }, mode, color);
  for (const auto& m : ms) p.Add(m);
  p.Finish();
  return out;
}

TEST(StreamPrinterTest, ReasoningShownDimmedOrHidden) {
  const std::vector<v1::GenerateResponse> ms = {Msg("I think", ""), Msg(" hard.", ""),
                                                Msg("", "Hello"), Msg("", " there!")};
  EXPECT_EQ(Render(ReasoningMode::kShow, false, ms), "I think hard.\n\nHello there!\n");
  EXPECT_EQ(Render(ReasoningMode::kDim, false, ms), "I think hard.\n\nHello there!\n");
  EXPECT_EQ(Render(ReasoningMode::kDim, true, ms), "\x1b[2mI think hard.\x1b[0m\n\nHello there!\n");
  EXPECT_EQ(Render(ReasoningMode::kHide, true, ms), "Hello there!\n");
}

TEST(StreamPrinterTest, ToolCallsArePrettyPrintedAndGathered) {
  v1::GenerateResponse m;
  v1::ToolCall* c = m.add_tool_calls();
  c->set_id("call_1");
  c->set_name("get_weather");
  c->set_arguments(R"({"city": "Paris", "days": 3})");
  std::string out;
  StreamPrinter p([&out](absl::string_view s) { out.append(s.data(), s.size()); },
                  ReasoningMode::kShow, false);
  p.Add(Msg("", "Let me check."));
  p.Add(m);
  p.Finish();
  EXPECT_EQ(out,
            "Let me check.\n[tool call] get_weather (call_1)\n    {\n      \"city\": \"Paris\",\n"
            "      \"days\": 3\n    }\n");
  ASSERT_EQ(p.tool_calls().size(), 1u);
  EXPECT_EQ(p.text(), "Let me check.");
}

TEST(StreamPrinterTest, InvalidToolCallShowsTheError) {
  v1::ToolCall c;
  c.set_name("nope");
  c.set_error("unknown function");
  c.set_raw("<tool_call>\n<function=nope>");
  EXPECT_EQ(FormatToolCall(c, false),
            "[invalid tool call] nope: unknown function\n    <tool_call>\n    <function=nope>\n");
}

TEST(StreamPrinterTest, CompletionLine) {
  v1::Completion c;
  c.set_finish_reason(v1::FINISH_REASON_STOP_SEQUENCE);
  c.set_stop_sequence("END");
  c.set_seed(7);
  c.mutable_usage()->set_prompt_tokens(12);
  c.mutable_usage()->set_generated_tokens(30);
  c.mutable_usage()->set_cached_tokens(4);
  c.mutable_timings()->set_queue_wait_ms(2.6);
  c.mutable_timings()->set_time_to_first_token_ms(120);
  c.mutable_timings()->set_tokens_per_second(25.14);
  c.mutable_timings()->set_total_ms(1320);
  EXPECT_EQ(FormatCompletion(c),
            "finish: stop_sequence \"END\" | tokens: 12 prompt (4 cached) + 30 generated | queue "
            "3 ms, first token 120 ms, 25.1 tokens/s, total 1.32 s | seed 7");
  c.mutable_usage()->set_generated_tokens(0);
  EXPECT_THAT(FormatCompletion(c), Not(HasSubstr("first token")));
}

}  // namespace
}  // namespace qwen::cli

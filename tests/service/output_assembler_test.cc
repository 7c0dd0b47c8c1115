// The text pipeline of a stream: tokens -> UTF-8-safe text -> stop strings -> chat parsing.
#include "service/output_assembler.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::service {
namespace {

namespace wpb = ::qwen::worker::v1;

constexpr int32_t kImEnd = 1000;

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

class OutputAssemblerTest : public ::testing::Test {
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
  void SetUp() override {
    prepared_.request_id = "t";
    prepared_.prompt_tokens = 3;
    prepared_.seed = 5;
    prepared_.stop_ids = {998, kImEnd};
  }
  std::vector<int32_t> Ids(const std::string& text) {
    return model_->tokenizer().Encode(text, /*parse_special=*/true);
  }
  static wpb::Token Tok(int32_t id) {
    wpb::Token t;
    t.set_id(id);
    return t;
  }
  // Feeds the tokens one per message; returns the messages (empty ones included) and whether a
  // stop string matched.
  std::vector<v1::GenerateResponse> Feed(OutputAssembler& a, const std::vector<int32_t>& ids,
                                         bool* stopped = nullptr) {
    std::vector<v1::GenerateResponse> out;
    for (int32_t id : ids) {
      v1::GenerateResponse m;
      const bool s = a.AddToken(Tok(id), absl::Now(), &m);
      out.push_back(m);
      if (s) {
        if (stopped != nullptr) *stopped = true;
        break;
      }
    }
    return out;
  }
  static std::string Text(const std::vector<v1::GenerateResponse>& ms) {
    std::string t;
    for (const auto& m : ms) t += m.text();
    return t;
  }
  static wpb::Finish FinishWith(wpb::Finish::Reason reason, int32_t stop_token = -1) {
    wpb::Finish f;
    f.set_reason(reason);
    f.set_stop_token(stop_token);
    f.set_cached_tokens(2);
    return f;
  }

  static TextModel* model_;
  PreparedGenerate prepared_;
};

TextModel* OutputAssemblerTest::model_ = nullptr;

TEST_F(OutputAssemblerTest, PlainTextAndALengthFinish) {
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  const std::vector<int32_t> ids = Ids("Hello world, how are you?");
  std::vector<v1::GenerateResponse> ms = Feed(a, ids);
  v1::GenerateResponse last;
  ASSERT_TRUE(a.Finish(FinishWith(wpb::Finish::REASON_LENGTH), absl::Now(), &last).ok());
  EXPECT_EQ(Text(ms) + last.text(), "Hello world, how are you?");
  ASSERT_TRUE(last.has_completion());
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.completion().usage().prompt_tokens(), 3u);
  EXPECT_EQ(last.completion().usage().generated_tokens(), ids.size());
  EXPECT_EQ(last.completion().usage().cached_tokens(), 2u);
  EXPECT_EQ(last.completion().seed(), 5u);
}

TEST_F(OutputAssemblerTest, MultibyteCharactersSplitAcrossTokensAreNeverSplitInText) {
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  const std::string text = "naïve café 日本語 🙂!";
  const std::vector<int32_t> ids = Ids(text);
  ASSERT_GT(ids.size(), 10u);
  std::vector<v1::GenerateResponse> ms = Feed(a, ids);
  int empty = 0;
  for (const auto& m : ms) {
    EXPECT_TRUE(ValidUtf8(m.text())) << m.text();
    empty += m.text().empty();
  }
  EXPECT_GT(empty, 0);  // some tokens were partial characters, held back
  v1::GenerateResponse last;
  ASSERT_TRUE(a.Finish(FinishWith(wpb::Finish::REASON_LENGTH), absl::Now(), &last).ok());
  EXPECT_EQ(Text(ms) + last.text(), text);
}

TEST_F(OutputAssemblerTest, EndOfGenerationTokenIsCountedButNotShown) {
  prepared_.return_token_ids = true;
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  std::vector<int32_t> ids = Ids("Done.");
  ids.push_back(kImEnd);
  std::vector<v1::GenerateResponse> ms = Feed(a, ids);
  v1::GenerateResponse last;
  ASSERT_TRUE(
      a.Finish(FinishWith(wpb::Finish::REASON_STOP_TOKEN, kImEnd), absl::Now(), &last).ok());
  EXPECT_EQ(Text(ms) + last.text(), "Done.");
  EXPECT_EQ(ms.back().token_ids(0), kImEnd);
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_EQ(last.completion().stop_token_id(), kImEnd);
  EXPECT_EQ(last.completion().usage().generated_tokens(), ids.size());
}

TEST_F(OutputAssemblerTest, ClientStopTokenIsStopToken) {
  const int32_t stop = Ids("x")[0];
  prepared_.client_stop_ids = {stop};
  prepared_.stop_ids.insert(stop);
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  std::vector<v1::GenerateResponse> ms = Feed(a, {Ids("ab")[0], stop});
  v1::GenerateResponse last;
  ASSERT_TRUE(a.Finish(FinishWith(wpb::Finish::REASON_STOP_TOKEN, stop), absl::Now(), &last).ok());
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(Text(ms).find('x'), std::string::npos);
}

TEST_F(OutputAssemblerTest, StopStringAcrossTokensStopsAndIsNotSent) {
  prepared_.stop = {"lo wor"};
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  bool stopped = false;
  std::vector<v1::GenerateResponse> ms = Feed(a, Ids("Hello world and more"), &stopped);
  ASSERT_TRUE(stopped);
  v1::GenerateResponse last;
  a.FinishOnStop(absl::Now(), &last);
  EXPECT_EQ(Text(ms) + last.text(), "Hel");
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(last.completion().stop_sequence(), "lo wor");
}

TEST_F(OutputAssemblerTest, ChatOutputIsSplitIntoReasoningContentAndToolCalls) {
  prepared_.parse_output = true;
  prepared_.parser_options.reasoning_open = true;
  prepared_.parser_options.tools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "get_weather", "parameters":
           {"type": "object", "properties": {"city": {"type": "string"},
                                             "days": {"type": "integer"}}}}}])");
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  std::vector<int32_t> ids =
      Ids("Let me check.\n</think>\n\nChecking now.\n\n<tool_call>\n<function=get_weather>\n"
          "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n"
          "</tool_call>");
  ids.push_back(kImEnd);
  std::vector<v1::GenerateResponse> ms = Feed(a, ids);
  v1::GenerateResponse last;
  ASSERT_TRUE(
      a.Finish(FinishWith(wpb::Finish::REASON_STOP_TOKEN, kImEnd), absl::Now(), &last).ok());
  ms.push_back(last);
  std::string reasoning, content, streamed;
  std::vector<v1::ToolCall> calls;
  std::vector<v1::ToolCallDelta> deltas;
  int messages_with_deltas = 0;
  for (const auto& m : ms) {
    reasoning += m.reasoning();
    content += m.text();
    for (const auto& d : m.tool_call_deltas()) {
      // Every delta comes before the message that completes the call.
      EXPECT_TRUE(calls.empty());
      deltas.push_back(d);
      streamed += d.arguments();
    }
    if (m.tool_call_deltas_size() > 0) ++messages_with_deltas;
    for (const auto& c : m.tool_calls()) calls.push_back(c);
  }
  EXPECT_EQ(reasoning, "Let me check.");
  EXPECT_EQ(content, "Checking now.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].name(), "get_weather");
  EXPECT_EQ(calls[0].id(), "call_t_0");
  EXPECT_EQ(calls[0].arguments(), R"({"city":"Paris","days":2})");
  // Streamed as it was written: a start with the id and name, then one fragment per
  // parameter and the closing brace, in separate messages; together the whole arguments.
  ASSERT_EQ(deltas.size(), 4u);
  EXPECT_EQ(deltas[0].id(), "call_t_0");
  EXPECT_EQ(deltas[0].name(), "get_weather");
  EXPECT_EQ(deltas[0].arguments(), "");
  for (const auto& d : deltas) EXPECT_EQ(d.index(), 0u);
  EXPECT_EQ(deltas[1].id(), "");
  EXPECT_EQ(deltas[1].arguments(), R"({"city":"Paris")");
  EXPECT_EQ(messages_with_deltas, 4);
  EXPECT_EQ(streamed, calls[0].arguments());
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
}

// stopping.max_tool_calls 1 (parallel_tool_calls false): generation ends as soon as the first
// call is complete, with FINISH_REASON_TOOL_CALLS; nothing after it is sent.
TEST_F(OutputAssemblerTest, MaxToolCallsEndsGenerationAfterTheLastCall) {
  prepared_.parse_output = true;
  prepared_.parser_options.reasoning_open = false;
  prepared_.parser_options.max_tool_calls = 1;
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  const std::string call =
      "<tool_call>\n<function=f>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call>";
  const std::vector<int32_t> first = Ids("Sure.\n" + call);
  std::vector<int32_t> ids = first;
  for (int32_t id : Ids("\nMore text.\n" + call)) ids.push_back(id);
  bool stopped = false;
  std::vector<v1::GenerateResponse> ms = Feed(a, ids, &stopped);
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(a.stopped());
  EXPECT_EQ(ms.size(), first.size());  // stopped at the token that closed the call
  v1::GenerateResponse last;
  a.FinishOnStop(absl::Now(), &last);
  ms.push_back(last);
  int calls = 0;
  for (const auto& m : ms) calls += m.tool_calls_size();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Text(ms), "Sure.");
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(last.completion().usage().generated_tokens(), first.size());
  EXPECT_EQ(last.completion().stop_sequence(), "");
}

TEST_F(OutputAssemblerTest, AnUnfinishedToolCallIsReportedAsInvalid) {
  prepared_.parse_output = true;
  prepared_.parser_options.reasoning_open = false;
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  std::vector<v1::GenerateResponse> ms = Feed(a, Ids("<tool_call>\n<function=f>\n<parameter=x"));
  v1::GenerateResponse last;
  ASSERT_TRUE(a.Finish(FinishWith(wpb::Finish::REASON_LENGTH), absl::Now(), &last).ok());
  ASSERT_EQ(last.tool_calls_size(), 1);
  EXPECT_FALSE(last.tool_calls(0).error().empty());
  EXPECT_FALSE(last.tool_calls(0).raw().empty());
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(OutputAssemblerTest, LogprobsCarryTextBytesAndTheRequestedAlternatives) {
  prepared_.logprobs = true;
  prepared_.top_logprobs = 2;
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  const int32_t id = Ids("Hello")[0];
  wpb::Token t = Tok(id);
  t.set_has_logprob(true);
  t.set_logprob(-0.5f);
  for (int k = 0; k < 3; ++k) {
    t.add_top_ids(id + k);
    t.add_top_logprobs(-0.5f - k);
  }
  v1::GenerateResponse m;
  a.AddToken(t, absl::Now(), &m);
  ASSERT_EQ(m.logprobs_size(), 1);
  EXPECT_EQ(m.logprobs(0).token_id(), id);
  EXPECT_FLOAT_EQ(m.logprobs(0).logprob(), -0.5f);
  EXPECT_EQ(m.logprobs(0).token_bytes(), std::string(model_->tokenizer().TokenBytes(id)));
  EXPECT_EQ(m.logprobs(0).top_logprobs_size(), 2);
}

TEST_F(OutputAssemblerTest, WorkerErrorIsInternal) {
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  wpb::Finish f = FinishWith(wpb::Finish::REASON_ERROR);
  f.set_error("boom");
  v1::GenerateResponse last;
  absl::Status s = a.Finish(f, absl::Now(), &last);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("boom"));
}

TEST_F(OutputAssemblerTest, CancelledByTheServerSaysCancelled) {
  OutputAssembler a(prepared_, model_->tokenizer(), absl::Now());
  Feed(a, Ids("some text"));
  v1::GenerateResponse last;
  a.FinishCancelled(absl::Now(), &last);
  EXPECT_EQ(last.completion().finish_reason(), v1::FINISH_REASON_CANCELLED);
}

}  // namespace
}  // namespace qwen::service

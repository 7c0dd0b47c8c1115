// The render and parse subcommands, run as a user would.
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace {

using Result = qwen::testing::CommandResult;

// Runs `qwen ARGS < input_file` with stderr merged into stdout when `merge_stderr`.
Result RunQwen(const std::string& args, const std::string& input, bool merge_stderr = false) {
  const std::string in_path = ::testing::TempDir() + "/qwen_cli_input.txt";
  {
    FILE* f = std::fopen(in_path.c_str(), "wb");
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
  }
  const std::string cmd = qwen::testing::BinPath("qwen") + " " + args + " < " + in_path +
                          (merge_stderr ? " 2>&1" : " 2>/dev/null");
  return qwen::testing::RunCommand(cmd);
}

const std::string kModel = "--model " + qwen::testing::DataPath("models/tiny-qwen35-q3_k_m.gguf");

TEST(CliTest, RenderPrintsThePromptExactly) {
  Result r = RunQwen("render " + kModel, R"({"messages":[{"role":"user","content":"Hello!"}]})");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST(CliTest, RenderInvalidConversationExitsTwoWithTheTemplateMessage) {
  Result r = RunQwen("render " + kModel, R"({"messages":[{"role":"system","content":"x"}]})", true);
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, "No user query found in messages.\n");
}

TEST(CliTest, Parse) {
  Result r = RunQwen("parse --no-thinking",
                 "Hi\n\n<tool_call>\n<function=f>\n<parameter=n>\n3\n</parameter>\n</function>\n"
                 "</tool_call>");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(nlohmann::ordered_json::parse(r.out),
            nlohmann::ordered_json::parse(
                R"({"reasoning":"","content":"Hi","tool_calls":[{"name":"f","arguments":{"n":3}}]})"));
}

TEST(CliTest, TokenizeAndDetokenize) {
  Result t = RunQwen("tokenize --json " + kModel + " --text 'The quick brown fox'", "");
  ASSERT_EQ(t.status, 0);
  const auto ids = nlohmann::json::parse(t.out)["ids"];
  EXPECT_EQ(ids, nlohmann::json::parse("[763,32,409,309,107,287,302,119,110,280,111,120]"));
  Result d = RunQwen("detokenize " + kModel + " --tokens " + ids.dump(), "");
  EXPECT_EQ(d.status, 0);
  EXPECT_EQ(d.out, "The quick brown fox\n");
  EXPECT_EQ(RunQwen("detokenize " + kModel + " --tokens 5000000", "").status, 2);
}

}  // namespace

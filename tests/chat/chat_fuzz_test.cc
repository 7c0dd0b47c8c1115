// Deterministic stand-ins for the fuzz targets: mutated requests and templates must never crash,
// hang or produce an INTERNAL error.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"
#include "tests/fuzz/chat_fuzz_entry.h"

namespace qwen::chat {
namespace {

using Json = nlohmann::ordered_json;

// A random JSON value of bounded size, biased towards what chat requests contain.
Json RandomJson(std::mt19937& rng, int depth) {
  static const char* const strings[] = {"user", "assistant", "system", "tool", "image", "video",
                                        "text", "<think>x</think>y", "", "é🦙", "</tool_response>"};
  static const char* const keys[] = {"role", "content", "type", "text", "image", "video",
                                     "tool_calls", "function", "name", "arguments",
                                     "reasoning_content", "messages", "tools"};
  const int kind = static_cast<int>(rng() % (depth > 3 ? 6 : 8));
  switch (kind) {
    case 0: return nullptr;
    case 1: return static_cast<bool>(rng() & 1);
    case 2: return static_cast<int64_t>(rng() % 100) - 50;
    case 3: return (rng() % 1000) / 7.0;
    case 4:
    case 5: return strings[rng() % std::size(strings)];
    case 6: {
      Json a = Json::array();
      for (int n = rng() % 4; n > 0; --n) a.push_back(RandomJson(rng, depth + 1));
      return a;
    }
    default: {
      Json o = Json::object();
      for (int n = rng() % 5; n > 0; --n) o[keys[rng() % std::size(keys)]] = RandomJson(rng, depth + 1);
      return o;
    }
  }
}

TEST(ChatFuzzTest, RandomRequestsNeverCrash) {
  const std::string source =
      qwen::testing::ReadFile(qwen::testing::DataPath("chat/qwen3.5-chat-template.jinja"));
  const Json cases = Json::parse(qwen::testing::ReadFile(qwen::testing::DataPath("chat/cases.json")));
  std::mt19937 rng(42);
  int rendered = 0;
  for (int k = 0; k < 800; ++k) {
    Json request = cases[k % cases.size()];
    // Replace a random part of the request with random data.
    Json& messages = request["messages"];
    if (messages.is_array() && !messages.empty() && k % 3 != 0) {
      Json& m = messages[rng() % messages.size()];
      m[k % 2 ? "content" : "role"] = RandomJson(rng, 1);
    } else {
      request[rng() % 2 ? "messages" : "tools"] = RandomJson(rng, 0);
    }
    auto r = RenderChatForFuzzing(source, request.dump());
    ASSERT_NE(r.status().code(), absl::StatusCode::kInternal) << r.status();
    rendered += r.ok();
  }
  EXPECT_GT(rendered, 50);
  EXPECT_FALSE(RenderChatForFuzzing(source, "{not json").ok());
}

TEST(ChatFuzzTest, MutatedTemplatesNeverCrash) {
  const std::string source =
      qwen::testing::ReadFile(qwen::testing::DataPath("chat/qwen3.5-chat-template.jinja"));
  const std::string request = R"({"messages":[{"role":"user","content":"Hi"}],"tools":[{"a":1}]})";
  std::mt19937 rng(7);
  const char* const inserts[] = {"{{", "}}", "{%", "%}", "-", "(", ")", "[", "]", "'", "\"",
                                 " if ", " for ", " endfor ", "|", ".", " is ", "~", "{#", "#}"};
  for (int k = 0; k < 800; ++k) {
    std::string t = source;
    for (int m = 0; m < 3; ++m) {
      const size_t at = rng() % (t.size() + 1);
      if (rng() % 2) {
        t.insert(at, inserts[rng() % std::size(inserts)]);
      } else {
        t.erase(at, rng() % 8);
      }
    }
    auto r = RenderChatForFuzzing(t, request);
    ASSERT_NE(r.status().code(), absl::StatusCode::kInternal) << r.status();
  }
}

}  // namespace
}  // namespace qwen::chat

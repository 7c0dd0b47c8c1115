#include "inference/tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace qwen::tokenizer {
namespace {

TEST(Utf8Test, ValidTextUnchanged) {
  const std::string text = "héllo 世界 🦙";
  EXPECT_TRUE(IsValidUtf8(text));
  EXPECT_EQ(ToValidUtf8(text), text);
}

TEST(Utf8Test, MaximalSubpartsBecomeOneReplacementEach) {
  // Truncated 3-byte sequence (E2 82) then 'A': one U+FFFD for both bytes.
  EXPECT_EQ(ToValidUtf8("\xE2\x82" "A"), "\xEF\xBF\xBD" "A");
  // Lone continuation bytes: one each.
  EXPECT_EQ(ToValidUtf8("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  // Overlong and surrogate forms are ill-formed from the lead byte on.
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\xA6"));
}

TEST(Utf8Test, IncrementalHoldsBackTruncatedTail) {
  std::string out;
  const std::string llama = "\xF0\x9F\xA6\x99";
  std::string input = "a";
  input.append(llama, 0, 2);
  EXPECT_EQ(AppendUtf8Lossy(input, /*final=*/false, &out), 1u);
  EXPECT_EQ(out, "a");
  out.clear();
  EXPECT_EQ(AppendUtf8Lossy(llama.substr(0, 2), /*final=*/true, &out), 2u);
  EXPECT_EQ(out, "\xEF\xBF\xBD");
}

TEST(Utf8Test, EncodeDecodeCodePoints) {
  for (char32_t cp : {0x41u, 0xE9u, 0x4E16u, 0x1F999u, 0x10FFFFu}) {
    std::string s;
    AppendUtf8(cp, &s);
    size_t pos = 0;
    EXPECT_EQ(DecodeUtf8(s, &pos), cp);
    EXPECT_EQ(pos, s.size());
  }
}

}  // namespace
}  // namespace qwen::tokenizer

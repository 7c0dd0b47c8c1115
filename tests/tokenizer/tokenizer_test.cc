#include "inference/tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/tokenizer/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"
#include "tests/fuzz/tokenizer_fuzz_entry.h"

namespace qwen::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Loaded {
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
};

Loaded Load(const std::string& rel, const std::string& pre_override = "") {
  Loaded l;
  auto file = gguf::GgufFile::Open(qwen::testing::DataPath(rel));
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return l;
  l.file = std::move(file).value();
  TokenizerOptions options;
  options.pre_tokenizer_override = pre_override;
  auto t = Tokenizer::FromGguf(*l.file, options);
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) l.tokenizer = std::move(t).value();
  return l;
}

// The real Qwen3 vocabulary, loaded once for the whole test program.
const Tokenizer& Qwen35() {
  static Loaded* l = new Loaded(Load("tokenizer/qwen3-vocab-qwen35pre.gguf"));
  return *l->tokenizer;
}
const Tokenizer& Qwen2() {
  static Loaded* l = new Loaded(Load("tokenizer/qwen3-vocab-qwen35pre.gguf", "qwen2"));
  return *l->tokenizer;
}
const Tokenizer& Tiny() {
  static Loaded* l = new Loaded(Load("models/tiny-qwen35-q3_k_m.gguf"));
  return *l->tokenizer;
}

nlohmann::json Cases() {
  return nlohmann::json::parse(
      qwen::testing::ReadFile(qwen::testing::DataPath("tokenizer/cases.json")))["cases"];
}

std::string Show(const std::string& s) { return nlohmann::json(s).dump(); }

TEST(TokenizerTest, LoadsVocabulary) {
  const Tokenizer& t = Qwen35();
  EXPECT_EQ(t.vocab_size(), 151669);
  EXPECT_EQ(t.pre_tokenizer_name(), "qwen35");
  EXPECT_EQ(t.eos_id(), 151645);
  EXPECT_EQ(t.pad_id(), 151643);
  EXPECT_EQ(t.PieceToId("<|im_start|>"), 151644);
  EXPECT_EQ(t.Type(151644), TokenType::kControl);
  EXPECT_EQ(t.Type(151667), TokenType::kUserDefined);
  EXPECT_TRUE(t.IsEndOfGeneration(151645));
  EXPECT_TRUE(t.IsEndOfGeneration(151643));
  EXPECT_FALSE(t.IsEndOfGeneration(151667));
  EXPECT_EQ(t.TokenPiece(220), "Ġ");
  EXPECT_EQ(t.TokenBytes(220), " ");
}

TEST(TokenizerTest, HuggingFaceQwen35Ids) {
  for (const auto& c : Cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(Qwen35().Encode(text, true), c["qwen35"].get<std::vector<int32_t>>()) << Show(text);
  }
}

TEST(TokenizerTest, HuggingFaceQwen2Ids) {
  EXPECT_EQ(Qwen2().pre_tokenizer_name(), "qwen2");
  for (const auto& c : Cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(Qwen2().Encode(text, true), c["qwen2"].get<std::vector<int32_t>>()) << Show(text);
  }
}

TEST(TokenizerTest, HuggingFaceIdsWithoutSpecialParsing) {
  for (const auto& c : Cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(Qwen35().Encode(text, false), c["qwen35_no_special"].get<std::vector<int32_t>>())
        << Show(text);
  }
}

TEST(TokenizerTest, RoundTripOfFixtureTextsIsNfc) {
  for (const auto& c : Cases()) {
    const std::string text = c["text"];
    EXPECT_EQ(Qwen35().Decode(Qwen35().Encode(text, true), true), NormalizeNfc(text)) << Show(text);
    // Without special parsing the text is tokenized as given (no NFC), as Hugging Face does.
    EXPECT_EQ(Qwen35().Decode(Qwen35().Encode(text, false), true), text) << Show(text);
    EXPECT_TRUE(CheckRoundTrip(Qwen35(), text).ok()) << Show(text);
  }
}

TEST(TokenizerTest, NfcComposesBeforeBpe) {
  // "e" + COMBINING ACUTE is tokenized as the precomposed "é" (llama.cpp skips NFC here).
  EXPECT_EQ(Qwen35().Encode("e\xCC\x81", true), Qwen35().Encode("\xC3\xA9", true));
  EXPECT_NE(Qwen35().Encode("e\xCC\x81", false), Qwen35().Encode("\xC3\xA9", false));
  EXPECT_EQ(NormalizeNfc("e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(NormalizeNfc("plain ascii"), "plain ascii");
}

TEST(TokenizerTest, TinyModelTokenization) {
  const auto cases =
      nlohmann::json::parse(qwen::testing::ReadFile(qwen::testing::DataPath("tokenization.json")));
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto ids = Tiny().Encode(text, true);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c["name"];
    EXPECT_EQ(Tiny().Decode(ids, true), c["detok"].get<std::string>()) << c["name"];
    EXPECT_TRUE(CheckRoundTrip(Tiny(), text).ok()) << c["name"];
  }
}

TEST(TokenizerTest, SpecialTokensOnlyWhenAsked) {
  const Tokenizer& t = Qwen35();
  EXPECT_THAT(t.Encode("<|im_start|>", true), ElementsAre(151644));
  EXPECT_GT(t.Encode("<|im_start|>", false).size(), 1u);
  // User-defined tokens are recognised either way, as Hugging Face does.
  EXPECT_THAT(t.Encode("<think>", false), ElementsAre(151667));
  EXPECT_THAT(t.Encode("<tool_call>", true), ElementsAre(151657));
  // Longest match: "<tool_call>" is not "<tool_response>"; "</tool_call>" wins over "<".
  EXPECT_THAT(t.Encode("</tool_call>", true), ElementsAre(151658));
}

TEST(TokenizerTest, DecodeHidesControlTokensUnlessAsked) {
  const Tokenizer& t = Qwen35();
  const auto ids = t.Encode("<|im_start|>user\nHi<|im_end|><think>", true);
  EXPECT_EQ(t.Decode(ids), "user\nHi<think>");
  EXPECT_EQ(t.Decode(ids, true), "<|im_start|>user\nHi<|im_end|><think>");
  // Ids outside the vocabulary are skipped rather than trusted.
  EXPECT_EQ(t.Decode({-1, 999999, 9707}), "Hello");
}

TEST(TokenizerTest, InvalidUtf8IsRepairedNotRejected) {
  const Tokenizer& t = Qwen35();
  const std::string bad = "ok\xFF\xC3";
  EXPECT_EQ(t.Decode(t.Encode(bad, true)), "ok\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(CheckRoundTrip(t, bad).ok());
}

// The id of the token that stands for the single byte `b`.
int32_t ByteToken(const Tokenizer& t, unsigned char b) {
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    const absl::string_view bytes = t.TokenBytes(id);
    if (bytes.size() == 1 && static_cast<unsigned char>(bytes[0]) == b) return id;
  }
  return -1;
}

TEST(TokenizerTest, StreamingDecoderNeverEmitsPartialCharacters) {
  const Tokenizer& t = Qwen35();
  const std::string text = "🚀 家族 👩‍👩‍👧‍👦 é done";
  // Byte tokens one by one: each emoji is split over several tokens.
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(ByteToken(t, c));
  ASSERT_EQ(ids.size(), text.size());
  StreamingDecoder stream(t);
  std::string out;
  for (int32_t id : ids) {
    const std::string delta = stream.Add(id);
    EXPECT_TRUE(IsValidUtf8(delta));
    out += delta;
  }
  EXPECT_EQ(stream.pending_bytes(), 0u);
  out += stream.Flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(t.Decode(ids), text);
}

TEST(TokenizerTest, StreamingDecoderFlushesUnfinishedCharacter) {
  const Tokenizer& t = Qwen35();
  // First two bytes of a 4-byte emoji.
  const std::vector<int32_t> ids = {ByteToken(t, 0xF0), ByteToken(t, 0x9F)};
  StreamingDecoder stream(t);
  EXPECT_EQ(stream.Add(ids[0]), "");
  EXPECT_EQ(stream.Add(ids[1]), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.Add(9707), "Hello");
}

// Random strings drawn from a mix of scripts, marks, emoji, controls and whitespace.
std::string RandomText(std::mt19937& rng) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},       {0x09, 0x0D},     {0xA0, 0x24F},      {0x300, 0x36F},   {0x370, 0x3FF},
      {0x400, 0x4FF},     {0x590, 0x6FF},   {0x900, 0x97F},     {0xE00, 0xE7F},   {0x1100, 0x11FF},
      {0x2000, 0x206F},   {0x3000, 0x30FF}, {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3}, {0xFB00, 0xFB4F},
      {0x1F300, 0x1FAFF}, {0x85, 0x85},     {0x10000, 0x10FFFF}};
  std::uniform_int_distribution<int> len_dist(0, 40);
  std::uniform_int_distribution<size_t> range_dist(0, ranges.size() - 1);
  std::string out;
  const int len = len_dist(rng);
  for (int k = 0; k < len; ++k) {
    const auto& r = ranges[range_dist(rng)];
    char32_t cp = std::uniform_int_distribution<uint32_t>(r.first, r.second)(rng);
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    AppendUtf8(cp, &out);
  }
  return out;
}

// NFC computed region by region must equal utf8proc over the whole text.
TEST(TokenizerTest, RegionwiseNfcEqualsWholeTextNfc) {
  std::mt19937 rng(5);
  for (int k = 0; k < 3000; ++k) {
    std::string text = RandomText(rng);
    // Bias towards decomposed sequences and Hangul jamo.
    if (k % 2) {
      text +=
          "e\xCC\x81"
          "a\xCC\x8A\xCC\x81 \xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"
          "x\xCC\xA3\xCC\x87";
    }
    utf8proc_uint8_t* whole = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
    ASSERT_NE(whole, nullptr);
    EXPECT_EQ(NormalizeNfc(text), std::string(reinterpret_cast<char*>(whole))) << Show(text);
    std::free(whole);
  }
}

TEST(TokenizerTest, RandomUnicodeRoundTrips) {
  std::mt19937 rng(1234);
  for (int k = 0; k < 2000; ++k) {
    const std::string text = RandomText(rng);
    ASSERT_EQ(Qwen35().Decode(Qwen35().Encode(text, true), true), NormalizeNfc(text)) << Show(text);
    ASSERT_TRUE(CheckRoundTrip(Qwen35(), text).ok()) << Show(text);
  }
}

TEST(TokenizerTest, RandomBytesNeverBreakProperties) {
  std::mt19937 rng(99);
  for (int k = 0; k < 2000; ++k) {
    std::string bytes(std::uniform_int_distribution<int>(0, 30)(rng), '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (k % 3 == 0) bytes += "<|im_start|><think>";
    ASSERT_TRUE(CheckRoundTrip(Tiny(), bytes).ok()) << Show(ToValidUtf8(bytes));
  }
}

TEST(TokenizerTest, ConcurrentEncodingGivesSameIds) {
  const auto cases = Cases();
  std::vector<std::vector<int32_t>> expected;
  for (const auto& c : cases) expected.push_back(c["qwen35"].get<std::vector<int32_t>>());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = 0; i < cases.size(); ++i) {
          if (Qwen35().Encode(cases[i]["text"].get<std::string>(), true) != expected[i]) {
            ++mismatches;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerTest, UnknownPreTokenizerIsAnError) {
  auto file = gguf::GgufFile::Open(qwen::testing::DataPath("tokenizer/qwen3-vocab-qwen35pre.gguf"));
  ASSERT_TRUE(file.ok());
  TokenizerOptions options;
  options.pre_tokenizer_override = "llama3";
  auto t = Tokenizer::FromGguf(**file, options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("llama3"));
}

// Ollama's files add the generation config's end tokens as tokenizer.ggml.eos_token_ids.
TEST(TokenizerTest, EosTokenIdsEndGeneration) {
  Vocabulary v;
  v.tokens = {"a", "b", "c", "d"};
  v.pre = "qwen35";
  v.eos_id = 1;
  v.extra_eog_ids = {3, 1, 99};  // duplicates and ids outside the vocabulary are ignored
  auto t = Tokenizer::Create(v);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->end_of_generation_ids(), (std::vector<int32_t>{1, 3}));
  auto file =
      gguf::GgufFile::Open(qwen::testing::DataPath("models/tiny-qwen35-ollama-q3_k_m.gguf"));
  ASSERT_TRUE(file.ok());
  auto ollama = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(ollama.ok());
  EXPECT_TRUE((*ollama)->IsEndOfGeneration(1000));
  EXPECT_TRUE((*ollama)->IsEndOfGeneration(998));
}

// Ollama's padding tokens are typed user-defined; text that spells one is still text.
TEST(TokenizerTest, OllamasPaddingTokensAreNotMatchedInText) {
  Vocabulary v;
  v.tokens = {"[", "P", "A", "D", "0", "]", "<think>", "[PAD0]", "[PAD12]", "[PADx]"};
  v.types = {TokenType::kNormal,      TokenType::kNormal,      TokenType::kNormal,
             TokenType::kNormal,      TokenType::kNormal,      TokenType::kNormal,
             TokenType::kUserDefined, TokenType::kUserDefined, TokenType::kUserDefined,
             TokenType::kUserDefined};
  v.pre = "qwen35";
  auto t = Tokenizer::Create(v);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("[PAD0]", true), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ((*t)->Encode("<think>", true), (std::vector<int32_t>{6}));  // still an added token
  EXPECT_EQ((*t)->Encode("[PADx]", true), (std::vector<int32_t>{9}));   // not a padding name
}

TEST(TokenizerTest, OtherModelTypesAreAnError) {
  Vocabulary v;
  v.model = "llama";
  v.tokens = {"a"};
  v.pre = "qwen35";
  EXPECT_FALSE(Tokenizer::Create(v).ok());
  v.model = "gpt2";
  v.pre = "";
  EXPECT_FALSE(Tokenizer::Create(v).ok());
}

}  // namespace
}  // namespace qwen::tokenizer

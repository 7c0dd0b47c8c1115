#include "inference/gguf/gguf_file.h"

#include <algorithm>
#include <random>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "inference/gguf/gguf_writer.h"
#include "tests/common/test_util.h"

namespace qwen::gguf {
namespace {

using quant::GgmlType;
using ::qwen::testing::DataPath;
using ::qwen::testing::ReadFile;

const char* const kFixtures[] = {
    "models/tiny-qwen35-f32.gguf",           "models/tiny-qwen35-f16.gguf",
    "models/tiny-qwen35-q8_0.gguf",          "models/tiny-qwen35-q4_k_m.gguf",
    "models/tiny-qwen35-q3_k_m.gguf",        "models/tiny-qwen35-mtp-q3_k_m.gguf",
    "models/tiny-qwen35-ollama-q3_k_m.gguf", "models/mmproj-tiny-qwen35-f16.gguf",
    "tokenizer/qwen3-vocab-qwen35pre.gguf",
};

TEST(GgufFile, OpensEveryFixture) {
  for (const char* rel : kFixtures) {
    auto f = GgufFile::Open(DataPath(rel));
    ASSERT_TRUE(f.ok()) << rel << ": " << f.status();
    EXPECT_EQ((*f)->version(), 3u) << rel;
    EXPECT_FALSE((*f)->metadata().empty()) << rel;
    for (const TensorInfo& t : (*f)->tensors()) {
      EXPECT_GE(t.file_offset, (*f)->data_offset());
      EXPECT_LE(t.file_offset + t.n_bytes, (*f)->file_size());
      EXPECT_EQ(t.file_offset % (*f)->alignment(), 0u);
    }
  }
}

TEST(GgufFile, ReadsTinyModel) {
  auto f = GgufFile::Open(DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& file = **f;
  EXPECT_EQ(*file.GetString("general.architecture"), "qwen35");
  EXPECT_EQ(*file.GetU32("qwen35.block_count"), 8u);
  EXPECT_EQ(*file.GetU32("qwen35.embedding_length"), 256u);
  EXPECT_FLOAT_EQ(*file.GetF32("qwen35.rope.freq_base"), 1e7f);
  EXPECT_EQ(*file.GetIntArray("qwen35.rope.dimension_sections"),
            (std::vector<int64_t>{11, 11, 10, 0}));
  EXPECT_EQ(file.GetStringArray("tokenizer.ggml.tokens")->size(), 1024u);
  EXPECT_FALSE(*file.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(file.tensors().size(), 108u);

  const TensorInfo* emb = file.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, GgmlType::kQ6_K);
  EXPECT_EQ(emb->n_dims, 2);
  EXPECT_EQ(emb->ne[0], 256);
  EXPECT_EQ(emb->ne[1], 1024);
  EXPECT_EQ(emb->n_bytes, 1024u * 210);
  EXPECT_EQ(emb->rows(), 1024);
  EXPECT_EQ(file.FindTensor("output.weight"), nullptr);  // tied embeddings
}

TEST(GgufFile, TypedAccessErrorsNameTheKey) {
  auto f = GgufFile::Open(DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  ASSERT_TRUE(f.ok());
  const GgufFile& file = **f;
  auto missing = file.GetU32("qwen35.no_such_key");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "qwen35.no_such_key"));
  auto wrong = file.GetU32("general.architecture");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "general.architecture"));
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "string"));
  EXPECT_FALSE(file.GetString("qwen35.block_count").ok());
  EXPECT_FALSE(file.GetStringArray("tokenizer.ggml.token_type").ok());
  EXPECT_EQ(*file.GetU32Or("qwen35.nextn_predict_layers", 0), 0u);
}

TEST(GgufFile, MissingFileIsNotFound) {
  auto f = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

// Cutting a file anywhere must give an error, never a crash, and the error names a byte offset.
TEST(GgufFile, TruncatedCopiesFailCleanly) {
  for (const char* rel : kFixtures) {
    const std::string bytes = ReadFile(DataPath(rel));
    auto whole = GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ASSERT_TRUE(whole.ok()) << rel;
    const uint64_t header = (*whole)->data_offset();
    std::vector<uint64_t> cuts;
    // Every cut inside the first 4 KiB of the header, then 500 spread over the rest of it, then
    // 64 over the tensor data.
    for (uint64_t c = 0; c < std::min<uint64_t>(header, 4096); ++c) cuts.push_back(c);
    for (int k = 0; k < 500 && header > 4096; ++k) cuts.push_back(4096 + (header - 4096) * k / 500);
    if (!(*whole)->tensors().empty()) {
      for (int k = 0; k < 64; ++k) cuts.push_back(header + (bytes.size() - header) * k / 64);
      cuts.push_back(bytes.size() - 1);
    }
    for (uint64_t cut : cuts) {
      // Small prefixes get a buffer of exactly their size, so a sanitizer build would catch a
      // read past the cut; large ones are parsed in place.
      std::vector<uint8_t> prefix;
      const uint8_t* data = reinterpret_cast<const uint8_t*>(bytes.data());
      if (cut <= 65536) {
        prefix.assign(bytes.begin(), bytes.begin() + cut);
        data = prefix.data();
      }
      auto f = GgufFile::FromBuffer(data, cut);
      ASSERT_FALSE(f.ok()) << rel << " cut at " << cut;
      EXPECT_TRUE(absl::StrContains(f.status().message(), "byte")) << f.status();
    }
  }
}

// Random byte flips in the header: any outcome but a crash or a hang is fine.
TEST(GgufFile, FlippedHeaderBytesNeverCrash) {
  std::mt19937 rng(1234);
  for (const char* rel : kFixtures) {
    const std::string bytes = ReadFile(DataPath(rel));
    auto whole = GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ASSERT_TRUE(whole.ok());
    const uint64_t header = (*whole)->data_offset();
    // One copy of the file, each trial's flips undone after it: copying the whole file (up to
    // 30 MB) per trial made this test take minutes under an emulator (docs/arm64.md).
    std::vector<uint8_t> copy(bytes.begin(), bytes.end());
    for (int trial = 0; trial < 300; ++trial) {
      const int flips = 1 + trial % 4;
      std::vector<std::pair<uint64_t, uint8_t>> flipped;
      for (int k = 0; k < flips; ++k) {
        // Half of the flips land in the first 64 bytes, where the counts and first lengths are.
        const uint64_t at = (k % 2 == 0) ? rng() % std::min<uint64_t>(64, header) : rng() % header;
        const uint8_t mask = static_cast<uint8_t>(1u << (rng() % 8));
        copy[at] ^= mask;
        flipped.emplace_back(at, mask);
      }
      {
        auto f = GgufFile::FromBuffer(copy.data(), copy.size());
        if (!f.ok()) {
          EXPECT_FALSE(f.status().message().empty());
        }
      }  // the parsed file (which may point into the copy) is gone before the copy is restored
      for (const auto& [at, mask] : flipped) copy[at] ^= mask;
    }
    // Bytes, not chars: std::string's char is signed here, so element-wise equality with the
    // uint8_t copy would fail on every byte above 127.
    ASSERT_EQ(copy.size(), bytes.size()) << rel;
    ASSERT_EQ(std::memcmp(copy.data(), bytes.data(), bytes.size()), 0) << rel;
  }
}

// Hand-made hostile headers.
std::string HeaderWith(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  std::string s = "GGUF";
  s.append(reinterpret_cast<const char*>(&version), 4);
  s.append(reinterpret_cast<const char*>(&n_tensors), 8);
  s.append(reinterpret_cast<const char*>(&n_kv), 8);
  return s;
}

absl::Status ParseBytes(const std::string& bytes) {
  return GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())
      .status();
}

TEST(GgufFile, RejectsHostileHeaders) {
  EXPECT_TRUE(absl::StrContains(ParseBytes("GGML....").message(), "magic"));
  EXPECT_TRUE(absl::StrContains(ParseBytes(HeaderWith(1, 0, 0)).message(), "version 1"));
  EXPECT_TRUE(absl::StrContains(ParseBytes(HeaderWith(7, 0, 0)).message(), "version 7"));
  // Counts far beyond what the file could hold are refused before any allocation.
  EXPECT_TRUE(
      absl::StrContains(ParseBytes(HeaderWith(3, 0, 1ull << 60)).message(), "metadata count"))
      << ParseBytes(HeaderWith(3, 0, 1ull << 60));
  EXPECT_TRUE(absl::StrContains(ParseBytes(HeaderWith(3, 1ull << 60, 0)).message(), "tensor count"))
      << ParseBytes(HeaderWith(3, 1ull << 60, 0));
  // A key whose length runs past the end.
  std::string s = HeaderWith(3, 0, 1);
  uint64_t len = 1ull << 62;
  s.append(reinterpret_cast<const char*>(&len), 8);
  s += std::string(32, 'x');
  absl::Status st = ParseBytes(s);
  EXPECT_TRUE(absl::StrContains(st.message(), "length")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "byte 24")) << st;
}

TEST(GgufFile, ValidatesTensorsWithWriter) {
  {
    GgufWriter w;
    w.AddString("general.architecture", "test");
    w.AddTensorBytes("a", GgmlType::kF32, {4, 2}, std::string(32, '\1'));
    w.AddTensorBytes("b", GgmlType::kQ8_0, {64}, std::string(68, '\2'));
    const std::string bytes = w.ToBytes();
    auto f = GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->tensors().size(), 2u);
    EXPECT_EQ((*f)->FindTensor("b")->n_bytes, 68u);
    EXPECT_EQ((*f)->FindTensor("b")->data[0], 2);
  }
  {
    // ne[0] not a multiple of the block size.
    GgufWriter w;
    w.AddTensorBytes("q", GgmlType::kQ4_K, {100}, std::string(144, '\0'));
    EXPECT_TRUE(absl::StrContains(ParseBytes(w.ToBytes()).message(), "block size"));
  }
  {
    // Duplicate names.
    GgufWriter w;
    w.AddTensorBytes("x", GgmlType::kF32, {1}, std::string(4, '\0'));
    w.AddTensorBytes("x", GgmlType::kF32, {1}, std::string(4, '\0'));
    EXPECT_TRUE(absl::StrContains(ParseBytes(w.ToBytes()).message(), "duplicate"));
  }
  {
    GgufWriter w;
    w.AddU32("k", 1);
    w.AddU32("k", 2);
    EXPECT_TRUE(absl::StrContains(ParseBytes(w.ToBytes()).message(), "duplicate"));
  }
  {
    GgufWriter w;
    w.AddU32("general.alignment", 24);
    EXPECT_TRUE(absl::StrContains(ParseBytes(w.ToBytes()).message(), "alignment"));
  }
}

TEST(GgufFile, RejectsOverlappingAndMisalignedTensors) {
  GgufWriter w;
  w.AddTensorBytes("a", GgmlType::kF32, {16}, std::string(64, '\0'));
  w.AddTensorBytes("b", GgmlType::kF32, {16}, std::string(64, '\0'));
  std::string bytes = w.ToBytes();
  auto f = GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_TRUE(f.ok());
  // Rewrite b's offset (the last 8 bytes of its tensor info) to overlap a, then to be misaligned.
  const TensorInfo* b = (*f)->FindTensor("b");
  const size_t b_name_at = bytes.find("b", 24 + 8 + 1 + 4 + 8 + 4 + 8);
  ASSERT_NE(b_name_at, std::string::npos);
  const size_t b_offset_at = b_name_at + 1 + 4 + 8 + 4;
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + b_offset_at, 8);
  ASSERT_EQ(stored, b->offset);
  uint64_t overlap = 32;
  std::memcpy(bytes.data() + b_offset_at, &overlap, 8);
  EXPECT_TRUE(absl::StrContains(ParseBytes(bytes).message(), "overlap")) << ParseBytes(bytes);
  uint64_t misaligned = 65;
  std::memcpy(bytes.data() + b_offset_at, &misaligned, 8);
  EXPECT_TRUE(absl::StrContains(ParseBytes(bytes).message(), "alignment")) << ParseBytes(bytes);
}

}  // namespace
}  // namespace qwen::gguf

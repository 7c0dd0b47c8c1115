// ModelConfig::FromGguf on metadata that parses as GGUF but describes no sane model.
#include "inference/model/config.h"

#include <map>
#include <string>

#include "gtest/gtest.h"
#include "inference/gguf/gguf_file.h"
#include "inference/gguf/gguf_writer.h"
#include "tests/common/test_util.h"

namespace qwen::model {
namespace {

// The tiny model's scalar metadata (u32 keys overridable) plus a token_embd.weight of its shape.
std::string TinyConfigFile(const std::map<std::string, uint32_t>& u32_overrides) {
  auto src = gguf::GgufFile::Open(qwen::testing::DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  EXPECT_TRUE(src.ok()) << src.status();
  gguf::GgufWriter w;
  for (const auto& [key, v] : (*src)->metadata()) {
    const std::string k(key);
    if (auto o = u32_overrides.find(k); o != u32_overrides.end()) {
      w.AddU32(k, o->second);
    } else if (v.type == gguf::ValueType::kU32) {
      w.AddU32(k, static_cast<uint32_t>(v.u));
    } else if (v.type == gguf::ValueType::kF32) {
      w.AddF32(k, static_cast<float>(v.f));
    } else if (v.type == gguf::ValueType::kBool) {
      w.AddBool(k, v.b);
    } else if (v.type == gguf::ValueType::kString) {
      w.AddString(k, v.str);
    } else if (v.type == gguf::ValueType::kArray && v.elem_type == gguf::ValueType::kI32) {
      std::vector<int32_t> a(v.count);
      for (uint64_t i = 0; i < v.count; ++i) a[i] = static_cast<int32_t>(v.IntAt(i));
      w.AddI32Array(k, a);
    }
  }
  const gguf::TensorInfo* embd = (*src)->FindTensor("token_embd.weight");
  EXPECT_NE(embd, nullptr);
  w.AddTensorBytes("token_embd.weight", quant::GgmlType::kF32, {embd->ne[0], 4},
                   std::string(embd->ne[0] * 4 * sizeof(float), '\0'));
  return w.ToBytes();
}

absl::StatusOr<ModelConfig> ConfigOf(const std::string& bytes) {
  auto f = gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (!f.ok()) return f.status();
  return ModelConfig::FromGguf(**f);
}

TEST(ModelConfigTest, TinyMetadataCopyIsValid) {
  auto c = ConfigOf(TinyConfigFile({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_layer, 8);
  EXPECT_EQ(c->n_vocab, 4);
}

// Found by tests/fuzz/gguf_fuzzer: block_count sized the layer table before any check, so
// 0xFFFFFFFF (-1 as int) threw std::length_error and 2^30 allocated and looped a billion times.
TEST(ModelConfigTest, RefusesAbsurdBlockCounts) {
  for (uint32_t n : {0u, 4097u, 1u << 30, 0x80000000u, 0xFFFFFFFFu}) {
    auto c = ConfigOf(TinyConfigFile({{"qwen35.block_count", n}}));
    ASSERT_FALSE(c.ok()) << n;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
    EXPECT_NE(c.status().message().find("block_count"), std::string::npos) << c.status();
  }
}

}  // namespace
}  // namespace qwen::model

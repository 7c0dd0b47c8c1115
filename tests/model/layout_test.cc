// Which layout a file follows, and the MTP tensors of both layouts (Ollama's `mtp.*` and
// llama.cpp's `blk.N.nextn.*`) read as the same block.
#include "inference/model/layout.h"

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/gguf/gguf_file.h"
#include "inference/gguf/gguf_writer.h"
#include "inference/model/config.h"
#include "inference/model/model.h"
#include "inference/quant/kernels.h"
#include "tests/common/test_util.h"

namespace qwen::model {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const gguf::GgufFile> Open(const std::string& rel) {
  auto f = gguf::GgufFile::Open(qwen::testing::DataPath(rel));
  EXPECT_TRUE(f.ok()) << rel << ": " << f.status();
  return f.ok() ? std::shared_ptr<const gguf::GgufFile>(std::move(*f)) : nullptr;
}

TEST(FileLayout, DetectsEachFixture) {
  EXPECT_EQ(DetectLayout(*Open("models/tiny-qwen35-q3_k_m.gguf")), FileLayout::kLlamaCpp);
  EXPECT_EQ(DetectLayout(*Open("models/tiny-qwen35-mtp-q3_k_m.gguf")), FileLayout::kLlamaCpp);
  EXPECT_EQ(DetectLayout(*Open("models/mmproj-tiny-qwen35-f16.gguf")), FileLayout::kLlamaCpp);
  EXPECT_EQ(DetectLayout(*Open("models/tiny-qwen35-ollama-q3_k_m.gguf")), FileLayout::kOllama);
  EXPECT_EQ(LayoutName(FileLayout::kOllama), "ollama");
  EXPECT_EQ(LayoutName(FileLayout::kLlamaCpp), "llama.cpp");
}

TEST(FileLayout, BothLayoutsGiveTheSameConfig) {
  auto llama = ModelConfig::FromGguf(*Open("models/tiny-qwen35-mtp-q3_k_m.gguf"));
  auto ollama = ModelConfig::FromGguf(*Open("models/tiny-qwen35-ollama-q3_k_m.gguf"));
  ASSERT_TRUE(llama.ok() && ollama.ok());
  EXPECT_EQ(llama->layout, FileLayout::kLlamaCpp);
  EXPECT_EQ(ollama->layout, FileLayout::kOllama);
  EXPECT_EQ(ollama->n_layer, llama->n_layer);
  EXPECT_EQ(ollama->n_nextn, 1);  // block_count counts the trunk; the MTP block is mtp.*
  EXPECT_EQ(llama->n_nextn, 1);
  EXPECT_EQ(ollama->is_attention, llama->is_attention);
  EXPECT_EQ(ollama->n_head_kv, llama->n_head_kv);
  EXPECT_EQ(ollama->rope_sections, llama->rope_sections);
  EXPECT_EQ(ollama->ssm_v_tiled, llama->ssm_v_tiled);
  EXPECT_EQ(ollama->n_vocab, llama->n_vocab);
}

// The fixture's Ollama file is the MTP file converted as Ollama's converter does: the same MTP
// block under other names, its three outer norms without the +1 every other norm carries.
TEST(FileLayout, OllamasMtpTensorsAreLlamaCppsUnderOtherNames) {
  auto llama_file = Open("models/tiny-qwen35-mtp-q3_k_m.gguf");
  auto ollama_file = Open("models/tiny-qwen35-ollama-q3_k_m.gguf");
  auto llama = FindMtpTensors(*llama_file, 8);
  auto ollama = FindMtpTensors(*ollama_file, 8);
  ASSERT_TRUE(llama.ok() && ollama.ok()) << llama.status() << ollama.status();
  ASSERT_EQ(llama->size(), 14u);
  ASSERT_EQ(ollama->size(), llama->size());
  std::map<std::string, MtpTensor> by_name;
  for (const MtpTensor& t : *llama) by_name[t.name] = t;
  int raw_norms = 0;
  for (const MtpTensor& o : *ollama) {
    SCOPED_TRACE(o.name);
    ASSERT_TRUE(by_name.count(o.name));
    const gguf::TensorInfo& a = *by_name[o.name].tensor;
    const gguf::TensorInfo& b = *o.tensor;
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.ne, b.ne);
    ASSERT_EQ(a.n_bytes, b.n_bytes);
    if (!o.add_one) {
      EXPECT_EQ(std::memcmp(a.data, b.data, a.n_bytes), 0);
      continue;
    }
    ++raw_norms;
    ASSERT_EQ(b.type, quant::GgmlType::kF32);
    const float* want = reinterpret_cast<const float*>(a.data);
    const float* raw = reinterpret_cast<const float*>(b.data);
    for (int64_t i = 0; i < a.n_elements; ++i) ASSERT_FLOAT_EQ(raw[i] + 1.0f, want[i]) << i;
  }
  EXPECT_EQ(raw_norms, 2);  // enorm and hnorm (the fixture has no shared_head_norm)
  EXPECT_TRUE(FindMtpTensors(*Open("models/tiny-qwen35-q3_k_m.gguf"), 8)->empty());
}

// Rewrites the tiny model with tensors renamed (a new name "" drops the tensor).
std::string Rewrite(const std::map<std::string, std::string>& renames) {
  auto src = Open("models/tiny-qwen35-q3_k_m.gguf");
  gguf::GgufWriter w;
  for (const auto& [key, v] : src->metadata()) {
    const std::string k(key);
    if (absl::StartsWith(k, "tokenizer.")) continue;
    switch (v.type) {
      case gguf::ValueType::kU32:
        w.AddU32(k, static_cast<uint32_t>(v.u));
        break;
      case gguf::ValueType::kF32:
        w.AddF32(k, static_cast<float>(v.f));
        break;
      case gguf::ValueType::kBool:
        w.AddBool(k, v.b);
        break;
      case gguf::ValueType::kString:
        w.AddString(k, v.str);
        break;
      case gguf::ValueType::kArray:
        if (v.elem_type == gguf::ValueType::kI32) {
          std::vector<int32_t> a(v.count);
          for (uint64_t i = 0; i < v.count; ++i) a[i] = static_cast<int32_t>(v.IntAt(i));
          w.AddI32Array(k, a);
        }
        break;
      default:
        break;
    }
  }
  for (const gguf::TensorInfo& t : src->tensors()) {
    std::string name(t.name);
    if (auto it = renames.find(name); it != renames.end()) name = it->second;
    if (name.empty()) continue;
    std::vector<int64_t> ne(t.ne.begin(), t.ne.begin() + t.n_dims);
    w.AddTensorBytes(name, t.type, ne,
                     std::string(reinterpret_cast<const char*>(t.data), t.n_bytes));
  }
  return w.ToBytes();
}

absl::Status LoadError(const std::string& bytes) {
  auto f = gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (!f.ok()) return f.status();
  return Model::Load(std::shared_ptr<const gguf::GgufFile>(std::move(*f))).status();
}

TEST(FileLayout, AFileInNeitherLayoutSaysWhatItIsAndWhatIsMissing) {
  // The copy itself loads: the test's rewriting loses nothing the model needs.
  const std::string same = Rewrite({});
  EXPECT_TRUE(LoadError(same).ok()) << LoadError(same);

  // Qwen3-Next's fused projection where Qwen3.5 has attn_qkv.
  absl::Status s = LoadError(Rewrite({{"blk.0.attn_qkv.weight", "blk.0.ssm_in.weight"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("\"blk.0.attn_qkv.weight\" is missing"));
  EXPECT_THAT(s.message(), HasSubstr("Qwen3-Next"));
  EXPECT_THAT(s.message(), HasSubstr("neither llama.cpp's nor Ollama's"));

  // Neither ssm_dt.bias (llama.cpp) nor ssm_dt (Ollama).
  s = LoadError(Rewrite({{"blk.1.ssm_dt.bias", ""}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("\"blk.1.ssm_dt.bias\" is missing"));
  EXPECT_THAT(s.message(), HasSubstr("reads as llama.cpp's layout"));

  // Ollama's name for it loads.
  EXPECT_TRUE(LoadError(Rewrite({{"blk.1.ssm_dt.bias", "blk.1.ssm_dt"}})).ok());
}

TEST(FileLayout, AProjectorGivenAsTheModelIsNamedAsSuch) {
  auto s = Model::Load(Open("models/mmproj-tiny-qwen35-f16.gguf")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("vision projector"));
  EXPECT_THAT(s.message(), HasSubstr("--mmproj"));
}

}  // namespace
}  // namespace qwen::model

// Dequantization against values computed by ggml (tests/data/dequant-reference.json), and the
// block layouts of the types no fixture holds against blocks encoded here from known values.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "inference/common/fp16.h"
#include "inference/gguf/gguf_file.h"
#include "inference/quant/kernels.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::quant {
namespace {

using ::qwen::testing::DataPath;
using ::qwen::testing::ReadFile;

uint32_t Id(GgmlType t) { return static_cast<uint32_t>(t); }

// Relative agreement asked of every value, and of the tensor's sum and sum of squares.
constexpr double kRel = 1e-6;

struct Stats {
  std::vector<float> values;
  double sum = 0, sum_sq = 0;
};

Stats Summarize(std::vector<float> values) {
  Stats s;
  for (float v : values) {
    s.sum += v;
    s.sum_sq += static_cast<double>(v) * v;
  }
  s.values = std::move(values);
  return s;
}

// The reference's BF16 file is not shipped; it is the F32 model with every value rounded to
// bfloat16 (round to nearest even), which is what llama.cpp's converter writes for --outtype
// bf16 from float32 weights. Reproduced here from tiny-qwen35-f32.gguf.
std::vector<uint16_t> Bf16FromF32Tensor(const gguf::TensorInfo& t) {
  std::vector<uint16_t> out(t.n_elements);
  for (int64_t i = 0; i < t.n_elements; ++i) {
    float v;
    std::memcpy(&v, t.data + 4 * i, 4);
    out[i] = Fp32ToBf16(v);
  }
  return out;
}

class DequantReference : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(BestIsa()) < static_cast<int>(GetParam())) {
      GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
    }
  }
};

TEST_P(DequantReference, MatchesGgml) {
  const auto ref = nlohmann::json::parse(ReadFile(DataPath("dequant-reference.json")));
  ASSERT_FALSE(ref.empty());
  const KernelTable& k = KernelsFor(GetParam());
  int checked = 0;
  for (const auto& [file_type, entries] : ref.items()) {
    const bool bf16 = file_type == "bf16";
    const std::string model =
        DataPath("models/tiny-qwen35-" + std::string(bf16 ? "f32" : file_type) + ".gguf");
    auto file = gguf::GgufFile::Open(model);
    ASSERT_TRUE(file.ok()) << file.status();
    for (const auto& e : entries) {
      const std::string name = e["tensor"];
      const std::string type_name = e["type"];
      SCOPED_TRACE(file_type + " " + name + " " + type_name);
      const gguf::TensorInfo* t = (*file)->FindTensor(name);
      ASSERT_NE(t, nullptr);
      ASSERT_EQ(t->ne[0], e["ne"][0].get<int64_t>());
      ASSERT_EQ(t->n_elements, e["n"].get<int64_t>());
      GgmlType type = t->type;
      const void* data = t->data;
      std::vector<uint16_t> bf16_copy;
      if (bf16) {
        ASSERT_EQ(t->type, GgmlType::kF32);
        bf16_copy = Bf16FromF32Tensor(*t);
        type = GgmlType::kBF16;
        data = bf16_copy.data();
      }
      std::string lower = type_name;
      for (char& c : lower) c = static_cast<char>(std::tolower(c));
      std::string ours(TypeName(type));
      for (char& c : ours) c = static_cast<char>(std::tolower(c));
      ASSERT_EQ(ours, lower);

      // Row by row, as the engine does.
      std::vector<float> values(t->n_elements);
      const size_t row_bytes = RowBytes(type, t->ne[0]);
      for (int64_t r = 0; r < t->rows(); ++r) {
        k.dequantize[Id(type)](static_cast<const uint8_t*>(data) + r * row_bytes,
                               values.data() + r * t->ne[0], t->ne[0]);
      }
      const Stats s = Summarize(std::move(values));
      const auto& first = e["first_256"];
      ASSERT_EQ(first.size(), 256u);
      for (size_t i = 0; i < first.size(); ++i) {
        const double want = first[i].get<double>();
        ASSERT_NEAR(s.values[i], want, kRel * std::fabs(want)) << "value " << i;
      }
      const double sum = e["sum"], sum_sq = e["sum_sq"];
      EXPECT_NEAR(s.sum, sum, kRel * std::fabs(sum));
      EXPECT_NEAR(s.sum_sq, sum_sq, kRel * sum_sq);
      ++checked;
    }
  }
  EXPECT_GE(checked, 17);
}

INSTANTIATE_TEST_SUITE_P(Levels, DequantReference,
                         ::testing::ValuesIn(AllIsas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

// ---- Layouts of the types without a fixture: blocks built here from chosen integers ----

void PutHalf(std::vector<uint8_t>& block, size_t off, float v) {
  const uint16_t h = Fp32ToFp16(v);
  std::memcpy(&block[off], &h, 2);
}

std::vector<float> Deq(GgmlType type, const std::vector<uint8_t>& block, int64_t n) {
  std::vector<float> out(n);
  Kernels().dequantize[Id(type)](block.data(), out.data(), n);
  return out;
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1: weight j < 16 in the low nibble of qs[j], j >= 16 in the high
// nibble of qs[j - 16]; Q5's fifth bit of weight j is bit j of the 32-bit qh.
TEST(Layout, LegacyBlocks) {
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = (j * 7 + 3) % 32;  // every 5-bit value once
  const float d = 0.5f, m = -3.0f;
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1}) {
    const bool five = type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1;
    const bool has_min = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
    std::vector<uint8_t> block(Traits(type).type_size, 0);
    PutHalf(block, 0, d);
    if (has_min) PutHalf(block, 2, m);
    const size_t qs_off = (has_min ? 4 : 2) + (five ? 4 : 0);
    uint32_t qh = 0;
    for (int j = 0; j < 32; ++j) {
      const int v = five ? q[j] : q[j] & 15;
      block[qs_off + j % 16] |= static_cast<uint8_t>((v & 15) << (j < 16 ? 0 : 4));
      qh |= static_cast<uint32_t>(v >> 4) << j;
    }
    if (five) std::memcpy(&block[has_min ? 4 : 2], &qh, 4);
    const auto y = Deq(type, block, 32);
    for (int j = 0; j < 32; ++j) {
      const int v = five ? q[j] : q[j] & 15;
      const float want = has_min ? v * d + m : (v - (five ? 16 : 8)) * d;
      EXPECT_EQ(y[j], want) << TypeName(type) << " j=" << j;
    }
  }
}

// Q2_K: weight 128 h + 32 g + l has 2 bits at 2g of qs[32 h + l], sub-block 16 per scale byte
// (scale low nibble, minimum high nibble).
TEST(Layout, Q2K) {
  std::vector<uint8_t> block(84, 0);
  int q[256];
  for (int i = 0; i < 256; ++i) {
    q[i] = (i * 5 + i / 16) % 4;
    const int h = i / 128, g = (i % 128) / 32, l = i % 32;
    block[16 + 32 * h + l] |= static_cast<uint8_t>(q[i] << (2 * g));
  }
  for (int s = 0; s < 16; ++s) block[s] = static_cast<uint8_t>((s + 1) % 16 | ((15 - s) << 4));
  PutHalf(block, 80, 0.25f);
  PutHalf(block, 82, 0.125f);
  const auto y = Deq(GgmlType::kQ2_K, block, 256);
  for (int i = 0; i < 256; ++i) {
    const int s = i / 16;
    EXPECT_EQ(y[i], 0.25f * ((s + 1) % 16) * q[i] - 0.125f * (15 - s)) << i;
  }
}

}  // namespace
}  // namespace qwen::quant

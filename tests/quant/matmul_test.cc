// ops::MatMul on quantized weights: a token's outputs are the same bits whether it is multiplied
// alone (decode of one sequence), in a small batch (batched decode) or in a prefill-sized batch,
// and whichever other weights share the call. Greedy decoding of a sequence must not change when
// other sequences join the batch.
#include "inference/ops/matmul.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/fp16.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/compute.h"
#include "tests/quant/quant_test_util.h"

namespace qwen::ops {
namespace {

using quant::GgmlType;

struct TestWeight {
  std::vector<uint8_t> bytes;
  Weight w;
};

TestWeight MakeWeight(GgmlType type, int64_t n_in, int64_t n_out, std::mt19937& rng) {
  TestWeight t;
  const size_t row_bytes = quant::RowBytes(type, n_in);
  t.bytes.resize(row_bytes * n_out);
  for (int64_t r = 0; r < n_out; ++r) {
    const auto row =
        quant::testing::RandomWeights(type, n_in, quant::testing::Fill::kRealistic, rng);
    std::memcpy(&t.bytes[r * row_bytes], row.data(), row_bytes);
  }
  t.w.data = t.bytes.data();
  t.w.type = type;
  t.w.n_in = n_in;
  t.w.n_out = n_out;
  t.w.row_bytes = row_bytes;
  return t;
}

TEST(MatMul, TokenResultsDoNotDependOnTheBatch) {
  std::mt19937 rng(21);
  const int64_t n_in = 1024;
  ThreadPool pool(2);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (GgmlType type : {GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K,
                        GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    // Two fused outputs (as q/k/v or gate/up), the second of another type and odd height.
    TestWeight a = MakeWeight(type, n_in, 300, rng);
    TestWeight b = MakeWeight(GgmlType::kQ4_K, n_in, 77, rng);
    const int64_t max_tokens = 40;
    std::vector<float> x(max_tokens * n_in);
    for (int64_t t = 0; t < max_tokens; ++t) {
      const auto row =
          quant::testing::RandomActivations(n_in, quant::testing::Fill::kRealistic, rng);
      std::memcpy(&x[t * n_in], row.data(), n_in * sizeof(float));
    }
    // Each token alone.
    std::vector<float> ya_alone(max_tokens * 300), yb_alone(max_tokens * 77);
    for (int64_t t = 0; t < max_tokens; ++t) {
      MatMul(ctx, &x[t * n_in], 1, {{&a.w, &ya_alone[t * 300]}, {&b.w, &yb_alone[t * 77]}});
    }
    for (int64_t n_tokens : {2, 3, 4, 5, 8, 16, 24, 40}) {
      std::vector<float> ya(n_tokens * 300), yb(n_tokens * 77);
      MatMul(ctx, x.data(), n_tokens, {{&a.w, ya.data()}, {&b.w, yb.data()}});
      for (int64_t i = 0; i < n_tokens * 300; ++i) {
        ASSERT_EQ(Fp32ToBits(ya[i]), Fp32ToBits(ya_alone[i]))
            << quant::TypeName(type) << " n_tokens=" << n_tokens << " token " << i / 300 << " row "
            << i % 300;
      }
      for (int64_t i = 0; i < n_tokens * 77; ++i) {
        ASSERT_EQ(Fp32ToBits(yb[i]), Fp32ToBits(yb_alone[i]))
            << "second output, n_tokens=" << n_tokens << " token " << i / 77;
      }
    }
  }
}

}  // namespace
}  // namespace qwen::ops

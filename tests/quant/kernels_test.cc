// The SIMD levels against the scalar reference (bit for bit), and the quantized dot products
// against float dot products.
#include "inference/quant/kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "inference/common/fp16.h"
#include "tests/quant/quant_test_util.h"

namespace qwen::quant {
namespace {

using testing::ComputableTypes;
using testing::Fill;
using testing::RandomActivations;
using testing::RandomWeights;

uint32_t Id(GgmlType t) { return static_cast<uint32_t>(t); }

// Elements per test row: several blocks of every type, and not a multiple of 512 so that SIMD
// loops over pairs or quads of blocks meet a remainder.
constexpr int64_t kN = 256 * 5;

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& w, int64_t n) {
  std::vector<float> out(n);
  KernelsFor(Isa::kScalar).dequantize[Id(type)](w.data(), out.data(), n);
  return out;
}

std::vector<uint8_t> QuantizeActivation(const KernelTable& k, GgmlType type,
                                        const std::vector<float>& x) {
  std::vector<uint8_t> a(ActivationRowBytes(type, static_cast<int64_t>(x.size())));
  k.quantize_activation[Id(type)](x.data(), a.data(), static_cast<int64_t>(x.size()));
  return a;
}

// Float sums of up to a few thousand products in any order, with the integer parts exact: well
// within 1e-5 of the sum of magnitudes.
constexpr double kSumTolerance = 1e-5;

class SimdLevel : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(BestIsa()) < static_cast<int>(GetParam())) {
      GTEST_SKIP() << "CPU lacks " << IsaName(GetParam()) << " (best: " << IsaName(BestIsa())
                   << ")";
    }
  }
  const KernelTable& simd() const { return KernelsFor(GetParam()); }
  const KernelTable& scalar() const { return KernelsFor(Isa::kScalar); }
};

TEST_P(SimdLevel, TableIsThatLevelAndComplete) {
  EXPECT_EQ(simd().isa, GetParam());
  for (GgmlType t : ComputableTypes()) {
    EXPECT_NE(simd().dequantize[Id(t)], nullptr) << TypeName(t);
    EXPECT_NE(simd().quantize_activation[Id(t)], nullptr) << TypeName(t);
    EXPECT_NE(simd().dot_tile[Id(t)], nullptr) << TypeName(t);
  }
}

// SIMD dequantization performs ggml's float operations in the same order (products and
// differences, no fused multiply-add), so it is bit-exact.
TEST_P(SimdLevel, DequantizeIsBitExact) {
  std::mt19937 rng(1);
  for (GgmlType t : ComputableTypes()) {
    for (Fill fill : {Fill::kRealistic, Fill::kExtreme}) {
      // Odd block counts too: dequantize is also called on pieces of rows.
      for (int64_t n : {kN, Traits(t).block_size * 3, int64_t{256}}) {
        const auto w = RandomWeights(t, n, fill, rng);
        std::vector<float> want(n), got(n, -1.0f);
        scalar().dequantize[Id(t)](w.data(), want.data(), n);
        simd().dequantize[Id(t)](w.data(), got.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(Fp32ToBits(got[i]), Fp32ToBits(want[i]))
              << TypeName(t) << " n=" << n << " i=" << i << " " << got[i] << " vs " << want[i];
        }
      }
    }
  }
}

TEST_P(SimdLevel, QuantizeActivationIsByteIdentical) {
  std::mt19937 rng(2);
  for (GgmlType t : ComputableTypes()) {
    for (Fill fill : {Fill::kRealistic, Fill::kExtreme}) {
      for (int64_t n : {kN, int64_t{256}, int64_t{2048}}) {
        const auto x = RandomActivations(n, fill, rng);
        const auto want = QuantizeActivation(scalar(), t, x);
        const auto got = QuantizeActivation(simd(), t, x);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[i], want[i]) << TypeName(t) << " n=" << n << " byte " << i;
        }
      }
    }
  }
}

// Every product entry is the reference's bits (kernels.h): the same arithmetic at every level.
TEST_P(SimdLevel, DotEqualsScalarBitForBit) {
  std::mt19937 rng(3);
  for (GgmlType t : ComputableTypes()) {
    for (Fill fill : {Fill::kRealistic, Fill::kExtreme}) {
      for (int rep = 0; rep < 4; ++rep) {
        int64_t n = rep == 0 ? 256 : kN * (rep % 2 + 1);
        if (Traits(t).block_size == 1 && rep == 3) n = 1001;  // partial vectors
        const auto w = RandomWeights(t, n, fill, rng);
        const auto x = RandomActivations(n, fill, rng);
        const auto a = QuantizeActivation(scalar(), t, x);
        const float want = Dot(scalar(), t, w.data(), a.data(), n);
        const float got = Dot(simd(), t, w.data(), a.data(), n);
        ASSERT_EQ(Fp32ToBits(got), Fp32ToBits(want))
            << TypeName(t) << " n=" << n << " rep " << rep << ": " << got << " vs " << want;
      }
    }
  }
}

// Every column count a caller may use, including wide prefill tiles, with padded strides, and
// rows (19) that cross the kernels' groups of 8 and 16 and leave a short last group: every
// entry equals the scalar reference's dot product of its row and column, bit for bit.
TEST_P(SimdLevel, DotTileEqualsScalarDotBitForBit) {
  std::mt19937 rng(4);
  for (GgmlType t : ComputableTypes()) {
    // Float weights take any n: an odd one leaves partial vectors and a short last piece.
    const int64_t n = t == GgmlType::kQ8_0 ? 512 : Traits(t).block_size == 1 ? 1283 : kN;
    const int64_t n_rows = 19;
    const size_t w_row = RowBytes(t, n), w_stride = w_row + 64;
    const size_t a_row = ActivationRowBytes(t, n), a_stride = a_row + 36;
    std::vector<uint8_t> w(w_stride * n_rows);
    std::vector<std::vector<uint8_t>> w_rows;
    for (int64_t r = 0; r < n_rows; ++r) {
      w_rows.push_back(RandomWeights(t, n, r % 4 == 2 ? Fill::kExtreme : Fill::kRealistic, rng));
      std::memcpy(&w[r * w_stride], w_rows.back().data(), w_row);
    }
    for (int64_t n_cols : {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 33, 64}) {
      std::vector<uint8_t> a(a_stride * n_cols);
      std::vector<std::vector<uint8_t>> a_rows;
      for (int64_t c = 0; c < n_cols; ++c) {
        const auto x = RandomActivations(n, c % 3 == 2 ? Fill::kExtreme : Fill::kRealistic, rng);
        a_rows.push_back(QuantizeActivation(scalar(), t, x));
        std::memcpy(&a[c * a_stride], a_rows.back().data(), a_row);
      }
      const size_t y_stride = n_rows + 2;
      std::vector<float> y(y_stride * n_cols, -7.0f);
      simd().dot_tile[Id(t)](w.data(), w_stride, n_rows, a.data(), a_stride, n_cols, y.data(),
                             y_stride, n);
      for (int64_t c = 0; c < n_cols; ++c) {
        for (int64_t r = 0; r < n_rows; ++r) {
          const float want = Dot(scalar(), t, w_rows[r].data(), a_rows[c].data(), n);
          ASSERT_EQ(Fp32ToBits(y[c * y_stride + r]), Fp32ToBits(want))
              << TypeName(t) << " n_cols=" << n_cols << " r=" << r << " c=" << c << ": "
              << y[c * y_stride + r] << " vs " << want;
        }
        // The padding between output rows is not written.
        ASSERT_EQ(y[c * y_stride + n_rows], -7.0f);
        ASSERT_EQ(y[c * y_stride + n_rows + 1], -7.0f);
      }
    }
  }
}

// A column's results do not depend on the other columns of the call nor on where its rows fall
// in the tile: batched and unbatched decoding must give the same tokens. Bit for bit, for every
// column count (kernels switch between register and buffered column paths) and for row ranges
// that start anywhere. (Implied by the test above; kept as the statement of the promise the
// engine relies on, with activations quantized at the level itself.)
TEST_P(SimdLevel, DotTileColumnsAreIndependentBitForBit) {
  std::mt19937 rng(8);
  for (GgmlType t : ComputableTypes()) {
    const int64_t n = 256 * 9;
    const int64_t n_rows = 37, max_cols = 24;
    const size_t w_row = RowBytes(t, n), a_row = ActivationRowBytes(t, n);
    std::vector<uint8_t> w(w_row * n_rows), a(a_row * max_cols);
    for (int64_t r = 0; r < n_rows; ++r) {
      const auto row = RandomWeights(t, n, r % 5 == 3 ? Fill::kExtreme : Fill::kRealistic, rng);
      std::memcpy(&w[r * w_row], row.data(), w_row);
    }
    for (int64_t c = 0; c < max_cols; ++c) {
      const auto x = RandomActivations(n, c % 4 == 1 ? Fill::kExtreme : Fill::kRealistic, rng);
      const auto q = QuantizeActivation(simd(), t, x);
      std::memcpy(&a[c * a_row], q.data(), a_row);
    }
    // Column 0 alone over all rows is the reference.
    std::vector<float> want(n_rows);
    simd().dot_tile[Id(t)](w.data(), w_row, n_rows, a.data(), a_row, 1, want.data(), n_rows, n);
    for (int64_t n_cols : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 24}) {
      for (int64_t r0 : {0, 1, 5, 16, 21}) {
        const int64_t rows = n_rows - r0;
        std::vector<float> y(rows * n_cols);
        // Column 0 of the call is column 0 of the data; the others are distinct columns.
        simd().dot_tile[Id(t)](&w[r0 * w_row], w_row, rows, a.data(), a_row, n_cols, y.data(), rows,
                               n);
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(Fp32ToBits(y[r]), Fp32ToBits(want[r0 + r]))
              << TypeName(t) << " n_cols=" << n_cols << " r0=" << r0 << " r=" << r;
        }
        if (n_cols > 1) {
          // The last column against itself alone.
          std::vector<float> alone(rows);
          simd().dot_tile[Id(t)](&w[r0 * w_row], w_row, rows, &a[(n_cols - 1) * a_row], a_row, 1,
                                 alone.data(), rows, n);
          for (int64_t r = 0; r < rows; ++r) {
            ASSERT_EQ(Fp32ToBits(y[(n_cols - 1) * rows + r]), Fp32ToBits(alone[r]))
                << TypeName(t) << " last column, n_cols=" << n_cols << " r0=" << r0;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Levels, SimdLevel, ::testing::ValuesIn(AllIsas()),
    [](const ::testing::TestParamInfo<Isa>& info) { return std::string(IsaName(info.param)); });

// The scalar reference's integer-folded dot products equal the plain float dot product of the
// dequantized weights and dequantized activations: the folding of scales, offsets and minimums
// (through bsums and Q8_1's s) is algebra, not approximation.
TEST(ScalarReference, DotEqualsDequantizedDot) {
  std::mt19937 rng(5);
  const KernelTable& k = KernelsFor(Isa::kScalar);
  for (GgmlType t : ComputableTypes()) {
    for (Fill fill : {Fill::kRealistic, Fill::kExtreme}) {
      const auto w = RandomWeights(t, kN, fill, rng);
      const auto x = RandomActivations(kN, fill, rng);
      const auto a = QuantizeActivation(k, t, x);
      const auto wf = Dequantize(t, w, kN);
      std::vector<float> af(kN);
      DequantizeActivationRow(t, a.data(), af.data(), kN);
      double want = 0, mag = 0;
      for (int64_t i = 0; i < kN; ++i) {
        want += static_cast<double>(wf[i]) * af[i];
        mag += std::fabs(static_cast<double>(wf[i]) * af[i]);
      }
      double tol = 1e-6 * mag + 1e-30;
      if (ActivationType(t) == GgmlType::kQ8_1) {
        // s = d * sum(qs) is stored in half precision: the minimum's product with it carries
        // s's rounding, at most half a unit in its 11th bit.
        const auto* blocks = reinterpret_cast<const BlockQ8_1*>(a.data());
        const int m_off = 2;
        for (int64_t b = 0; b < kN / 32; ++b) {
          uint16_t mh;
          std::memcpy(&mh, &w[b * Traits(t).type_size + m_off], 2);
          tol += std::fabs(Fp16ToFp32(mh) * Fp16ToFp32(blocks[b].s)) * std::ldexp(1.0, -11);
        }
      }
      EXPECT_NEAR(Dot(k, t, w.data(), a.data(), kN), want, tol) << TypeName(t);
    }
  }
}

// Quantized activations against float ones. Q8 quantization rounds each activation to the
// nearest multiple of its block's scale d_a = amax / 127 (for Q8_0 / Q8_1: d_a rounded to half
// precision, which is the multiple actually used), so |x_i - q_i d_a| <= d_a / 2, and the
// quantized dot differs from the float dot sum_i w_i x_i by at most
//     E = sum over blocks of (d_a / 2) * sum_{i in block} |w_i|
// plus, for Q8_1, the half-precision rounding of s = d_a * sum(q) times each block's minimum
// |m| (|m * s| * 2^-11), plus float summation error (1e-5 of sum |w_i x_i|). The test asserts
// this bound and reports the typical relative error |dot_q - dot_f| / |dot_f|.
TEST(QuantizedDot, WithinActivationRoundingBound) {
  std::mt19937 rng(6);
  const KernelTable& k = Kernels();
  for (GgmlType t : ComputableTypes()) {
    const int64_t n = 4096;
    double rel_sum = 0, worst_fraction_of_bound = 0;
    const int reps = 20;
    for (int rep = 0; rep < reps; ++rep) {
      const auto w = RandomWeights(t, n, Fill::kRealistic, rng);
      const auto x = RandomActivations(n, Fill::kRealistic, rng);
      const auto a = QuantizeActivation(k, t, x);
      const auto wf = Dequantize(t, w, n);
      std::vector<float> af(n);
      DequantizeActivationRow(t, a.data(), af.data(), n);
      double dot_f = 0, mag = 0, bound = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot_f += static_cast<double>(wf[i]) * x[i];
        mag += std::fabs(static_cast<double>(wf[i]) * x[i]);
      }
      const GgmlType at = ActivationType(t);
      const int64_t ab = at == GgmlType::kQ8_K ? 256 : at == GgmlType::kF32 ? 1 : 32;
      for (int64_t b = 0; b < n / ab; ++b) {
        double amax = 0, wsum = 0;
        for (int64_t i = b * ab; i < (b + 1) * ab; ++i) {
          amax = std::fmax(amax, std::fabs(x[i]));
          wsum += std::fabs(wf[i]);
        }
        double d_a = 0;
        if (at == GgmlType::kQ8_K) d_a = static_cast<float>(amax) / 127.0f;
        if (at == GgmlType::kQ8_0 || at == GgmlType::kQ8_1) {
          d_a = Fp16ToFp32(Fp32ToFp16(static_cast<float>(amax) / 127.0f));
        }
        bound += d_a / 2 * wsum;
        if (at == GgmlType::kQ8_1) {
          const auto* blocks = reinterpret_cast<const BlockQ8_1*>(a.data());
          uint16_t mh;
          std::memcpy(&mh, &w[b * Traits(t).type_size + 2], 2);
          bound += std::fabs(Fp16ToFp32(mh) * Fp16ToFp32(blocks[b].s)) * std::ldexp(1.0, -11);
        }
      }
      bound += kSumTolerance * mag;
      const double dot_q = Dot(k, t, w.data(), a.data(), n);
      ASSERT_LE(std::fabs(dot_q - dot_f), bound) << TypeName(t) << " rep " << rep;
      rel_sum += std::fabs(dot_q - dot_f) / std::fabs(dot_f);
      worst_fraction_of_bound =
          std::fmax(worst_fraction_of_bound, std::fabs(dot_q - dot_f) / bound);
    }
    std::cout << "  " << TypeName(t) << ": mean |dot_q - dot_f| / |dot_f| = " << rel_sum / reps
              << ", worst error / bound = " << worst_fraction_of_bound << "\n";
  }
}

TEST(ActivationFormat, TypesAndRowBytes) {
  EXPECT_EQ(ActivationType(GgmlType::kF16), GgmlType::kF32);
  EXPECT_EQ(ActivationType(GgmlType::kBF16), GgmlType::kF32);
  EXPECT_EQ(ActivationType(GgmlType::kQ4_0), GgmlType::kQ8_0);
  EXPECT_EQ(ActivationType(GgmlType::kQ5_1), GgmlType::kQ8_1);
  EXPECT_EQ(ActivationType(GgmlType::kQ3_K), GgmlType::kQ8_K);
  EXPECT_EQ(ActivationRowBytes(GgmlType::kF16, 512), 2048u);
  EXPECT_EQ(ActivationRowBytes(GgmlType::kQ8_0, 512), 16u * 34);
  EXPECT_EQ(ActivationRowBytes(GgmlType::kQ4_1, 512), 16u * 36);
  EXPECT_EQ(ActivationRowBytes(GgmlType::kQ6_K, 512), 2u * 312);
}

// Q8_K: bsums are the sums of each 16 consecutive values, and the scale maps amax to 127.
TEST(ActivationFormat, Q8KScaleAndBlockSums) {
  std::mt19937 rng(7);
  const auto x = RandomActivations(512, Fill::kRealistic, rng);
  const auto a = QuantizeActivation(Kernels(), GgmlType::kQ4_K, x);
  std::vector<float> af(512);
  DequantizeActivationRow(GgmlType::kQ4_K, a.data(), af.data(), 512);
  const auto* blocks = reinterpret_cast<const BlockQ8_K*>(a.data());
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int i = 0; i < 256; ++i) amax = std::fmax(amax, std::fabs(x[b * 256 + i]));
    EXPECT_EQ(blocks[b].d, amax / 127.0f);
    for (int s = 0; s < 16; ++s) {
      double sum = 0;
      for (int i = 0; i < 16; ++i) sum += af[b * 256 + s * 16 + i] / blocks[b].d;
      EXPECT_EQ(blocks[b].bsums[s], static_cast<int>(std::lround(sum))) << b << " " << s;
    }
    for (int i = 0; i < 256; ++i) {
      EXPECT_LE(std::fabs(af[b * 256 + i] - x[b * 256 + i]), blocks[b].d / 2 * (1 + 1e-6));
    }
  }
}

// The sums the many-column kernels read (bsums32, neg128_sum) follow from bsums, on every ISA
// level, and every level writes the same block bytes.
TEST(ActivationFormat, Q8KDerivedSums) {
  std::mt19937 rng(8);
  const auto x = RandomActivations(1024, Fill::kRealistic, rng);
  const auto ref = QuantizeActivation(KernelsFor(Isa::kScalar), GgmlType::kQ4_K, x);
  for (Isa isa : AllIsas()) {
    if (static_cast<int>(isa) > static_cast<int>(BestIsa())) continue;
    const auto a = QuantizeActivation(KernelsFor(isa), GgmlType::kQ4_K, x);
    EXPECT_EQ(a, ref) << IsaName(isa);
    const auto* blocks = reinterpret_cast<const BlockQ8_K*>(a.data());
    for (int b = 0; b < 4; ++b) {
      int total = 0;
      for (int j = 0; j < 8; ++j) {
        const int s32 = blocks[b].bsums[2 * j] + blocks[b].bsums[2 * j + 1];
        EXPECT_EQ(blocks[b].bsums32[j], s32) << IsaName(isa) << " " << b << " " << j;
        total += s32;
      }
      int sum = 0;
      std::vector<float> af(256);
      DequantizeActivationRow(GgmlType::kQ4_K, a.data() + b * sizeof(BlockQ8_K), af.data(), 256);
      for (float v : af) sum += static_cast<int>(std::lround(v / blocks[b].d));
      EXPECT_EQ(sum, total) << IsaName(isa) << " " << b;
      EXPECT_EQ(blocks[b].neg128_sum, -128 * sum) << IsaName(isa) << " " << b;
    }
  }
}

}  // namespace
}  // namespace qwen::quant

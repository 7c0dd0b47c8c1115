// Packed weights (KernelTable::pack16 / dot_tile_packed) against dot_tile on the file's rows:
// the same bits for every column count, nothing written outside y's entries, and a packed copy
// that is a pure function of the rows.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "inference/common/fp16.h"
#include "inference/quant/kernels.h"
#include "tests/quant/quant_test_util.h"

namespace qwen::quant {
namespace {

using testing::Fill;
using testing::RandomActivations;
using testing::RandomWeights;

uint32_t Id(GgmlType t) { return static_cast<uint32_t>(t); }

#if defined(__aarch64__)

// The aarch64 levels have no packed layout: the engine's callers use dot_tile on the file's rows
// (which kernels_test.cc compares with the scalar reference). A level that gains one must come
// with the tests below.
TEST(PackedLevels, NoAarch64LevelHasPackedKernels) {
  for (Isa isa : AllIsas()) {
    const KernelTable& k = KernelsFor(isa);
    EXPECT_EQ(k.packed_format, nullptr) << IsaName(isa);
    for (GgmlType t : testing::ComputableTypes()) {
      EXPECT_EQ(k.pack16[Id(t)], nullptr) << IsaName(isa) << " " << TypeName(t);
      EXPECT_EQ(k.dot_tile_packed[Id(t)], nullptr) << IsaName(isa) << " " << TypeName(t);
    }
  }
}

#else  // x86-64

// Every level with packed kernels has them for these; some have more (AVX2: Q8_0).
const GgmlType kPackedTypes[] = {GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                 GgmlType::kQ6_K};

// The types this level packs.
std::vector<GgmlType> PackedTypesOf(const KernelTable& k) {
  std::vector<GgmlType> out;
  for (GgmlType t : testing::ComputableTypes()) {
    if (k.pack16[static_cast<uint32_t>(t)] != nullptr) out.push_back(t);
  }
  return out;
}

constexpr float kGuard = -7.0f;

// Each level with packed kernels (AVX2, AVX-512, AVX-512 with GFNI: the last two share one
// layout, AVX2 has its own). Every one must give the scalar reference's bits.
class PackedTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(BestIsa()) < static_cast<int>(GetParam())) {
      GTEST_SKIP() << "CPU lacks " << IsaName(GetParam()) << " (best: " << IsaName(BestIsa())
                   << ")";
    }
  }
  const KernelTable& k() const { return KernelsFor(GetParam()); }
  // The level whose tiles every level's results must equal bit for bit.
  const KernelTable& base() const { return KernelsFor(Isa::kScalar); }
};

// `n_rows` random rows of `type`, `w_stride` bytes apart, some blocks extreme.
std::vector<uint8_t> RandomMatrix(GgmlType type, int64_t n, int64_t n_rows, size_t w_stride,
                                  std::mt19937& rng) {
  std::vector<uint8_t> w(w_stride * n_rows, 0xA5);
  for (int64_t r = 0; r < n_rows; ++r) {
    const auto row = RandomWeights(type, n, r % 7 == 3 ? Fill::kExtreme : Fill::kRealistic, rng);
    std::memcpy(&w[r * w_stride], row.data(), row.size());
  }
  return w;
}

// The packed copy of n_rows (a multiple of 16) rows, groups at `offset` + g * group bytes of a
// buffer (offset 0 or not a multiple of 64, to exercise unaligned groups).
std::vector<uint8_t> Pack(const KernelTable& k, GgmlType type, const uint8_t* w, size_t w_stride,
                          int64_t n_rows, int64_t n, size_t offset) {
  const size_t group = 16 * RowBytes(type, n);
  std::vector<uint8_t> p(offset + group * (n_rows / 16) + 64, 0x5A);
  for (int64_t g = 0; g < n_rows / 16; ++g) {
    k.pack16[Id(type)](w + g * 16 * w_stride, w_stride, n, p.data() + offset + g * group);
  }
  return p;
}

TEST_P(PackedTest, TableHasPackedKernelsForTheKQuants) {
  ASSERT_NE(k().packed_format, nullptr);
  EXPECT_GT(std::strlen(k().packed_format), 0u);
  for (GgmlType t : kPackedTypes) {
    EXPECT_NE(k().pack16[Id(t)], nullptr) << TypeName(t);
    EXPECT_NE(k().dot_tile_packed[Id(t)], nullptr) << TypeName(t);
  }
  // The scalar level has no packed kernels (callers fall back to dot_tile).
  EXPECT_EQ(KernelsFor(Isa::kScalar).packed_format, nullptr);
  for (GgmlType t : kPackedTypes) {
    EXPECT_EQ(KernelsFor(Isa::kScalar).pack16[Id(t)], nullptr) << TypeName(t);
    EXPECT_EQ(KernelsFor(Isa::kScalar).dot_tile_packed[Id(t)], nullptr) << TypeName(t);
  }
  for (GgmlType t : testing::ComputableTypes()) {
    // pack16 and dot_tile_packed come together.
    EXPECT_EQ(k().pack16[Id(t)] == nullptr, k().dot_tile_packed[Id(t)] == nullptr) << TypeName(t);
  }
  for (GgmlType t : {GgmlType::kQ2_K, GgmlType::kF16, GgmlType::kF32}) {
    EXPECT_EQ(k().pack16[Id(t)], nullptr) << TypeName(t);
  }
  // The layouts' names tell them apart (they key the stored copies): AVX-512 with and without
  // GFNI share one, AVX2's differs.
  if (GetParam() != Isa::kAvx2 && static_cast<int>(BestIsa()) >= static_cast<int>(Isa::kAvx2)) {
    EXPECT_STRNE(k().packed_format, KernelsFor(Isa::kAvx2).packed_format);
  }
  if (GetParam() == Isa::kAvx512Gfni) {
    EXPECT_STREQ(k().packed_format, KernelsFor(Isa::kAvx512).packed_format);
  }
}

// pack16 writes exactly 16 * RowBytes bytes and depends only on the rows' bytes (not on the
// stride's padding nor on what dst held). (That it keeps all of them is what the products below
// check: AVX2 re-encodes Q3_K and Q6_K weights, so its copy is not a permutation of the bytes.)
TEST_P(PackedTest, Pack16IsSameSizeAndDeterministic) {
  std::mt19937 rng(21);
  for (GgmlType t : PackedTypesOf(k())) {
    for (int64_t n : {int64_t{256}, int64_t{2560}}) {
      const size_t row = RowBytes(t, n), group = 16 * row;
      const auto w = RandomMatrix(t, n, 16, row, rng);
      // The same rows with padding between them.
      const size_t padded = row + 40;
      std::vector<uint8_t> wp(padded * 16, 0x33);
      for (int r = 0; r < 16; ++r) std::memcpy(&wp[r * padded], &w[r * row], row);
      std::vector<uint8_t> a(group + 128, 0x00), b(group + 128, 0xFF);
      k().pack16[Id(t)](w.data(), row, n, a.data() + 64);
      k().pack16[Id(t)](wp.data(), padded, n, b.data() + 64);
      for (int i = 0; i < 64; ++i) {
        ASSERT_EQ(a[i], 0x00) << TypeName(t) << " wrote before dst";
        ASSERT_EQ(a[64 + group + i], 0x00) << TypeName(t) << " wrote past 16 * RowBytes";
        ASSERT_EQ(b[i], 0xFF) << TypeName(t) << " wrote before dst";
        ASSERT_EQ(b[64 + group + i], 0xFF) << TypeName(t) << " wrote past 16 * RowBytes";
      }
      ASSERT_EQ(std::memcmp(a.data() + 64, b.data() + 64, group), 0) << TypeName(t) << " n=" << n;
      // Levels that name the same layout write the same bytes: a copy written by one serves
      // the other.
      for (Isa other : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Gfni}) {
        if (static_cast<int>(other) > static_cast<int>(BestIsa())) continue;
        const KernelTable& o = KernelsFor(other);
        if (std::strcmp(o.packed_format, k().packed_format) != 0) continue;
        std::vector<uint8_t> c(group);
        o.pack16[Id(t)](w.data(), row, n, c.data());
        ASSERT_EQ(std::memcmp(a.data() + 64, c.data(), group), 0)
            << TypeName(t) << " n=" << n << " " << IsaName(other);
      }
    }
  }
}

// dot_tile_packed and dot_tile of this level == the scalar reference's dot_tile on the same
// rows, bit for bit, for every column count; only y's
// entries written; activation rows off the cache lines (4-byte aligned, as their float scales
// need) and output strides that are not multiples of anything; groups at unaligned addresses.
TEST_P(PackedTest, DotTilePackedEqualsDotTileBitForBit) {
  std::mt19937 rng(22);
  for (GgmlType t : PackedTypesOf(k())) {
    for (int64_t n : {int64_t{256}, int64_t{2560}, int64_t{9216}}) {
      for (int64_t n_groups : {1, 2, 3, 4}) {
        if (n == 9216 && n_groups != 2) continue;  // time: one large case per type
        const int64_t n_rows = 16 * n_groups;
        const size_t row = RowBytes(t, n), w_stride = row + (n_groups % 2 ? 0 : 24);
        const auto w = RandomMatrix(t, n, n_rows, w_stride, rng);
        const size_t offset = n_groups == 3 ? 32 : n_groups == 4 ? 7 : 0;
        const auto packed = Pack(k(), t, w.data(), w_stride, n_rows, n, offset);
        const size_t a_row = ActivationRowBytes(t, n), a_stride = a_row + 4;
        for (int64_t n_cols : {1, 2, 3, 4, 5, 7, 8, 9, 16, 23, 24, 25, 33, 64, 200}) {
          if (n == 9216 && n_cols > 64) continue;
          if (n_groups > 2 && n_cols == 200) continue;
          std::vector<uint8_t> a(a_stride * n_cols + 4);
          for (int64_t c = 0; c < n_cols; ++c) {
            const auto x =
                RandomActivations(n, c % 5 == 4 ? Fill::kExtreme : Fill::kRealistic, rng);
            k().quantize_activation[Id(t)](x.data(), &a[4 + c * a_stride], n);
          }
          const uint8_t* ap = &a[4];  // activation rows not 64-byte aligned
          const size_t y_stride = n_rows + 3;
          std::vector<float> want(y_stride * n_cols + 5, kGuard);
          std::vector<float> got(y_stride * n_cols + 5, kGuard);
          std::vector<float> tile(y_stride * n_cols + 5, kGuard);
          base().dot_tile[Id(t)](w.data(), w_stride, n_rows, ap, a_stride, n_cols, want.data() + 1,
                                 y_stride, n);
          k().dot_tile[Id(t)](w.data(), w_stride, n_rows, ap, a_stride, n_cols, tile.data() + 1,
                              y_stride, n);
          k().dot_tile_packed[Id(t)](packed.data() + offset, n_groups, ap, a_stride, n_cols,
                                     got.data() + 1, y_stride, n);
          const std::string what = std::string(TypeName(t)) + " n=" + std::to_string(n) +
                                   " groups=" + std::to_string(n_groups) +
                                   " cols=" + std::to_string(n_cols);
          for (size_t i = 0; i < got.size(); ++i) {
            const int64_t j = static_cast<int64_t>(i) - 1;
            const bool entry = j >= 0 && j / static_cast<int64_t>(y_stride) < n_cols &&
                               j % static_cast<int64_t>(y_stride) < n_rows;
            if (!entry) {
              ASSERT_EQ(Fp32ToBits(got[i]), Fp32ToBits(kGuard)) << what << " wrote y[" << j << "]";
            }
          }
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << what;
          ASSERT_EQ(std::memcmp(tile.data(), want.data(), got.size() * sizeof(float)), 0)
              << what << " (dot_tile)";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(PackedLevels, PackedTest,
                         ::testing::Values(Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Gfni),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

#endif

}  // namespace
}  // namespace qwen::quant

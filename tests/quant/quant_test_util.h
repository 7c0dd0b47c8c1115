// Random weight and activation rows for the kernel tests and the benchmark.
#ifndef QWEN_TESTS_QUANT_QUANT_TEST_UTIL_H_
#define QWEN_TESTS_QUANT_QUANT_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "inference/common/fp16.h"
#include "inference/quant/types.h"

namespace qwen::quant::testing {

// The types the engine computes with, in ggml's order.
inline const std::vector<GgmlType>& ComputableTypes() {
  static const std::vector<GgmlType> types = {
      GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
      GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ2_K, GgmlType::kQ3_K,
      GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};
  return types;
}

// Byte offsets of the half-precision scale fields inside one block of a quantized type: the
// only bytes that random filling must not turn into infinities or NaNs.
inline std::vector<int> HalfFieldOffsets(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return {0};
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      return {0, 2};
    case GgmlType::kQ2_K:
      return {80, 82};
    case GgmlType::kQ3_K:
      return {108};
    case GgmlType::kQ6_K:
      return {208};
    default:
      return {};
  }
}

enum class Fill {
  kRealistic,  // random bits, scales of trained weights (about 1e-4 .. 1e-2, either sign)
  kExtreme,    // a mix of all-zero blocks, all-ones bits with the largest scales, and random
};

// A weight row of `n` elements of `type`, random under `fill`.
inline std::vector<uint8_t> RandomWeights(GgmlType type, int64_t n, Fill fill, std::mt19937& rng) {
  const TypeTraits& t = Traits(type);
  const int64_t n_blocks = n / t.block_size;
  std::vector<uint8_t> row(n_blocks * t.type_size);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const bool extreme = fill == Fill::kExtreme;
  if (t.block_size == 1) {
    for (int64_t i = 0; i < n; ++i) {
      float v = normal(rng);
      if (extreme) {
        const int kind = byte(rng) % 4;
        v = kind == 0 ? 0.0f : kind == 1 ? (byte(rng) % 2 ? 60000.0f : -60000.0f) : v * 100;
      }
      if (type == GgmlType::kF32) std::memcpy(&row[i * 4], &v, 4);
      const uint16_t h = type == GgmlType::kF16 ? Fp32ToFp16(v) : Fp32ToBf16(v);
      if (type != GgmlType::kF32) std::memcpy(&row[i * 2], &h, 2);
    }
    return row;
  }
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* block = &row[b * t.type_size];
    const int kind = extreme ? byte(rng) % 3 : 2;
    for (int64_t i = 0; i < t.type_size; ++i) block[i] = kind == 0 ? 0 : kind == 1 ? 0xFF : byte(rng);
    for (int off : HalfFieldOffsets(type)) {
      float scale;
      if (kind == 0) {
        scale = 0.0f;
      } else if (kind == 1) {
        scale = byte(rng) % 2 ? 65504.0f : -65504.0f;
      } else {
        scale = std::pow(10.0f, -4.0f + 2.0f * unit(rng)) * (byte(rng) % 4 == 0 ? -1.0f : 1.0f);
        if (extreme && byte(rng) % 4 == 0) scale = 1e-7f;  // a subnormal half
      }
      const uint16_t h = Fp32ToFp16(scale);
      std::memcpy(block + off, &h, 2);
    }
  }
  return row;
}

// An activation row: normal values, and under kExtreme some blocks of zeros, some with one large
// outlier, and some whose values sit exactly on rounding ties.
inline std::vector<float> RandomActivations(int64_t n, Fill fill, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 7);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  if (fill == Fill::kExtreme) {
    for (int64_t b = 0; b + 32 <= n; b += 32) {
      switch (pick(rng)) {
        case 0:
          for (int64_t i = b; i < b + 32; ++i) x[i] = 0.0f;
          break;
        case 1:
          x[b + pick(rng)] = 1000.0f;
          break;
        case 2:
          // amax 127 makes d exactly 1, so k + 0.5 is a tie that must round to even.
          for (int64_t i = b; i < b + 32; ++i) x[i] = static_cast<float>(static_cast<int>(i % 64) - 32) + 0.5f;
          x[b] = 127.0f;
          break;
        default:
          break;
      }
    }
  }
  return x;
}

}  // namespace qwen::quant::testing

#endif  // QWEN_TESTS_QUANT_QUANT_TEST_UTIL_H_

// Private to inference/quant: the weight block layouts (ggml's, byte for byte) and the hooks by
// which each instruction-set translation unit fills a KernelTable.
//
// This header is included by translation units compiled with different -m flags. It therefore
// holds only plain structs, constants and function declarations: no inline functions, templates
// or constexpr functions, whose out-of-line copies the linker could take from an AVX-512 unit
// for a caller that must run on any x86-64.
#ifndef QWEN_INFERENCE_QUANT_KERNELS_INTERNAL_H_
#define QWEN_INFERENCE_QUANT_KERNELS_INTERNAL_H_

#include <cstdint>

#include "inference/quant/kernels.h"

namespace qwen::quant::internal {

// Weight blocks. `d`, `m`, `dmin` are IEEE half floats stored as their bits.

// 32 weights d * (q - 8). qs[j] holds weight j in its low nibble and weight j + 16 in its high.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18);

// 32 weights d * q + m, q in [0, 15], nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20);

// 32 weights d * (q - 16), q 5 bits: low 4 as Q4_0, bit 4 of weight j is bit j of qh
// (little-endian 32-bit word).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22);

// 32 weights d * q + m, q 5 bits laid out as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24);

// 32 weights d * qs[j]. Same bytes as the activation block BlockQ8_0.
using BlockQ8_0W = BlockQ8_0;

// 256 weights in 16 sub-blocks of 16: d * (scales[s] & 15) * q - dmin * (scales[s] >> 4),
// q 2 bits. Weight 128 h + 32 g + l (h < 2, g < 4, l < 32) is bits 2g, 2g+1 of qs[32 h + l] and
// lies in sub-block 8 h + 2 g + l / 16.
struct BlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// 256 weights in 16 sub-blocks of 16: d * (scale[s] - 32) * q with q in [-4, 3]. Weight
// 128 h + 32 g + l has its low 2 bits at bits 2g, 2g+1 of qs[32 h + l]; q = low - 4 unless bit
// 4 h + g of hmask[l] is set. Sub-block as Q2_K. The 16 6-bit scales are packed in 12 bytes:
// low nibble of scale s in scales[s % 8] (low nibble for s < 8, high for s >= 8), high 2 bits at
// bits 2 (s / 4), 2 (s / 4) + 1 of scales[8 + s % 4].
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// 256 weights in 8 sub-blocks of 32: d * sc[j] * q - dmin * mn[j], q in [0, 15], sc and mn 6 bits
// packed in `scales` (see the scalar reference). Weight 64 c + l (c < 4, l < 32) is the low
// nibble of qs[32 c + l] (sub-block 2c); weight 64 c + 32 + l is its high nibble (sub-block
// 2c + 1).
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q4_K with a fifth bit: bit 4 of weight 64 c + l is bit 2c of qh[l], of weight 64 c + 32 + l
// bit 2c + 1 of qh[l].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 256 weights in 16 sub-blocks of 16: d * scales[s] * (q - 32), q 6 bits. Weight
// 128 h + 32 g + l: low 4 bits are the low (g < 2) or high (g >= 2) nibble of
// ql[64 h + 32 (g % 2) + l], high 2 bits are bits 2g, 2g+1 of qh[32 h + l].
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// BlockQ8_K stores its 256 values interleaved so that SIMD code can give each 32-bit lane one
// 16-value sub-block: value i = 16 s + 4 k + b (s < 16, k < 4, b < 4) is at qs[64 k + 4 s + b].
// Loading qs in four 64-byte pieces thus puts 4 values of sub-block s in lane s of every piece,
// and one integer accumulator per lane collects a whole sub-block, whose scale is applied once.
// bsums[s] is the sum of values 16 s .. 16 s + 15. The scalar reference reads and writes qs
// through this mapping (Q8KSlot in kernels_scalar.cc); nothing outside inference/quant depends
// on it.

// The fields of a Q8_K block that follow from its bsums; every quantizer calls it last.
inline void FinishQ8K(BlockQ8_K* b) {
  int32_t sum = 0;
  for (int j = 0; j < 8; ++j) {
    b->bsums32[j] = static_cast<int16_t>(b->bsums[2 * j] + b->bsums[2 * j + 1]);
    sum += b->bsums32[j];
  }
  b->neg128_sum = -128 * sum;
}

// Table filling, one per translation unit. Each overwrites the entries it implements faster
// and leaves the others as they are (the scalar ones, filled first).
void FillScalarKernels(KernelTable* table);
void FillAvx2Kernels(KernelTable* table);
// gemm_avx2.cc: the k-quant products (8 rows in the lanes) and their packed layout.
void FillAvx2GemmKernels(KernelTable* table);
void FillAvx512Kernels(KernelTable* table);
// gemm_avx512.cc: the k-quant tiles with weight rows in the vector lanes (overrides dot_tile).
// With `gfni` (only on a CPU that has it) the one-column Q3_K product on packed weights moves
// weight bits with GFNI; the results and the packed layout are the same either way.
void FillAvx512GemmKernels(KernelTable* table, bool gfni);

// aarch64 (kernels_neon.cc, kernels_neondot.cc): the quantized and float products for the
// ARMv8.0 Advanced SIMD baseline, and the same with SDOT (ARMv8.2 dot product). No packed layout.
void FillNeonKernels(KernelTable* table);
void FillNeonDotKernels(KernelTable* table);

// DequantizeActivationRow's body, with the activation type already resolved.
void DequantizeActivationScalar(GgmlType activation_type, const void* a, float* dst, int64_t n);

}  // namespace qwen::quant::internal

#endif  // QWEN_INFERENCE_QUANT_KERNELS_INTERNAL_H_

// Row kernels for every weight type the engine computes with: dequantization, activation
// quantization and dot products. One interface; a scalar reference and SIMD versions behind it.
//
// What the levels promise (tests/quant/kernels_test.cc checks every level against the scalar
// reference, bit for bit): dequantize is bit-exact (and equals ggml's dequantization),
// quantize_activation writes the same bytes, and dot, dot_tile and dot_tile_packed give the
// SAME BITS at every level, for every row and column of every call whatever the other rows and
// columns of the call. So a sequence's products do not depend on what is batched with it nor on
// the CPU's instruction set. The arithmetic, which the scalar reference spells out:
// - F32, F16, BF16 weights (activations stay float): one fused multiply-add chain in index
//   order, acc = fma(w_i, x_i, acc) from acc = +0.
// - Quantized weights: per block, exact integers S (and M for types with minimums), then
//   acc = fma(float(S), d * da, acc) (and acc = fma(float(M), -dmin * da, acc)), blocks in order
//   from acc = 0; Q4_1 / Q5_1 add acc = fma(m, s_a, acc) after S. d, dmin, m are the weight
//   block's scales, da (and s_a) the activation block's. S is the block's sum over sub-blocks of
//   integer scale times integer dot product (Q3_K: (sc - 32) with q in [-4, 3]; Q6_K: signed sc
//   with q in [-32, 31]; Q4_K / Q5_K: sc_j over 32 weights; Q2_K: sc & 15), M the sum of
//   integer minimums times the activation sums of their sub-blocks.
// A quantized dot differs from the float dot sum w_i x_i by the activation rounding: at most sum
// over activation blocks of (d_a / 2) * sum |w_i| (d_a = the block's scale), plus for Q8_1 the
// half-precision rounding of its s, plus float rounding.
#ifndef QWEN_INFERENCE_QUANT_KERNELS_H_
#define QWEN_INFERENCE_QUANT_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "inference/common/cpu_features.h"
#include "inference/quant/types.h"

namespace qwen::quant {

// Activation blocks that the quantized dot products consume.
// Q8_0: 32 values, one f16 scale. For Q4_0, Q5_0 and Q8_0 weights.
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q8_1: 32 values, f16 scale and f16 d * sum(qs). For Q4_1 and Q5_1 weights.
struct BlockQ8_1 {
  uint16_t d;  // f16
  uint16_t s;  // f16, d * sum(qs)
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_1) == 36);

// Q8_K: 256 values, a float scale and sums of the values (which fold the weight formats'
// offsets and minimums into a few multiplies). For all k-quant weights. The values are stored
// interleaved for the SIMD kernels, not in natural order: read them through
// DequantizeActivationRow. bsums[s] sums values 16 s .. 16 s + 15 of the natural order;
// bsums32 and neg128_sum follow from bsums (FinishQ8K in kernels_internal.h) and are stored
// because the many-column kernels would otherwise derive them again for every 16 weight rows.
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
  int16_t bsums32[8];  // bsums[2 j] + bsums[2 j + 1]: values 32 j .. 32 j + 31
  int32_t neg128_sum;  // -128 times the sum of the 256 values
};
static_assert(sizeof(BlockQ8_K) == 312);

// The format a weight type's dot product wants its activations in. F32 for F32, F16 and BF16
// weights (activations stay float), Q8_0 / Q8_1 / Q8_K for the quantized types.
GgmlType ActivationType(GgmlType weight_type);

// Bytes of one activation row of `n` elements in ActivationType(weight_type).
size_t ActivationRowBytes(GgmlType weight_type, int64_t n);

// Function tables for one instruction-set level. Every entry is set for every type that
// Traits(type).computable names; a level without a faster version of an entry uses the scalar
// one. `n` is always a multiple of the type's block size.
//
// All functions are pure (no shared state) and thread-safe.
struct KernelTable {
  Isa isa = Isa::kScalar;

  // Dequantizes `n` elements of `type` to float32.
  void (*dequantize[40])(const void* src, float* dst, int64_t n) = {};

  // Quantizes `n` floats into ActivationType(type) for the dot products of `type`. For the float
  // activation types this is a plain copy.
  void (*quantize_activation[40])(const float* x, void* dst, int64_t n) = {};

  // Tile product: y[c * y_stride + r] = the dot product of weight row r with activation row c
  // (quantized with quantize_activation[type]) for r < n_rows, c < n_cols, with
  // weight rows `w_stride` bytes apart and activation rows `a_stride` bytes apart (activation
  // rows 4-byte aligned: their blocks start with a float or half scale). Reads each
  // weight block once for all columns, which is what makes batched decode and prefill cheaper
  // than one dot per column. Any column count works, from 1 (decode) to a whole prefill chunk.
  // Nothing outside the n_rows x n_cols entries of y is written.
  //
  // Every entry is the same bits whatever the rest of the call (see the top of this file).
  //
  // AVX-512, Q3_K..Q6_K (gemm_avx512.cc): 1-4 columns run a matrix-vector kernel (rows
  // unpacked one at a time, lanes = sub-blocks), more columns a tile kernel (16 rows per
  // unpack, lanes = rows, one vpdpbusd per 4 weights x 16 rows x column). AVX2
  // (kernels_avx2.cc, gemm_avx2.cc): 8 rows in the lanes. Up to 96 KiB of stack.
  void (*dot_tile[40])(const void* w, size_t w_stride, int64_t n_rows, const void* a,
                       size_t a_stride, int64_t n_cols, float* y, size_t y_stride, int64_t n) = {};

  // Packed weights: a copy of a matrix made once at load, in which each 16 consecutive rows are
  // rearranged so that dot_tile_packed loads its per-block vectors (rows in the lanes) instead of
  // transposing scattered rows on every call, and reads sequential streams. Set where that is
  // faster (Q3_K, Q4_K, Q5_K, Q6_K at AVX2 and AVX-512, each level with its own layout);
  // elsewhere the entries are null and callers use dot_tile on the file's rows.
  //
  // Name of the packed layout of this level's pack16 / dot_tile_packed (part of the key of any
  // stored packed copy: a layout change must change it), nullptr if the level has none.
  const char* packed_format = nullptr;

  // Packs 16 rows (row r at w + r * w_stride, n weights each, n a multiple of the block size)
  // into dst: exactly 16 * RowBytes(type, n) bytes (the same size as the rows), a pure function
  // of the rows' bytes. dst need not be aligned, but dot_tile_packed is fastest when every
  // group starts 64-byte aligned.
  void (*pack16[40])(const void* w, size_t w_stride, int64_t n, void* dst) = {};

  // dot_tile over 16 * n_groups rows stored as n_groups consecutive pack16 outputs (group g at
  // wp + g * 16 * RowBytes(type, n)): y[c * y_stride + r] = dot(row r, column c), the same bits
  // as dot_tile, for every column count. Nothing outside
  // the 16 n_groups x n_cols entries of y is written. Up to 96 KiB of stack.
  void (*dot_tile_packed[40])(const void* wp, int64_t n_groups, const void* a, size_t a_stride,
                              int64_t n_cols, float* y, size_t y_stride, int64_t n) = {};
};

// The table for `isa`: exactly that level's kernels, or the highest level at or below it that
// this CPU supports (so tests can ask for every level without crashing on an older CPU).
const KernelTable& KernelsFor(Isa isa);

// The table the engine uses: KernelsFor(ActiveIsa()).
const KernelTable& Kernels();

// Convenience wrappers over Kernels().
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// One row times one column with `k`'s dot_tile (tests and debugging).
float Dot(const KernelTable& k, GgmlType type, const void* w, const void* a, int64_t n);

// The float values an activation row quantized by quantize_activation[weight_type] stands for
// (value times its block's scale), in natural order. Scalar code, for tests and debugging: the
// order of values inside a BlockQ8_K is the kernels' business (see kernels_internal.h).
void DequantizeActivationRow(GgmlType weight_type, const void* a, float* dst, int64_t n);

}  // namespace qwen::quant

#endif  // QWEN_INFERENCE_QUANT_KERNELS_H_

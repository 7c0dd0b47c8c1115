// AVX2 + FMA + F16C kernels. Compiled with those flags and only ever called after run-time
// dispatch found the CPU has them.
//
// Everything lives in an anonymous namespace and uses intrinsics and plain loops only (see
// kernels_avx512.cc for why); only FillAvx2Kernels is visible outside.
//
// Float weights, legacy 32-weight blocks, activation quantization and the k-quants'
// dequantization. The k-quant products are in gemm_avx2.cc. Every product computes the
// reference's arithmetic exactly (kernels.h): the same bits as the scalar level.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {
namespace {

#define QWEN_INLINE inline __attribute__((always_inline))

constexpr int kQK = 32;
constexpr int kQKK = 256;
constexpr int kPrefetchBytes = 1024;

QWEN_INLINE float Half(uint16_t h) { return _cvtsh_ss(h); }
QWEN_INLINE uint16_t ToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

QWEN_INLINE float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

QWEN_INLINE int HorizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

QWEN_INLINE float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// In place: v[i] lane j becomes v[j] lane i (8 x 8 dwords).
QWEN_INLINE void Transpose8x8(__m256i* v) {
  __m256i a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    b[4 * i] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int x = 0; x < 4; ++x) {
    v[x] = _mm256_permute2x128_si256(b[x], b[4 + x], 0x20);
    v[4 + x] = _mm256_permute2x128_si256(b[x], b[4 + x], 0x31);
  }
}

// The first `rows` (of 8) floats at y, the others zero.
QWEN_INLINE __m256 LoadRows(const float* y, int rows) {
  if (rows == 8) return _mm256_loadu_ps(y);
  alignas(32) float t[8] = {};
  for (int r = 0; r < rows; ++r) t[r] = y[r];
  return _mm256_load_ps(t);
}

// Writes the first `rows` (of 8) lanes of v to y.
QWEN_INLINE void StoreRows(float* y, __m256 v, int rows) {
  if (rows == 8) {
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int r = 0; r < rows; ++r) y[r] = t[r];
}

// ============================== Float weights ==============================

struct F32Row {
  static QWEN_INLINE __m256 Load(const void* p, int64_t i) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  }
  static QWEN_INLINE float One(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
};

struct F16Row {
  static QWEN_INLINE __m256 Load(const void* p, int64_t i) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  }
  static QWEN_INLINE float One(const void* p, int64_t i) {
    return Half(static_cast<const uint16_t*>(p)[i]);
  }
};

struct BF16Row {
  static QWEN_INLINE __m256 Load(const void* p, int64_t i) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static QWEN_INLINE float One(const void* p, int64_t i) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
};

template <class Row>
void DequantFloat(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, Row::Load(src, i));
  for (; i < n; ++i) dst[i] = Row::One(src, i);
}

// Float tiles: rows in the lanes, one fused multiply-add per weight and column, in index order,
// so entry (r, c) is exactly the chain acc = fma(w_ri, x_ci, acc) of the reference. A chunk of
// 16 rows is transposed into two panels (element i of 8 rows as one vector), which every column
// then reads; the running sums live in y between chunks.
constexpr int64_t kFloatChunk = 256;
constexpr int64_t kXStride = kFloatChunk + 16;  // floats between column copies
constexpr int kFloatCols = 6;  // columns per register tile: 16 rows x 6 columns = 12 accumulators

// Transposes 8 rows (ptrs) x elements [k0, k0 + kc) into panel[i][8] (row r in lane r).
template <class Row>
QWEN_INLINE void FillPanel(const uint8_t* const* ptrs, int64_t k0, int64_t kc, float* panel) {
  int64_t i = 0;
  for (; i + 8 <= kc; i += 8) {
    __m256i v[8];
    for (int r = 0; r < 8; ++r) v[r] = _mm256_castps_si256(Row::Load(ptrs[r], k0 + i));
    Transpose8x8(v);
    for (int j = 0; j < 8; ++j) _mm256_store_ps(panel + (i + j) * 8, _mm256_castsi256_ps(v[j]));
  }
  for (; i < kc; ++i) {
    for (int r = 0; r < 8; ++r) panel[i * 8 + r] = Row::One(ptrs[r], k0 + i);
  }
}

// The register tile: kH panels (8 rows each) x N columns over kc elements, from acc (in/out).
template <int kH, int N>
QWEN_INLINE void FloatKernel(const float* const* panels, const float* const* x, int64_t kc,
                             __m256* acc_io) {
  __m256 acc[kH][N];
#pragma GCC unroll 8
  for (int c = 0; c < N; ++c) {
#pragma GCC unroll 2
    for (int h = 0; h < kH; ++h) acc[h][c] = acc_io[c * 2 + h];
  }
  for (int64_t j = 0; j < kc; ++j) {
    __m256 p[kH];
#pragma GCC unroll 2
    for (int h = 0; h < kH; ++h) p[h] = _mm256_load_ps(panels[h] + j * 8);
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) {
      const __m256 xv = _mm256_broadcast_ss(x[c] + j);
#pragma GCC unroll 2
      for (int h = 0; h < kH; ++h) acc[h][c] = _mm256_fmadd_ps(p[h], xv, acc[h][c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < N; ++c) {
#pragma GCC unroll 2
    for (int h = 0; h < kH; ++h) acc_io[c * 2 + h] = acc[h][c];
  }
}

template <int kH>
QWEN_INLINE void FloatKernelN(int nc, const float* const* panels, const float* const* x,
                              int64_t kc, __m256* acc) {
  switch (nc) {
    case 1: return FloatKernel<kH, 1>(panels, x, kc, acc);
    case 2: return FloatKernel<kH, 2>(panels, x, kc, acc);
    case 3: return FloatKernel<kH, 3>(panels, x, kc, acc);
    case 4: return FloatKernel<kH, 4>(panels, x, kc, acc);
    case 5: return FloatKernel<kH, 5>(panels, x, kc, acc);
    default: return FloatKernel<kH, 6>(panels, x, kc, acc);
  }
}

template <class Row>
void FloatTile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
               int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  alignas(32) float panel[2][kFloatChunk * 8];
  const float* panels[2] = {panel[0], panel[1]};
  alignas(64) float xcopy[kFloatCols * kXStride];
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    // Up to two panels of 8 rows; missing rows of a panel repeat row r0 and are not stored.
    int rows[2];
    const uint8_t* ptrs[2][8];
    for (int h = 0; h < 2; ++h) {
      const int64_t left = n_rows - r0 - 8 * h;
      rows[h] = static_cast<int>(left < 0 ? 0 : left < 8 ? left : 8);
      for (int r = 0; r < 8; ++r) ptrs[h][r] = wp + (r0 + (r < rows[h] ? 8 * h + r : 0)) * w_stride;
    }
    const int halves = rows[1] > 0 ? 2 : 1;
    for (int64_t k0 = 0; k0 < n; k0 += kFloatChunk) {
      const int64_t kc = n - k0 < kFloatChunk ? n - k0 : kFloatChunk;
      for (int h = 0; h < halves; ++h) FillPanel<Row>(ptrs[h], k0, kc, panel[h]);
      for (int64_t c0 = 0; c0 < n_cols; c0 += kFloatCols) {
        const int nc = static_cast<int>(n_cols - c0 < kFloatCols ? n_cols - c0 : kFloatCols);
        const float* x[kFloatCols];
        __m256 acc[2 * kFloatCols];  // [column][panel]
        for (int c = 0; c < nc; ++c) {
          // A copy of the column's chunk: activation rows a power of two apart (the vision
          // tower's 1024 and 4096 floats) would otherwise share L1 sets and evict each other.
          std::memcpy(xcopy + c * kXStride, ap + (c0 + c) * a_stride + k0 * sizeof(float),
                      kc * sizeof(float));
          x[c] = xcopy + c * kXStride;
          for (int h = 0; h < halves; ++h) {
            acc[2 * c + h] = k0 == 0 ? _mm256_setzero_ps()
                                     : LoadRows(y + (c0 + c) * y_stride + r0 + 8 * h, rows[h]);
          }
        }
        // Every entry: acc = fma(w_ri, x_ci, acc) for i in order (the reference's chain).
        if (halves == 2) {
          FloatKernelN<2>(nc, panels, x, kc, acc);
        } else {
          FloatKernelN<1>(nc, panels, x, kc, acc);
        }
        for (int c = 0; c < nc; ++c) {
          for (int h = 0; h < halves; ++h) {
            StoreRows(y + (c0 + c) * y_stride + r0 + 8 * h, acc[2 * c + h], rows[h]);
          }
        }
      }
    }
  }
}

// ============================== Activation quantization ==============================

QWEN_INLINE __m256 AbsPs(__m256 x) {
  return _mm256_castsi256_ps(
      _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff)));
}

// x * id clamped to [-127, 127], rounded half to even (the MXCSR default, as nearbyint).
QWEN_INLINE __m256i RoundClamped(__m256 x, __m256 id) {
  __m256 v = _mm256_mul_ps(x, id);
  v = _mm256_min_ps(v, _mm256_set1_ps(127.0f));
  v = _mm256_max_ps(v, _mm256_set1_ps(-127.0f));
  return _mm256_cvtps_epi32(v);
}

QWEN_INLINE uint16_t QuantizeBlock32(const float* x, int8_t* qs, int* sum) {
  __m256 xv[4];
  __m256 amax = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) {
    xv[j] = _mm256_loadu_ps(x + 8 * j);
    amax = _mm256_max_ps(amax, AbsPs(xv[j]));
  }
  const uint16_t d16 = ToHalf(HorizontalMax(amax) / 127.0f);
  const float d = Half(d16);
  const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  __m256i q[4];
  for (int j = 0; j < 4; ++j) q[j] = RoundClamped(xv[j], id);
  *sum = HorizontalSumI32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
  // packs work within 128-bit lanes; the final permute restores the order.
  const __m256i w01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i w23 = _mm256_packs_epi32(q[2], q[3]);
  const __m256i b = _mm256_packs_epi16(w01, w23);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  return d16;
}

void QuantizeQ8_0(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    int sum;
    out[b].d = QuantizeBlock32(x + b * kQK, out[b].qs, &sum);
  }
}

void QuantizeQ8_1(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    int sum;
    out[b].d = QuantizeBlock32(x + b * kQK, out[b].qs, &sum);
    out[b].s = ToHalf(Half(out[b].d) * static_cast<float>(sum));
  }
}

// Q8_K. Per half h (sub-blocks 8h .. 8h + 7): each sub-block's 16 values pack to words (lane 0:
// values 0-3, 8-11; lane 1: 4-7, 12-15), pairs of sub-blocks to bytes, and a permute and a 4 x 4
// transpose of 8-byte pairs put dword k of sub-block s' into lane s' of output piece k.
void QuantizeQ8_K(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_K*>(dst);
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i pair_order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int64_t blk = 0; blk < n / kQKK; ++blk) {
    const float* xb = x + blk * kQKK;
    __m256 amax_v = _mm256_setzero_ps();
    for (int j = 0; j < 32; ++j) amax_v = _mm256_max_ps(amax_v, AbsPs(_mm256_loadu_ps(xb + 8 * j)));
    const float amax = HorizontalMax(amax_v);
    const float d = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    out[blk].d = d;
    for (int h = 0; h < 2; ++h) {
      __m256i pairs[4];
      for (int p = 0; p < 4; ++p) {
        __m256i words[2];
        for (int t = 0; t < 2; ++t) {
          const int s = 8 * h + 2 * p + t;
          const __m256i q0 = RoundClamped(_mm256_loadu_ps(xb + 16 * s), id);
          const __m256i q1 = RoundClamped(_mm256_loadu_ps(xb + 16 * s + 8), id);
          // Lane 0: values 0-3 (k = 0) and 8-11 (k = 2); lane 1: 4-7 (k = 1), 12-15 (k = 3).
          words[t] = _mm256_packs_epi32(q0, q1);
          out[blk].bsums[s] = static_cast<int16_t>(
              HorizontalSumI32(_mm256_madd_epi16(words[t], ones16)));
        }
        // Dwords [a0 a2 b0 b2 | a1 a3 b1 b3] -> [a0 b0 a1 b1 a2 b2 a3 b3]: 8-byte pair k is
        // (a_k, b_k).
        pairs[p] = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words[0], words[1]), pair_order);
      }
      const __m256i lo01 = _mm256_unpacklo_epi64(pairs[0], pairs[1]);  // pairs k = 0, 2
      const __m256i hi01 = _mm256_unpackhi_epi64(pairs[0], pairs[1]);  // k = 1, 3
      const __m256i lo23 = _mm256_unpacklo_epi64(pairs[2], pairs[3]);
      const __m256i hi23 = _mm256_unpackhi_epi64(pairs[2], pairs[3]);
      int8_t* qs = out[blk].qs + 32 * h;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 0), _mm256_permute2x128_si256(lo01, lo23, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 64), _mm256_permute2x128_si256(hi01, hi23, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 128), _mm256_permute2x128_si256(lo01, lo23, 0x31));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 192), _mm256_permute2x128_si256(hi01, hi23, 0x31));
    }
    FinishQ8K(&out[blk]);
  }
}

// ============================== Legacy 32-weight blocks ==============================

QWEN_INLINE __m256i Nibbles(const uint8_t* qs) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
}

// 0x10 in each byte whose bit in the 32-bit qh is set.
QWEN_INLINE __m256i FifthBits(const uint8_t* qh) {
  uint32_t bits;
  __builtin_memcpy(&bits, qh, 4);
  // Byte j of the 32 takes byte j / 8 of `bits`, then tests its bit j % 8.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                         0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

struct LegacySigned {
  __m256i q;
  float d;
};
struct LegacyMin {
  __m256i q;
  float d, m;
};
QWEN_INLINE float LegacyM(const LegacyMin& u) { return u.m; }
QWEN_INLINE float LegacyM(const LegacySigned&) { return 0.0f; }
QWEN_INLINE uint16_t LegacyS(const BlockQ8_1& a) { return a.s; }
QWEN_INLINE uint16_t LegacyS(const BlockQ8_0&) { return 0; }

struct Q4_0T {
  static constexpr int kBytes = 18;
  static constexpr int kOffset = 8;  // weight = d (u - 8)
  static QWEN_INLINE __m256i U(const uint8_t* p) {
    return Nibbles(reinterpret_cast<const BlockQ4_0*>(p)->qs);
  }
  static QWEN_INLINE uint16_t D(const uint8_t* p) { return reinterpret_cast<const BlockQ4_0*>(p)->d; }
  static QWEN_INLINE uint16_t M(const uint8_t*) { return 0; }
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(p);
    return {_mm256_sub_epi8(Nibbles(b->qs), _mm256_set1_epi8(8)), Half(b->d)};
  }
};
struct Q5_0T {
  static constexpr int kBytes = 22;
  static constexpr int kOffset = 16;
  static QWEN_INLINE __m256i U(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ5_0*>(p);
    return _mm256_or_si256(Nibbles(b->qs), FifthBits(b->qh));
  }
  static QWEN_INLINE uint16_t D(const uint8_t* p) { return reinterpret_cast<const BlockQ5_0*>(p)->d; }
  static QWEN_INLINE uint16_t M(const uint8_t*) { return 0; }
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ5_0*>(p);
    return {_mm256_sub_epi8(_mm256_or_si256(Nibbles(b->qs), FifthBits(b->qh)), _mm256_set1_epi8(16)),
            Half(b->d)};
  }
};
struct Q8_0T {
  static constexpr int kBytes = 34;
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(p);
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)), Half(b->d)};
  }
};
struct Q4_1T {
  static constexpr int kBytes = 20;
  static constexpr int kOffset = 0;  // weight = d u + m
  static QWEN_INLINE __m256i U(const uint8_t* p) {
    return Nibbles(reinterpret_cast<const BlockQ4_1*>(p)->qs);
  }
  static QWEN_INLINE uint16_t D(const uint8_t* p) { return reinterpret_cast<const BlockQ4_1*>(p)->d; }
  static QWEN_INLINE uint16_t M(const uint8_t* p) { return reinterpret_cast<const BlockQ4_1*>(p)->m; }
  static QWEN_INLINE LegacyMin Unpack(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ4_1*>(p);
    return {Nibbles(b->qs), Half(b->d), Half(b->m)};
  }
};
struct Q5_1T {
  static constexpr int kBytes = 24;
  static constexpr int kOffset = 0;
  static QWEN_INLINE __m256i U(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ5_1*>(p);
    return _mm256_or_si256(Nibbles(b->qs), FifthBits(b->qh));
  }
  static QWEN_INLINE uint16_t D(const uint8_t* p) { return reinterpret_cast<const BlockQ5_1*>(p)->d; }
  static QWEN_INLINE uint16_t M(const uint8_t* p) { return reinterpret_cast<const BlockQ5_1*>(p)->m; }
  static QWEN_INLINE LegacyMin Unpack(const uint8_t* p) {
    const auto* b = reinterpret_cast<const BlockQ5_1*>(p);
    return {_mm256_or_si256(Nibbles(b->qs), FifthBits(b->qh)), Half(b->d), Half(b->m)};
  }
};

// Bytes (signed if kSigned) times a float: q * d, as the scalar reference.
template <bool kSigned>
QWEN_INLINE void StoreScaled(__m256i q, __m256 d, float* dst) {
  for (int part = 0; part < 4; ++part) {
    const __m128i chunk = part < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
    const __m128i bytes = part % 2 == 0 ? chunk : _mm_srli_si128(chunk, 8);
    const __m256i ints = kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
    _mm256_storeu_ps(dst + 8 * part, _mm256_mul_ps(_mm256_cvtepi32_ps(ints), d));
  }
}

template <class T>
void DequantLegacySigned(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const LegacySigned u = T::Unpack(p + b * T::kBytes);
    StoreScaled<true>(u.q, _mm256_set1_ps(u.d), dst + b * kQK);
  }
}

template <class T>
void DequantLegacyMin(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const LegacyMin u = T::Unpack(p + b * T::kBytes);
    float* out = dst + b * kQK;
    StoreScaled<false>(u.q, _mm256_set1_ps(u.d), out);
    const __m256 m = _mm256_set1_ps(u.m);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + 8 * j, _mm256_add_ps(_mm256_loadu_ps(out + 8 * j), m));
  }
}

// Sum of 4-byte groups of u8 x s8 products as 8 int32 lanes.
QWEN_INLINE __m256i Dot4(__m256i u8, __m256i s8) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u8, s8), _mm256_set1_epi16(1));
}

// acc + S d da with one rounding (kernels.h), in scalar registers.
QWEN_INLINE float Fold(float acc, int32_t s, float d, float da) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(static_cast<float>(s)), _mm_set_ss(d * da),
                                    _mm_set_ss(acc)));
}

QWEN_INLINE float Fma(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// The 4- and 5-bit legacy blocks with 8 rows in the lanes. A chunk of blocks of 8 rows is
// imaged into a buffer (vector j: weights 4 j .. 4 j + 3 of the 8 rows as unsigned bytes u, then
// the rows' d and m), which every column then reads: per block and column, the exact
// S = sum (u - offset) a comes from vpmaddubsw (four products stay below 4 * 2 * 31 * 127 in
// int16) and vpmaddwd by ones, minus offset times the activations' sum; then the reference's
// fma(float(S), d da, acc) (and fma(m, s, acc) for Q4_1 / Q5_1).
constexpr int64_t kLegacyChunk = 32;  // blocks per image buffer
constexpr int kLegacyCols = 4;

struct LegacyImage {
  __m256i u[8];
  alignas(16) uint16_t d[8];
  alignas(16) uint16_t m[8];
};

template <class T>
QWEN_INLINE void MakeLegacyImage(const uint8_t* const* rows, int64_t off, LegacyImage* img) {
  __m256i v[8];
  for (int r = 0; r < 8; ++r) v[r] = T::U(rows[r] + off);
  Transpose8x8(v);
  for (int j = 0; j < 8; ++j) img->u[j] = v[j];
  for (int r = 0; r < 8; ++r) {
    img->d[r] = T::D(rows[r] + off);
    img->m[r] = T::M(rows[r] + off);
  }
}

QWEN_INLINE __m256i Bcast32(const void* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// The sum of an activation block's 32 values.
QWEN_INLINE int32_t Sum32(const int8_t* qs) {
  const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs)),
                                     _mm256_set1_epi8(static_cast<char>(0x80)));
  const __m256i sad = _mm256_sad_epu8(u, _mm256_setzero_si256());
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
  return static_cast<int32_t>(_mm_cvtsi128_si64(_mm_add_epi64(t, _mm_unpackhi_epi64(t, t)))) -
         32 * 128;
}

template <class T, class ABlock, int N>
QWEN_INLINE void LegacyBlocks(const LegacyImage* imgs, int64_t n_blocks, const ABlock* const* ab,
                              __m256* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const LegacyImage& im = imgs[b];
    __m256i s[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      __m256i x[2];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int8_t* q = ab[c][b].qs + 16 * h;
        __m256i p = _mm256_maddubs_epi16(im.u[4 * h], Bcast32(q));
#pragma GCC unroll 3
        for (int j = 1; j < 4; ++j) {
          p = _mm256_add_epi16(p, _mm256_maddubs_epi16(im.u[4 * h + j], Bcast32(q + 4 * j)));
        }
        x[h] = _mm256_madd_epi16(p, ones);
      }
      s[c] = _mm256_add_epi32(x[0], x[1]);
      if constexpr (T::kOffset != 0) {
        s[c] = _mm256_sub_epi32(s[c], _mm256_set1_epi32(T::kOffset * Sum32(ab[c][b].qs)));
      }
    }
    const __m256 d = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(im.d)));
    [[maybe_unused]] const __m256 m =
        _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(im.m)));
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      const __m256 da = _mm256_set1_ps(Half(ab[c][b].d));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_mul_ps(d, da), acc[c]);
      if constexpr (T::kOffset == 0) {
        acc[c] = _mm256_fmadd_ps(m, _mm256_set1_ps(Half(LegacyS(ab[c][b]))), acc[c]);
      }
    }
  }
}

template <class T>
void LegacyRowsTile(const void* w, size_t w_stride, int64_t n_rows, const void* a,
                    size_t a_stride, int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  using ABlock = std::conditional_t<T::kOffset == 0, BlockQ8_1, BlockQ8_0>;
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQK;
  LegacyImage imgs[kLegacyChunk];
  for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
    const int rows = static_cast<int>(n_rows - r0 < 8 ? n_rows - r0 : 8);
    const uint8_t* ptrs[8];
    for (int r = 0; r < 8; ++r) ptrs[r] = wp + (r0 + (r < rows ? r : 0)) * w_stride;
    for (int64_t b0 = 0; b0 < nb; b0 += kLegacyChunk) {
      const int64_t cb = nb - b0 < kLegacyChunk ? nb - b0 : kLegacyChunk;
      for (int64_t b = 0; b < cb; ++b) MakeLegacyImage<T>(ptrs, (b0 + b) * T::kBytes, &imgs[b]);
      for (int64_t c0 = 0; c0 < n_cols; c0 += kLegacyCols) {
        const int nc = static_cast<int>(n_cols - c0 < kLegacyCols ? n_cols - c0 : kLegacyCols);
        const ABlock* ab[kLegacyCols];
        __m256 acc[kLegacyCols];
        for (int c = 0; c < nc; ++c) {
          ab[c] = reinterpret_cast<const ABlock*>(ap + (c0 + c) * a_stride) + b0;
          acc[c] = b0 == 0 ? _mm256_setzero_ps() : LoadRows(y + (c0 + c) * y_stride + r0, rows);
        }
        switch (nc) {
          case 1: LegacyBlocks<T, ABlock, 1>(imgs, cb, ab, acc); break;
          case 2: LegacyBlocks<T, ABlock, 2>(imgs, cb, ab, acc); break;
          case 3: LegacyBlocks<T, ABlock, 3>(imgs, cb, ab, acc); break;
          default: LegacyBlocks<T, ABlock, 4>(imgs, cb, ab, acc); break;
        }
        for (int c = 0; c < nc; ++c) StoreRows(y + (c0 + c) * y_stride + r0, acc[c], rows);
      }
    }
  }
}

// ============================== K-quants ==============================

// w[h][k]: lane s' holds the 4 unsigned weights 16 s + 4 k .. + 3 of sub-block s = 8 h + s'.
// Weight value = dsc_s * w - bias_s (per unit of activation sum).
struct KBlock {
  __m256i w[2][4];
  __m256 dsc[2], bias[2];
};

// For 32 bytes `y` holding dwords y[0..7]: out[k] = dword pattern [y[k], y[4+k]] in every
// 64-bit pair. (The in-lane shuffle picks pair k of the interleaved halves.)
QWEN_INLINE void PairPattern(__m256i y, __m256i* out) {
  const __m256i lo = _mm256_permute2x128_si256(y, y, 0x00);
  const __m256i hi = _mm256_permute2x128_si256(y, y, 0x11);
  const __m256i u = _mm256_unpacklo_epi32(lo, hi);  // [y0 y4 y1 y5 | same]
  const __m256i v = _mm256_unpackhi_epi32(lo, hi);  // [y2 y6 y3 y7 | same]
  out[0] = _mm256_shuffle_epi32(u, 0x44);
  out[1] = _mm256_shuffle_epi32(u, 0xEE);
  out[2] = _mm256_shuffle_epi32(v, 0x44);
  out[3] = _mm256_shuffle_epi32(v, 0xEE);
}

// For two 32-byte sources a, b: out[k] = [a[k], a[4+k], b[k], b[4+k]] in both 128-bit lanes.
QWEN_INLINE void PairPattern2(__m256i a, __m256i b, __m256i* out) {
  const __m256i lo = _mm256_permute2x128_si256(a, b, 0x20);  // [a0-3 | b0-3]
  const __m256i hi = _mm256_permute2x128_si256(a, b, 0x31);  // [a4-7 | b4-7]
  const __m256i u = _mm256_unpacklo_epi32(lo, hi);            // [a0 a4 a1 a5 | b0 b4 b1 b5]
  const __m256i v = _mm256_unpackhi_epi32(lo, hi);            // [a2 a6 a3 a7 | b2 b6 b3 b7]
  out[0] = _mm256_permute4x64_epi64(u, 0x88);                 // qwords 0 2 0 2
  out[1] = _mm256_permute4x64_epi64(u, 0xDD);                 // 1 3 1 3
  out[2] = _mm256_permute4x64_epi64(v, 0x88);
  out[3] = _mm256_permute4x64_epi64(v, 0xDD);
}

// Q4_K / Q5_K scale and minimum pairs untangled with integer operations: bytes 0-7 of the
// result are sc_0..7, bytes 8-15 mn_0..7.
QWEN_INLINE __m128i K4ScaleBytes(const uint8_t* scales) {
  uint32_t x[3];
  __builtin_memcpy(x, scales, 12);
  const uint32_t sc_lo = x[0] & 0x3f3f3f3fu;
  const uint32_t mn_lo = x[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (x[2] & 0x0f0f0f0fu) | ((x[0] >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((x[2] >> 4) & 0x0f0f0f0fu) | ((x[1] >> 2) & 0x30303030u);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(mn_lo),
                        static_cast<int>(mn_hi));
}

// dsc / bias for Q4_K and Q5_K: lane s' of half h uses pair j = 4 h + s' / 2.
QWEN_INLINE void K4Scales(const uint8_t* p, const uint8_t* scales, KBlock* k) {
  const __m128i bytes = K4ScaleBytes(scales);
  const float d = Half(reinterpret_cast<const uint16_t*>(p)[0]);
  const float dmin = Half(reinterpret_cast<const uint16_t*>(p)[1]);
  for (int h = 0; h < 2; ++h) {
    const __m128i sc_idx = _mm_setr_epi8(4 * h, 4 * h, 4 * h + 1, 4 * h + 1, 4 * h + 2, 4 * h + 2,
                                         4 * h + 3, 4 * h + 3, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i mn_idx = _mm_add_epi8(sc_idx, _mm_setr_epi8(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0,
                                                              0, 0, 0, 0));
    k->dsc[h] = _mm256_mul_ps(_mm256_set1_ps(d),
                              _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(bytes, sc_idx))));
    k->bias[h] = _mm256_mul_ps(_mm256_set1_ps(dmin),
                               _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(bytes, mn_idx))));
  }
}

// Q4_K nibbles: half h, lane s' reads chunk 2h + s'/4 (a = qs[64h ..], b = qs[64h + 32 ..]),
// dword 4 (s' % 2) + k, nibble (s'/2) % 2: piece k = [a_k a_4+k a_k a_4+k | b_k b_4+k b_k b_4+k]
// shifted by [0 0 4 4 | 0 0 4 4].
QWEN_INLINE void Q4KNibbles(const uint8_t* qs, KBlock* k) {
  const __m256i shift = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
  const __m256i nib = _mm256_set1_epi8(0x0F);
  for (int h = 0; h < 2; ++h) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 64 * h));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 64 * h + 32));
    const __m256i lo = _mm256_permute2x128_si256(a, b, 0x20);  // [a0-3 | b0-3]
    const __m256i hi = _mm256_permute2x128_si256(a, b, 0x31);  // [a4-7 | b4-7]
    const __m256i u = _mm256_unpacklo_epi32(lo, hi);            // [a0 a4 a1 a5 | b0 b4 b1 b5]
    const __m256i v = _mm256_unpackhi_epi32(lo, hi);            // [a2 a6 a3 a7 | b2 b6 b3 b7]
    const __m256i pat[4] = {_mm256_shuffle_epi32(u, 0x44), _mm256_shuffle_epi32(u, 0xEE),
                            _mm256_shuffle_epi32(v, 0x44), _mm256_shuffle_epi32(v, 0xEE)};
    for (int j = 0; j < 4; ++j) {
      k->w[h][j] = _mm256_and_si256(_mm256_srlv_epi32(pat[j], shift), nib);
    }
  }
}

struct Q4KT {
  static constexpr int kBytes = 144;
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ4_K*>(p);
    Q4KNibbles(b->qs, k);
    K4Scales(p, b->scales, k);
  }
  static QWEN_INLINE __m256 Value(__m256i u, __m256 dsc, __m256 bias) {
    return _mm256_sub_ps(_mm256_mul_ps(dsc, _mm256_cvtepi32_ps(u)), bias);
  }
};

struct Q5KT {
  static constexpr int kBytes = 176;
  // Bit 4 of lane s = 8h + s' is bit s / 2 = 4h + s'/2 of qh dword 4 (s' % 2) + k.
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ5_K*>(p);
    Q4KNibbles(b->qs, k);
    __m256i pat[4];
    PairPattern(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh)), pat);
    const __m256i sixteen = _mm256_set1_epi8(0x10);
    for (int h = 0; h < 2; ++h) {
      // Move bit 4h + s'/2 to bit 4.
      const __m256i left = h == 0 ? _mm256_setr_epi32(4, 4, 3, 3, 2, 2, 1, 1) : _mm256_setzero_si256();
      const __m256i right = h == 0 ? _mm256_setzero_si256() : _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
      for (int j = 0; j < 4; ++j) {
        const __m256i hb = _mm256_srlv_epi32(_mm256_sllv_epi32(pat[j], left), right);
        k->w[h][j] = _mm256_or_si256(k->w[h][j], _mm256_and_si256(hb, sixteen));
      }
    }
    K4Scales(p, b->scales, k);
  }
  static QWEN_INLINE __m256 Value(__m256i u, __m256 dsc, __m256 bias) {
    return _mm256_sub_ps(_mm256_mul_ps(dsc, _mm256_cvtepi32_ps(u)), bias);
  }
};

struct Q6KT {
  static constexpr int kBytes = 210;
  // u = q + 32: value d sc (u - 32). Lane s' of half h (g = s'/2): low 4 bits from
  // ql[64h + 32 (g % 2) ..] dword 4 (s' % 2) + k, nibble g / 2; high 2 bits at bits 2g of
  // qh[32 h ..] dword 4 (s' % 2) + k.
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ6_K*>(p);
    const __m256i lshift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const __m256i hleft = _mm256_setr_epi32(4, 4, 2, 2, 0, 0, 0, 0);
    const __m256i hright = _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 2, 2);
    const __m256i nib = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      __m256i lpat[4], hpat[4];
      PairPattern2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->ql + 64 * h)),
                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->ql + 64 * h + 32)), lpat);
      PairPattern(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh + 32 * h)), hpat);
      for (int j = 0; j < 4; ++j) {
        // lpat lanes [a_k a_4+k b_k b_4+k | same]: g = 0, 1 low nibbles, g = 2, 3 high.
        const __m256i low = _mm256_and_si256(_mm256_srlv_epi32(lpat[j], lshift), nib);
        const __m256i high =
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_sllv_epi32(hpat[j], hleft), hright), top);
        k->w[h][j] = _mm256_or_si256(low, high);
      }
    }
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales));
    const __m256 d = _mm256_set1_ps(Half(b->d));
    k->dsc[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
    k->dsc[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
    k->bias[0] = _mm256_mul_ps(k->dsc[0], _mm256_set1_ps(32.0f));
    k->bias[1] = _mm256_mul_ps(k->dsc[1], _mm256_set1_ps(32.0f));
  }
  static QWEN_INLINE __m256 Value(__m256i u, __m256 dsc, __m256) {
    return _mm256_mul_ps(dsc, _mm256_cvtepi32_ps(_mm256_sub_epi32(u, _mm256_set1_epi32(32))));
  }
};

// Q2_K / Q3_K low bits: half h, lane s' reads qs[32 h ..] dword 4 (s' % 2) + k, bits 2g.
QWEN_INLINE void TwoBitPieces(const uint8_t* qs, KBlock* k) {
  const __m256i shift = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6);
  const __m256i three = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    __m256i pat[4];
    PairPattern(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * h)), pat);
    for (int j = 0; j < 4; ++j) k->w[h][j] = _mm256_and_si256(_mm256_srlv_epi32(pat[j], shift), three);
  }
}

struct Q3KT {
  static constexpr int kBytes = 110;
  // u = low 2 bits + 4 * (hmask bit 4h + g of hmask dword 4 (s' % 2) + k): value
  // d (sc - 32) (u - 4).
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ3_K*>(p);
    TwoBitPieces(b->qs, k);
    __m256i pat[4];
    PairPattern(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hmask)), pat);
    const __m256i four = _mm256_set1_epi8(4);
    for (int h = 0; h < 2; ++h) {
      const __m256i bit = _mm256_setr_epi32(
          0x01010101 << (4 * h), 0x01010101 << (4 * h), 0x01010101 << (4 * h + 1),
          0x01010101 << (4 * h + 1), 0x01010101 << (4 * h + 2), 0x01010101 << (4 * h + 2),
          0x01010101 << (4 * h + 3), 0x01010101 << (4 * h + 3));
      for (int j = 0; j < 4; ++j) {
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(pat[j], bit), bit);
        k->w[h][j] = _mm256_or_si256(k->w[h][j], _mm256_and_si256(set, four));
      }
    }
    // 6-bit scales: low nibble of scale s in byte s % 8 (high nibble for s >= 8), top 2 bits at
    // bits 2 (s / 4) of byte 8 + s % 4.
    uint32_t x[3];
    __builtin_memcpy(x, b->scales, 12);
    const uint32_t lo[4] = {x[0] & 0x0f0f0f0fu, x[1] & 0x0f0f0f0fu, (x[0] >> 4) & 0x0f0f0f0fu,
                            (x[1] >> 4) & 0x0f0f0f0fu};
    const __m128i sc = _mm_setr_epi32(static_cast<int>(lo[0] | ((x[2] << 4) & 0x30303030u)),
                                      static_cast<int>(lo[1] | ((x[2] << 2) & 0x30303030u)),
                                      static_cast<int>(lo[2] | (x[2] & 0x30303030u)),
                                      static_cast<int>(lo[3] | ((x[2] >> 2) & 0x30303030u)));
    const __m256 d = _mm256_set1_ps(Half(b->d));
    const __m256i m32 = _mm256_set1_epi32(32);
    k->dsc[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(sc), m32)));
    k->dsc[1] = _mm256_mul_ps(
        d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(sc, 8)), m32)));
    k->bias[0] = _mm256_mul_ps(k->dsc[0], _mm256_set1_ps(4.0f));
    k->bias[1] = _mm256_mul_ps(k->dsc[1], _mm256_set1_ps(4.0f));
  }
  static QWEN_INLINE __m256 Value(__m256i u, __m256 dsc, __m256) {
    return _mm256_mul_ps(dsc, _mm256_cvtepi32_ps(_mm256_sub_epi32(u, _mm256_set1_epi32(4))));
  }
};

struct Q2KT {
  static constexpr int kBytes = 84;
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
    TwoBitPieces(b->qs, k);
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales));
    const __m256 d = _mm256_set1_ps(Half(b->d)), dmin = _mm256_set1_ps(Half(b->dmin));
    for (int h = 0; h < 2; ++h) {
      const __m256i s = _mm256_cvtepu8_epi32(h == 0 ? x : _mm_srli_si128(x, 8));
      k->dsc[h] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_and_si256(s, _mm256_set1_epi32(15))));
      k->bias[h] = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_srli_epi32(s, 4)));
    }
  }
  static QWEN_INLINE __m256 Value(__m256i u, __m256 dsc, __m256 bias) {
    return _mm256_sub_ps(_mm256_mul_ps(dsc, _mm256_cvtepi32_ps(u)), bias);
  }
};

// Dequantization in natural order: sub-block s's 16 weights are dword s' of pieces k = 0..3 of
// its half, gathered back with a 4 x 4 dword transpose.
template <class T>
void DequantK(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  alignas(32) float dsc[16], bias[16];
  for (int64_t b = 0; b < n / kQKK; ++b) {
    KBlock k;
    T::Unpack(p + b * T::kBytes, &k);
    for (int h = 0; h < 2; ++h) {
      _mm256_store_ps(dsc + 8 * h, k.dsc[h]);
      _mm256_store_ps(bias + 8 * h, k.bias[h]);
    }
    float* out = dst + b * kQKK;
    for (int h = 0; h < 2; ++h) {
      // Transpose dwords: t[s'] = [w0[s'], w1[s'], w2[s'], w3[s']].
      const __m256i a01lo = _mm256_unpacklo_epi32(k.w[h][0], k.w[h][1]);  // s' 0,1 | 4,5
      const __m256i a01hi = _mm256_unpackhi_epi32(k.w[h][0], k.w[h][1]);  // s' 2,3 | 6,7
      const __m256i a23lo = _mm256_unpacklo_epi32(k.w[h][2], k.w[h][3]);
      const __m256i a23hi = _mm256_unpackhi_epi32(k.w[h][2], k.w[h][3]);
      // 128-bit lane 0 of each holds s' = 0, 2 / 1, 3; lane 1 holds 4, 6 / 5, 7.
      const __m256i s04 = _mm256_unpacklo_epi64(a01lo, a23lo);  // [s'0 | s'4]
      const __m256i s15 = _mm256_unpackhi_epi64(a01lo, a23lo);  // [s'1 | s'5]
      const __m256i s26 = _mm256_unpacklo_epi64(a01hi, a23hi);
      const __m256i s37 = _mm256_unpackhi_epi64(a01hi, a23hi);
      const __m256i subs[4] = {s04, s15, s26, s37};
      for (int i = 0; i < 4; ++i) {
        for (int lane = 0; lane < 2; ++lane) {
          const int s = 8 * h + i + 4 * lane;
          const __m128i bytes =
              lane == 0 ? _mm256_castsi256_si128(subs[i]) : _mm256_extracti128_si256(subs[i], 1);
          const __m256 vd = _mm256_set1_ps(dsc[s]), vb = _mm256_set1_ps(bias[s]);
          _mm256_storeu_ps(out + 16 * s, T::Value(_mm256_cvtepu8_epi32(bytes), vd, vb));
          _mm256_storeu_ps(out + 16 * s + 8,
                           T::Value(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)), vd, vb));
        }
      }
    }
  }
}

}  // namespace

void FillAvx2Kernels(KernelTable* t) {
  auto idx = [](GgmlType type) { return static_cast<uint32_t>(type); };
  t->dequantize[idx(GgmlType::kF16)] = DequantFloat<F16Row>;
  t->dequantize[idx(GgmlType::kBF16)] = DequantFloat<BF16Row>;
  t->dot_tile[idx(GgmlType::kF32)] = FloatTile<F32Row>;
  t->dot_tile[idx(GgmlType::kF16)] = FloatTile<F16Row>;
  t->dot_tile[idx(GgmlType::kBF16)] = FloatTile<BF16Row>;

  t->quantize_activation[idx(GgmlType::kQ4_0)] = QuantizeQ8_0;
  t->quantize_activation[idx(GgmlType::kQ5_0)] = QuantizeQ8_0;
  t->quantize_activation[idx(GgmlType::kQ8_0)] = QuantizeQ8_0;
  t->quantize_activation[idx(GgmlType::kQ4_1)] = QuantizeQ8_1;
  t->quantize_activation[idx(GgmlType::kQ5_1)] = QuantizeQ8_1;
  t->dequantize[idx(GgmlType::kQ4_0)] = DequantLegacySigned<Q4_0T>;
  t->dequantize[idx(GgmlType::kQ5_0)] = DequantLegacySigned<Q5_0T>;
  t->dequantize[idx(GgmlType::kQ8_0)] = DequantLegacySigned<Q8_0T>;
  t->dequantize[idx(GgmlType::kQ4_1)] = DequantLegacyMin<Q4_1T>;
  t->dequantize[idx(GgmlType::kQ5_1)] = DequantLegacyMin<Q5_1T>;
  t->dot_tile[idx(GgmlType::kQ4_0)] = LegacyRowsTile<Q4_0T>;
  t->dot_tile[idx(GgmlType::kQ5_0)] = LegacyRowsTile<Q5_0T>;
  t->dot_tile[idx(GgmlType::kQ4_1)] = LegacyRowsTile<Q4_1T>;
  t->dot_tile[idx(GgmlType::kQ5_1)] = LegacyRowsTile<Q5_1T>;
  // Q8_0: gemm_avx2.cc (with a packed layout).

  const GgmlType k_quants[] = {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                               GgmlType::kQ6_K};
  for (GgmlType k : k_quants) t->quantize_activation[idx(k)] = QuantizeQ8_K;
  t->dequantize[idx(GgmlType::kQ2_K)] = DequantK<Q2KT>;
  t->dequantize[idx(GgmlType::kQ3_K)] = DequantK<Q3KT>;
  t->dequantize[idx(GgmlType::kQ4_K)] = DequantK<Q4KT>;
  t->dequantize[idx(GgmlType::kQ5_K)] = DequantK<Q5KT>;
  t->dequantize[idx(GgmlType::kQ6_K)] = DequantK<Q6KT>;
  // The k-quant products and their packed layout: gemm_avx2.cc.
  FillAvx2GemmKernels(t);
}

}  // namespace qwen::quant::internal

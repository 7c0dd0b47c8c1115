// AVX-512 (F, BW, VL, DQ, VNNI) kernels. Compiled with AVX-512 flags and only ever called after
// run-time dispatch found the CPU has them.
//
// Everything lives in an anonymous namespace and uses intrinsics and plain loops only: no
// std:: templates or shared inline helpers whose AVX-512 copy the linker could hand to a caller
// on another CPU. Only FillAvx512Kernels is visible outside, and it passes function pointers.
//
// Dequantization, activation quantization, the float tiles and Q8_0's tiles (with its packed
// layout, part of gemm_avx512.cc's packed format). The other products: the k-quants Q3_K..Q6_K
// in gemm_avx512.cc; the other legacy blocks and Q2_K take the AVX2 kernels (the table starts
// from the AVX2 one). All compute the same bits as every level (kernels.h).
//
// GCC 12's AVX-512 headers implement unmasked intrinsics through a deliberately uninitialized
// pass-through operand (GCC bug 105593, fixed in GCC 13), which -Wmaybe-uninitialized reports at
// every inlined use (as -Wuninitialized for a few). The pragmas must be in force where the
// header is read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {
namespace {

#define QWEN_INLINE inline __attribute__((always_inline))

constexpr int kQK = 32;
constexpr int kQKK = 256;

QWEN_INLINE float Half(uint16_t h) { return _cvtsh_ss(h); }
QWEN_INLINE uint16_t ToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// A half-precision value converted into all 16 lanes.
QWEN_INLINE __m512 HalfBroadcast(uint16_t h) {
  return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(h)));
}

QWEN_INLINE __mmask16 TailMask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// ============================== Float weights ==============================

struct F32Row {
  static constexpr int kBytes = 4;
  static QWEN_INLINE __m512 Load(const void* p, int64_t i) {
    return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  }
  static QWEN_INLINE __m512 LoadMasked(const void* p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
  }
};

struct F16Row {
  static constexpr int kBytes = 2;
  static QWEN_INLINE __m512 Load(const void* p, int64_t i) {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  }
  static QWEN_INLINE __m512 LoadMasked(const void* p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i));
  }
};

// bfloat16 is the top half of a float32: widening is exact.
struct BF16Row {
  static constexpr int kBytes = 2;
  static QWEN_INLINE __m512 Load(const void* p, int64_t i) {
    const __m256i h =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static QWEN_INLINE __m512 LoadMasked(const void* p, int64_t i, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

template <class Row>
void DequantFloat(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, Row::Load(src, i));
  if (i < n) {
    const __mmask16 m = TailMask16(n - i);
    _mm512_mask_storeu_ps(dst + i, m, Row::LoadMasked(src, i, m));
  }
}

// Float tiles: the arithmetic of every level (kernels.h), entry (r, c) the chain
// acc = fma(w_ri, x_ci, acc) in index order, with 16 rows in the lanes. A chunk of up to 32 rows
// is transposed into two panels (element i of 16 rows as one vector: two 8 x 8 dword transposes
// of 8 elements of rows 0-7 and 8-15), which every column reads; 32 rows x 8 columns of sums stay
// in registers. The running sums live in y between chunks.
constexpr int64_t kFloatChunk = 256;
constexpr int64_t kXStride = kFloatChunk + 16;  // floats between column copies
constexpr int kFloatCols = 8;

// In place: v[i] lane j becomes v[j] lane i (8 x 8 dwords, ymm).
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

// 16 rows (ptrs) x elements [k0, k0 + kc) into panel[i][16] (row r in lane r).
template <class Row>
QWEN_INLINE void FillPanel(const uint8_t* const* ptrs, int64_t k0, int64_t kc, float* panel) {
  int64_t i = 0;
  for (; i + 16 <= kc; i += 16) {
    // Elements i .. i + 15 of the 16 rows, as two groups of 8 elements x 8 rows per half.
    for (int e = 0; e < 2; ++e) {
      for (int h = 0; h < 2; ++h) {
        __m256i v[8];
        for (int r = 0; r < 8; ++r) {
          const __m512 x = Row::Load(ptrs[8 * h + r], k0 + i);
          v[r] = _mm256_castps_si256(e == 0 ? _mm512_castps512_ps256(x)
                                            : _mm512_extractf32x8_ps(x, 1));
        }
        Transpose8x8(v);
        for (int j = 0; j < 8; ++j) {
          _mm256_store_ps(panel + (i + 8 * e + j) * 16 + 8 * h, _mm256_castsi256_ps(v[j]));
        }
      }
    }
  }
  for (; i < kc; ++i) {
    for (int r = 0; r < 16; ++r) {
      const __m512 x = Row::LoadMasked(ptrs[r], k0 + i, 1);
      panel[i * 16 + r] = _mm512_cvtss_f32(x);
    }
  }
}

template <int kH, int N>
QWEN_INLINE void FloatKernel(const float* const* panels, const float* const* x, int64_t kc,
                             __m512* acc_io) {
  __m512 acc[kH][N];
#pragma GCC unroll 8
  for (int c = 0; c < N; ++c) {
#pragma GCC unroll 2
    for (int h = 0; h < kH; ++h) acc[h][c] = acc_io[c * 2 + h];
  }
  for (int64_t j = 0; j < kc; ++j) {
    __m512 p[kH];
#pragma GCC unroll 2
    for (int h = 0; h < kH; ++h) p[h] = _mm512_load_ps(panels[h] + j * 16);
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) {
      const __m512 xv = _mm512_set1_ps(x[c][j]);
#pragma GCC unroll 2
      for (int h = 0; h < kH; ++h) acc[h][c] = _mm512_fmadd_ps(p[h], xv, acc[h][c]);
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
                              int64_t kc, __m512* acc) {
  switch (nc) {
    case 1: return FloatKernel<kH, 1>(panels, x, kc, acc);
    case 2: return FloatKernel<kH, 2>(panels, x, kc, acc);
    case 3: return FloatKernel<kH, 3>(panels, x, kc, acc);
    case 4: return FloatKernel<kH, 4>(panels, x, kc, acc);
    case 5: return FloatKernel<kH, 5>(panels, x, kc, acc);
    case 6: return FloatKernel<kH, 6>(panels, x, kc, acc);
    case 7: return FloatKernel<kH, 7>(panels, x, kc, acc);
    default: return FloatKernel<kH, 8>(panels, x, kc, acc);
  }
}

template <class Row>
void FloatTile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
               int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  alignas(64) float panel[2][kFloatChunk * 16];
  const float* panels[2] = {panel[0], panel[1]};
  alignas(64) float xcopy[kFloatCols * kXStride];
  for (int64_t r0 = 0; r0 < n_rows; r0 += 32) {
    // Up to two panels of 16 rows; missing rows of a panel repeat row r0 and are not stored.
    int rows[2];
    const uint8_t* ptrs[2][16];
    for (int h = 0; h < 2; ++h) {
      const int64_t left = n_rows - r0 - 16 * h;
      rows[h] = static_cast<int>(left < 0 ? 0 : left < 16 ? left : 16);
      for (int r = 0; r < 16; ++r) {
        ptrs[h][r] = wp + (r0 + (r < rows[h] ? 16 * h + r : 0)) * w_stride;
      }
    }
    const int halves = rows[1] > 0 ? 2 : 1;
    for (int64_t k0 = 0; k0 < n; k0 += kFloatChunk) {
      const int64_t kc = n - k0 < kFloatChunk ? n - k0 : kFloatChunk;
      for (int h = 0; h < halves; ++h) FillPanel<Row>(ptrs[h], k0, kc, panel[h]);
      for (int64_t c0 = 0; c0 < n_cols; c0 += kFloatCols) {
        const int nc = static_cast<int>(n_cols - c0 < kFloatCols ? n_cols - c0 : kFloatCols);
        const float* x[kFloatCols];
        __m512 acc[2 * kFloatCols];  // [column][panel]
        for (int c = 0; c < nc; ++c) {
          // A copy of the column's chunk: activation rows a power of two apart (the vision
          // tower's 1024 and 4096 floats) would otherwise share L1 sets and evict each other.
          std::memcpy(xcopy + c * kXStride, ap + (c0 + c) * a_stride + k0 * sizeof(float),
                      kc * sizeof(float));
          x[c] = xcopy + c * kXStride;
          for (int h = 0; h < halves; ++h) {
            acc[2 * c + h] =
                k0 == 0 ? _mm512_setzero_ps()
                        : _mm512_maskz_loadu_ps(TailMask16(rows[h]),
                                                y + (c0 + c) * y_stride + r0 + 16 * h);
          }
        }
        if (halves == 2) {
          FloatKernelN<2>(nc, panels, x, kc, acc);
        } else {
          FloatKernelN<1>(nc, panels, x, kc, acc);
        }
        for (int c = 0; c < nc; ++c) {
          for (int h = 0; h < halves; ++h) {
            _mm512_mask_storeu_ps(y + (c0 + c) * y_stride + r0 + 16 * h, TailMask16(rows[h]),
                                  acc[2 * c + h]);
          }
        }
      }
    }
  }
}

// ============================== Activation quantization ==============================

QWEN_INLINE __m512 AbsPs(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

// x * id clamped to [-127, 127] and rounded half to even: the scalar reference's RoundClamped.
QWEN_INLINE __m512i RoundClamped(__m512 x, __m512 id) {
  __m512 v = _mm512_mul_ps(x, id);
  v = _mm512_min_ps(v, _mm512_set1_ps(127.0f));
  v = _mm512_max_ps(v, _mm512_set1_ps(-127.0f));
  return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// One block of 32: fills qs, returns the half-precision scale and (through *sum) sum(qs).
QWEN_INLINE uint16_t QuantizeBlock32(const float* x, int8_t* qs, int* sum) {
  const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(AbsPs(x0), AbsPs(x1)));
  const uint16_t d16 = ToHalf(amax / 127.0f);
  const float d = Half(d16);
  const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  const __m512i q0 = RoundClamped(x0, id), q1 = RoundClamped(x1, id);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtepi32_epi8(q0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16), _mm512_cvtepi32_epi8(q1));
  *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  return d16;
}

void QuantizeQ8_0(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_0*>(dst);
  int sum;
  for (int64_t b = 0; b < n / kQK; ++b) out[b].d = QuantizeBlock32(x + b * kQK, out[b].qs, &sum);
}

void QuantizeQ8_1(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    int sum;
    out[b].d = QuantizeBlock32(x + b * kQK, out[b].qs, &sum);
    out[b].s = ToHalf(Half(out[b].d) * static_cast<float>(sum));
  }
}

void QuantizeQ8_K(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const float* xb = x + b * kQKK;
    __m512 amax_v = _mm512_setzero_ps();
    for (int j = 0; j < 16; ++j) amax_v = _mm512_max_ps(amax_v, AbsPs(_mm512_loadu_ps(xb + 16 * j)));
    const float amax = _mm512_reduce_max_ps(amax_v);
    const float d = amax / 127.0f;
    const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    out[b].d = d;
    // Sub-block s (values 16 s .. 16 s + 15) becomes 16 bytes = 4 dwords, dword k of which
    // goes to lane s of output vector k.
    __m128i sub[16];
    for (int s = 0; s < 16; ++s) {
      const __m512i q = RoundClamped(_mm512_loadu_ps(xb + 16 * s), id);
      out[b].bsums[s] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
      sub[s] = _mm512_cvtepi32_epi8(q);
    }
    __m512i dm[4];  // dm[m]: sub-blocks 4m .. 4m + 3, natural order
    for (int m = 0; m < 4; ++m) {
      const __m256i lo = _mm256_set_m128i(sub[4 * m + 1], sub[4 * m]);
      const __m256i hi = _mm256_set_m128i(sub[4 * m + 3], sub[4 * m + 2]);
      dm[m] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    for (int k = 0; k < 4; ++k) {
      // Lane s (mod 8) takes dword 4 (s % 4) + k of dm[s / 4]; the first permute serves
      // s < 8 from dm[0], dm[1], the second s >= 8 from dm[2], dm[3].
      const __m512i idx = _mm512_set_epi32(28 + k, 24 + k, 20 + k, 16 + k, 12 + k, 8 + k, 4 + k,
                                           k, 28 + k, 24 + k, 20 + k, 16 + k, 12 + k, 8 + k,
                                           4 + k, k);
      const __m512i lo = _mm512_permutex2var_epi32(dm[0], idx, dm[1]);
      const __m512i hi = _mm512_permutex2var_epi32(dm[2], idx, dm[3]);
      _mm512_storeu_si512(out[b].qs + 64 * k, _mm512_mask_blend_epi32(0xFF00, lo, hi));
    }
    FinishQ8K(&out[b]);
  }
}

// ============================== Legacy 32-weight blocks ==============================
// One block is one 256-bit vector of 32 integers in natural order.

QWEN_INLINE __m256i Nibbles(const uint8_t* qs) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
}

// Adds 16 to each byte whose bit in the 32-bit qh is set.
QWEN_INLINE __m256i WithFifthBit(__m256i v, const uint8_t* qh) {
  uint32_t bits;
  __builtin_memcpy(&bits, qh, 4);
  return _mm256_mask_add_epi8(v, static_cast<__mmask32>(bits), v, _mm256_set1_epi8(16));
}

// Signed weights (q - offset) of one block, and their f16 scale.
struct LegacySigned {
  __m256i q;
  float d;
};

QWEN_INLINE LegacySigned UnpackQ4_0(const uint8_t* p) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(p);
  return {_mm256_sub_epi8(Nibbles(b->qs), _mm256_set1_epi8(8)), Half(b->d)};
}
QWEN_INLINE LegacySigned UnpackQ5_0(const uint8_t* p) {
  const auto* b = reinterpret_cast<const BlockQ5_0*>(p);
  return {_mm256_sub_epi8(WithFifthBit(Nibbles(b->qs), b->qh), _mm256_set1_epi8(16)), Half(b->d)};
}
QWEN_INLINE LegacySigned UnpackQ8_0(const uint8_t* p) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(p);
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)), Half(b->d)};
}

// Unsigned weights q of one block with scale d and minimum m (value d q + m).
struct LegacyMin {
  __m256i q;
  float d, m;
};

QWEN_INLINE LegacyMin UnpackQ4_1(const uint8_t* p) {
  const auto* b = reinterpret_cast<const BlockQ4_1*>(p);
  return {Nibbles(b->qs), Half(b->d), Half(b->m)};
}
QWEN_INLINE LegacyMin UnpackQ5_1(const uint8_t* p) {
  const auto* b = reinterpret_cast<const BlockQ5_1*>(p);
  return {WithFifthBit(Nibbles(b->qs), b->qh), Half(b->d), Half(b->m)};
}

struct Q4_0T {
  static constexpr int kBytes = 18;
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) { return UnpackQ4_0(p); }
};
struct Q5_0T {
  static constexpr int kBytes = 22;
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) { return UnpackQ5_0(p); }
};
struct Q8_0T {
  static constexpr int kBytes = 34;
  static QWEN_INLINE LegacySigned Unpack(const uint8_t* p) { return UnpackQ8_0(p); }
};
struct Q4_1T {
  static constexpr int kBytes = 20;
  static QWEN_INLINE LegacyMin Unpack(const uint8_t* p) { return UnpackQ4_1(p); }
};
struct Q5_1T {
  static constexpr int kBytes = 24;
  static QWEN_INLINE LegacyMin Unpack(const uint8_t* p) { return UnpackQ5_1(p); }
};

// Dequantization: q * d (signed) or q * d + m, as the scalar reference (no fused multiply-add).
QWEN_INLINE void StoreScaled(__m256i q_s8, __m512 d, float* dst) {
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q_s8)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q_s8, 1)));
  _mm512_storeu_ps(dst, _mm512_mul_ps(lo, d));
  _mm512_storeu_ps(dst + 16, _mm512_mul_ps(hi, d));
}

template <class T>
void DequantLegacySigned(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const LegacySigned u = T::Unpack(p + b * T::kBytes);
    StoreScaled(u.q, _mm512_set1_ps(u.d), dst + b * kQK);
  }
}

template <class T>
void DequantLegacyMin(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const LegacyMin u = T::Unpack(p + b * T::kBytes);
    const __m512 d = _mm512_set1_ps(u.d), m = _mm512_set1_ps(u.m);
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(u.q)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(u.q, 1)));
    _mm512_storeu_ps(dst + b * kQK, _mm512_add_ps(_mm512_mul_ps(lo, d), m));
    _mm512_storeu_ps(dst + b * kQK + 16, _mm512_add_ps(_mm512_mul_ps(hi, d), m));
  }
}

// Signed weights times signed activations through vpdpbusd (unsigned x signed): |w| times a with
// w's sign moved onto a.
// ============================== K-quants ==============================

// One unpacked super-block: w[k] lane s = the 4 unsigned weights 16 s + 4 k .. 16 s + 4 k + 3;
// weight value = dsc_s * w - bias_s / (unit) for the dot product's folding (see each type).
struct KBlock {
  __m512i w[4];
  __m512 dsc;   // per sub-block multiplier of the unsigned integer weight
  __m512 bias;  // per sub-block amount subtracted per unit of activation sum
};

// Constant vectors are built with _mm512_set_epi32 from lane formulas; inlined into the loops,
// the compiler keeps them in registers.
#define QWEN_LANES(expr)                                                                          \
  _mm512_set_epi32(L(15, expr), L(14, expr), L(13, expr), L(12, expr), L(11, expr), L(10, expr), \
                   L(9, expr), L(8, expr), L(7, expr), L(6, expr), L(5, expr), L(4, expr),       \
                   L(3, expr), L(2, expr), L(1, expr), L(0, expr))
#define L(s_, expr) ([](int s) { return (expr); }(s_))

// Q4_K / Q5_K scales: 8 pairs (sc, mn) of 6 bits; lane s gets pair j = s / 2. `dm` points at
// the block's (d, dmin) halves. The 6-bit fields are untangled in 128-bit dword lanes,
// interleaved as sc_j in lane 2j and mn_j in lane 2j + 1, scaled by (d, dmin) alternating, and
// spread to the sub-block lanes.
//   j < 4:  sc = x[j] & 63,                          mn = x[j + 4] & 63
//   j >= 4: sc = (x[j + 4] & 15) | (x[j - 4] >> 6) << 4,  mn = (x[j + 4] >> 4) | (x[j] >> 6) << 4
// `sc_unit` multiplies each lane's dsc (a unit change of the unpacked weights).
QWEN_INLINE void K4Scales(const uint8_t* dm, const uint8_t* scales, __m512 sc_unit, __m512* dsc,
                          __m512* bias) {
  // Dwords x0, x1, x2 of the 12 bytes (the 16-byte load ends inside qs). In dword lanes:
  //   [sc_lo, sc_hi, mn_lo, mn_hi] = [x0 & 3f, (x2 & 0f) | (x0 >> 2 & 30),
  //                                   x1 & 3f, (x2 >> 4 & 0f) | (x1 >> 2 & 30)]
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales));
  const __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(2, 1, 2, 0)),
                                   _mm_setr_epi32(0, 0, 0, 4));
  const __m128i low = _mm_and_si128(
      a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i b = _mm_srli_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(1, 1, 0, 0)), 2);
  // (b & mask) | low
  const __m128i fields =
      _mm_ternarylogic_epi32(b, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030), low, 0xEA);
  // Bytes [sc_0 mn_0 sc_1 mn_1 ...].
  const __m128i pairs = _mm_shuffle_epi8(
      fields, _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
  uint32_t halves;
  __builtin_memcpy(&halves, dm, 4);
  const __m512 scaled =
      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(pairs)),
                    _mm512_cvtph_ps(_mm256_set1_epi32(static_cast<int>(halves))));
  *dsc = _mm512_mul_ps(_mm512_permutexvar_ps(QWEN_LANES(2 * (s / 2)), scaled), sc_unit);
  *bias = _mm512_permutexvar_ps(QWEN_LANES(2 * (s / 2) + 1), scaled);
}

// Q4_K: lane s of piece k reads qs dword 8 (s / 4) + 4 (s % 2) + k, nibble (s / 2) % 2.
QWEN_INLINE void Q4KNibbles(const uint8_t* qs, __m512i* w) {
  const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64);
  const __m512i shift = QWEN_LANES(4 * ((s / 2) % 2));
  const __m512i idx0 = QWEN_LANES(8 * (s / 4) + 4 * (s % 2));
  const __m512i nib = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i idx = _mm512_add_epi32(idx0, _mm512_set1_epi32(k));
    w[k] = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutex2var_epi32(q0, idx, q1), shift), nib);
  }
}

struct Q4KT {
  static constexpr int kBytes = 144;
  // Value d sc q - dmin mn: dsc = d sc, bias = dmin mn. For the dot product the high nibbles are
  // left in place (16 q, still an unsigned byte) and their lanes' dsc divided by 16, exactly:
  // one AND per piece instead of a shift and an AND.
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ4_K*>(p);
    const __m512i q0 = _mm512_loadu_si512(b->qs), q1 = _mm512_loadu_si512(b->qs + 64);
    const __m512i idx0 = QWEN_LANES(8 * (s / 4) + 4 * (s % 2));
    const __m512i mask = QWEN_LANES((s / 2) % 2 ? static_cast<int>(0xF0F0F0F0) : 0x0F0F0F0F);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i idx = _mm512_add_epi32(idx0, _mm512_set1_epi32(j));
      k->w[j] = _mm512_and_si512(_mm512_permutex2var_epi32(q0, idx, q1), mask);
    }
    const __m512 unshift = _mm512_castsi512_ps(
        QWEN_LANES((s / 2) % 2 ? 0x3d800000 /* 1/16 */ : 0x3f800000 /* 1 */));
    K4Scales(p, b->scales, unshift, &k->dsc, &k->bias);
  }
  static QWEN_INLINE void UnpackExact(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ4_K*>(p);
    Q4KNibbles(b->qs, k->w);
    K4Scales(p, b->scales, _mm512_set1_ps(1.0f), &k->dsc, &k->bias);
  }
  // Dequantized value of unsigned weight u in a lane with (dsc, bias): as the scalar reference.
  static QWEN_INLINE __m512 Value(__m512i u, __m512 dsc, __m512 bias) {
    return _mm512_sub_ps(_mm512_mul_ps(dsc, _mm512_cvtepi32_ps(u)), bias);
  }
};

struct Q5KT {
  static constexpr int kBytes = 176;
  // Q4_K plus bit 4 of lane s at bit s / 2 of qh dword 4 (s % 2) + k.
  static QWEN_INLINE void UnpackExact(const uint8_t* p, KBlock* k) { Unpack(p, k); }
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ5_K*>(p);
    Q4KNibbles(b->qs, k->w);
    const __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh)));
    const __m512i idx0 = QWEN_LANES(4 * (s % 2));
    const __m512i bit = QWEN_LANES(0x01010101 * (1 << (s / 2)));
    const __m512i sixteen = _mm512_set1_epi8(16);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i h = _mm512_permutexvar_epi32(_mm512_add_epi32(idx0, _mm512_set1_epi32(j)), qh);
      const __mmask64 set = _mm512_test_epi8_mask(h, bit);
      k->w[j] = _mm512_mask_add_epi8(k->w[j], set, k->w[j], sixteen);
    }
    K4Scales(p, b->scales, _mm512_set1_ps(1.0f), &k->dsc, &k->bias);
  }
  static QWEN_INLINE __m512 Value(__m512i u, __m512 dsc, __m512 bias) {
    return _mm512_sub_ps(_mm512_mul_ps(dsc, _mm512_cvtepi32_ps(u)), bias);
  }
};

struct Q6KT {
  static constexpr int kBytes = 210;
  // Unsigned u = q + 32 (the stored 6 bits): value d sc (u - 32); dsc = d sc, bias = 32 dsc.
  // Lane s of piece k: low 4 bits from ql dword 16 (s / 8) + 8 (g % 2) + 4 (s % 2) + k, nibble
  // g / 2, with g = (s / 2) % 4; high 2 bits at bits 2g of qh dword 8 (s / 8) + 4 (s % 2) + k,
  // rotated to bits 4-5.
  static QWEN_INLINE void UnpackExact(const uint8_t* p, KBlock* k) { Unpack(p, k); }
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ6_K*>(p);
    const __m512i l0 = _mm512_loadu_si512(b->ql), l1 = _mm512_loadu_si512(b->ql + 64);
    const __m512i h = _mm512_loadu_si512(b->qh);
    const __m512i idx_l0 = QWEN_LANES(16 * (s / 8) + 8 * (((s / 2) % 4) % 2) + 4 * (s % 2));
    const __m512i shift_l = QWEN_LANES(4 * (((s / 2) % 4) / 2));
    const __m512i idx_h0 = QWEN_LANES(8 * (s / 8) + 4 * (s % 2));
    const __m512i rot_h = QWEN_LANES((36 - 2 * ((s / 2) % 4)) % 32);
    const __m512i nib = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i kv = _mm512_set1_epi32(j);
      const __m512i low = _mm512_srlv_epi32(
          _mm512_permutex2var_epi32(l0, _mm512_add_epi32(idx_l0, kv), l1), shift_l);
      const __m512i high = _mm512_and_si512(
          _mm512_rolv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx_h0, kv), h), rot_h),
          top);
      // (low & 0x0F) | high
      k->w[j] = _mm512_ternarylogic_epi32(low, high, nib, 0xEC);
    }
    const __m512 sc = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales))));
    k->dsc = _mm512_mul_ps(HalfBroadcast(b->d), sc);
    k->bias = _mm512_mul_ps(k->dsc, _mm512_set1_ps(32.0f));
  }
  static QWEN_INLINE __m512 Value(__m512i u, __m512 dsc, __m512) {
    return _mm512_mul_ps(dsc, _mm512_cvtepi32_ps(_mm512_sub_epi32(u, _mm512_set1_epi32(32))));
  }
};

// Q2_K and Q3_K: lane s of piece k reads qs dword 8 (s / 8) + 4 (s % 2) + k, bits 2g with
// g = (s / 2) % 4.
QWEN_INLINE void TwoBitPieces(const uint8_t* qs, __m512i* w) {
  const __m512i q = _mm512_loadu_si512(qs);
  const __m512i idx0 = QWEN_LANES(8 * (s / 8) + 4 * (s % 2));
  const __m512i shift = QWEN_LANES(2 * ((s / 2) % 4));
  const __m512i three = _mm512_set1_epi8(3);
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    w[k] = _mm512_and_si512(
        _mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx0, _mm512_set1_epi32(k)), q),
                          shift),
        three);
  }
}

struct Q3KT {
  static constexpr int kBytes = 110;
  // Unsigned u = q + 4 = low 2 bits + 4 * hmask bit: value d (sc - 32) (u - 4); dsc =
  // d (sc - 32), bias = 4 dsc. The hmask bit of lane s is bit 4 (s / 8) + g of hmask dword
  // 4 (s % 2) + k.
  static QWEN_INLINE void UnpackExact(const uint8_t* p, KBlock* k) { Unpack(p, k); }
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ3_K*>(p);
    TwoBitPieces(b->qs, k->w);
    const __m512i hm =
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hmask)));
    const __m512i idx0 = QWEN_LANES(4 * (s % 2));
    const __m512i bit = QWEN_LANES(0x01010101 * (1 << (4 * (s / 8) + (s / 2) % 4)));
    const __m512i four = _mm512_set1_epi8(4);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i h = _mm512_permutexvar_epi32(_mm512_add_epi32(idx0, _mm512_set1_epi32(j)), hm);
      k->w[j] = _mm512_mask_add_epi8(k->w[j], _mm512_test_epi8_mask(h, bit), k->w[j], four);
    }
    // 6-bit scales: low nibble of scale s in byte s % 8 (high nibble for s >= 8), top 2 bits at
    // bits 2 (s / 4) of byte 8 + s % 4. Untangled in 128-bit dword lanes t (scales 4t .. 4t + 3):
    //   low  = [x0, x1, x0 >> 4, x1 >> 4] & 0f
    //   high = [x2 << 4, x2 << 2, x2, x2 >> 2] & 30
    const __m128i x = _mm_maskz_loadu_epi8(0x0FFF, b->scales);
    const __m128i low = _mm_and_si128(
        _mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 1, 0)), _mm_setr_epi32(0, 0, 4, 4)),
        _mm_set1_epi8(0x0F));
    const __m128i x2 = _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 2, 2, 2));
    const __m128i high = _mm_srlv_epi32(_mm_sllv_epi32(x2, _mm_setr_epi32(4, 2, 0, 0)),
                                        _mm_setr_epi32(0, 0, 0, 2));
    // (high & 0x30) | low
    const __m128i sc6 = _mm_ternarylogic_epi32(high, _mm_set1_epi8(0x30), low, 0xEA);
    const __m512i sc = _mm512_sub_epi32(_mm512_cvtepu8_epi32(sc6), _mm512_set1_epi32(32));
    k->dsc = _mm512_mul_ps(HalfBroadcast(b->d), _mm512_cvtepi32_ps(sc));
    k->bias = _mm512_mul_ps(k->dsc, _mm512_set1_ps(4.0f));
  }
  static QWEN_INLINE __m512 Value(__m512i u, __m512 dsc, __m512) {
    return _mm512_mul_ps(dsc, _mm512_cvtepi32_ps(_mm512_sub_epi32(u, _mm512_set1_epi32(4))));
  }
};

struct Q2KT {
  static constexpr int kBytes = 84;
  // Value d (sc & 15) q - dmin (sc >> 4). For the dot product each 2-bit field stays in place
  // (4^g q, at most 192) and its lanes' dsc is divided by 4^g, exactly.
  static QWEN_INLINE void Unpack(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
    const __m512i q = _mm512_loadu_si512(b->qs);
    const __m512i idx0 = QWEN_LANES(8 * (s / 8) + 4 * (s % 2));
    const __m512i mask = QWEN_LANES(0x03030303 << (2 * ((s / 2) % 4)));
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      k->w[j] = _mm512_and_si512(
          _mm512_permutexvar_epi32(_mm512_add_epi32(idx0, _mm512_set1_epi32(j)), q), mask);
    }
    Scales(p, k);
    // 4^-g = 2^(-2g): exponent field 127 - 2g.
    const __m512 unshift = _mm512_castsi512_ps(QWEN_LANES((127 - 2 * ((s / 2) % 4)) << 23));
    k->dsc = _mm512_mul_ps(k->dsc, unshift);
  }
  static QWEN_INLINE void UnpackExact(const uint8_t* p, KBlock* k) {
    TwoBitPieces(reinterpret_cast<const BlockQ2_K*>(p)->qs, k->w);
    Scales(p, k);
  }
  static QWEN_INLINE void Scales(const uint8_t* p, KBlock* k) {
    const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
    const __m512i x =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
    const __m512i sc = _mm512_and_si512(x, _mm512_set1_epi32(15));
    const __m512i mn = _mm512_srli_epi32(x, 4);
    k->dsc = _mm512_mul_ps(HalfBroadcast(b->d), _mm512_cvtepi32_ps(sc));
    k->bias = _mm512_mul_ps(HalfBroadcast(b->dmin), _mm512_cvtepi32_ps(mn));
  }
  static QWEN_INLINE __m512 Value(__m512i u, __m512 dsc, __m512 bias) {
    return _mm512_sub_ps(_mm512_mul_ps(dsc, _mm512_cvtepi32_ps(u)), bias);
  }
};

#undef L
#undef QWEN_LANES

// Dequantization in natural order: the inverse of the lane interleave, then each sub-block's
// 16 weights through T::Value with that sub-block's scales.
template <class T>
void DequantK(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  alignas(64) float dsc[16], bias[16];
  for (int64_t b = 0; b < n / kQKK; ++b) {
    KBlock k;
    T::UnpackExact(p + b * T::kBytes, &k);
    _mm512_store_ps(dsc, k.dsc);
    _mm512_store_ps(bias, k.bias);
    float* out = dst + b * kQKK;
#pragma GCC unroll 4
    for (int m = 0; m < 4; ++m) {
      // Lane 4 r + k of sub-blocks 4m .. 4m + 3 = lane 4m + r of piece k.
      const __m512i idx = _mm512_set_epi32(16 + 4 * m + 3, 4 * m + 3, 16 + 4 * m + 3, 4 * m + 3,
                                           16 + 4 * m + 2, 4 * m + 2, 16 + 4 * m + 2, 4 * m + 2,
                                           16 + 4 * m + 1, 4 * m + 1, 16 + 4 * m + 1, 4 * m + 1,
                                           16 + 4 * m, 4 * m, 16 + 4 * m, 4 * m);
      const __m512i lo = _mm512_permutex2var_epi32(k.w[0], idx, k.w[1]);
      const __m512i hi = _mm512_permutex2var_epi32(k.w[2], idx, k.w[3]);
      const __m512i sub4 = _mm512_mask_blend_epi32(0xCCCC, lo, hi);
      const __m128i parts[4] = {_mm512_extracti32x4_epi32(sub4, 0), _mm512_extracti32x4_epi32(sub4, 1),
                                _mm512_extracti32x4_epi32(sub4, 2), _mm512_extracti32x4_epi32(sub4, 3)};
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const int s = 4 * m + r;
        const __m512i u = _mm512_cvtepu8_epi32(parts[r]);
        _mm512_storeu_ps(out + 16 * s,
                         T::Value(u, _mm512_set1_ps(dsc[s]), _mm512_set1_ps(bias[s])));
      }
    }
  }
}

// ============================== Q8_0 products ==============================
//
// Q8_0 weights against Q8_0 activations with 16 rows in the lanes and VNNI. The image of a block
// of 16 rows: 8 vectors whose lane r holds qs dword j of row r, each byte offset by 128 (u = q +
// 128, unsigned for vpdpbusd), then the 16 rows' d. Per column and block:
// S = sum_j vpdpbusd(u_j, a dword j) - 128 * sum(a), the exact sum q a of every row, then
// acc = fma(float(S), d * da, acc): the arithmetic of every level (kernels.h). The packed layout
// (pack16, a group of 16 rows) stores exactly these images.

constexpr int kQ80Bytes = 34;
constexpr size_t kQ80Image = 16 * kQ80Bytes;
constexpr int kQ80Cols = 8;
constexpr int64_t kQ80Chunk = 16;  // blocks imaged at a time from the file's rows
constexpr int64_t kQ80ColChunk = 64;

QWEN_INLINE void MakeQ80Image(const uint8_t* const* rows, int64_t off, uint8_t* dst) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int h = 0; h < 2; ++h) {
    __m256i v[8];
    for (int r = 0; r < 8; ++r) {
      v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[8 * h + r] + off + 2));
    }
    Transpose8x8(v);
    for (int j = 0; j < 8; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * j + 32 * h),
                          _mm256_xor_si256(v[j], flip));
    }
  }
  for (int r = 0; r < 16; ++r) std::memcpy(dst + 512 + 2 * r, rows[r] + off, 2);
}

// The sum of a Q8_0 block's 32 values.
QWEN_INLINE int32_t Q80Sum(const BlockQ8_0& a) {
  const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs)),
                                     _mm256_set1_epi8(static_cast<char>(0x80)));
  const __m256i sad = _mm256_sad_epu8(u, _mm256_setzero_si256());
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
  return static_cast<int32_t>(_mm_cvtsi128_si64(_mm_add_epi64(t, _mm_unpackhi_epi64(t, t)))) -
         32 * 128;
}

template <int N>
QWEN_INLINE void Q80Blocks(const uint8_t* images, int64_t n_blocks, const BlockQ8_0* const* ab,
                           __m512* acc) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* img = images + b * kQ80Image;
    __m512i s[N];
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) s[c] = _mm512_set1_epi32(-128 * Q80Sum(ab[c][b]));
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m512i u = _mm512_loadu_si512(img + 64 * j);
#pragma GCC unroll 8
      for (int c = 0; c < N; ++c) {
        int32_t q;
        std::memcpy(&q, ab[c][b].qs + 4 * j, 4);
        s[c] = _mm512_dpbusd_epi32(s[c], u, _mm512_set1_epi32(q));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(img + 512)));
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) {
      const __m512 da = _mm512_set1_ps(Half(ab[c][b].d));
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), _mm512_mul_ps(d, da), acc[c]);
    }
  }
}

QWEN_INLINE void Q80Pass(const uint8_t* images, int64_t b0, int64_t nb, int n_rows,
                         const uint8_t* a, size_t a_stride, int64_t n_cols, float* y,
                         size_t y_stride) {
  const __mmask16 m = TailMask16(n_rows);
  for (int64_t c0 = 0; c0 < n_cols; c0 += kQ80Cols) {
    const int nc = static_cast<int>(n_cols - c0 < kQ80Cols ? n_cols - c0 : kQ80Cols);
    const BlockQ8_0* ab[kQ80Cols];
    __m512 acc[kQ80Cols];
    for (int c = 0; c < nc; ++c) {
      ab[c] = reinterpret_cast<const BlockQ8_0*>(a + (c0 + c) * a_stride) + b0;
      acc[c] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, y + (c0 + c) * y_stride);
    }
    switch (nc) {
      case 1: Q80Blocks<1>(images, nb, ab, acc); break;
      case 2: Q80Blocks<2>(images, nb, ab, acc); break;
      case 3: Q80Blocks<3>(images, nb, ab, acc); break;
      case 4: Q80Blocks<4>(images, nb, ab, acc); break;
      case 5: Q80Blocks<5>(images, nb, ab, acc); break;
      case 6: Q80Blocks<6>(images, nb, ab, acc); break;
      case 7: Q80Blocks<7>(images, nb, ab, acc); break;
      default: Q80Blocks<8>(images, nb, ab, acc); break;
    }
    for (int c = 0; c < nc; ++c) _mm512_mask_storeu_ps(y + (c0 + c) * y_stride, m, acc[c]);
  }
}

void Q80Tile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
             int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / 32;
  alignas(64) uint8_t images[kQ80Chunk * kQ80Image];
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int rows = static_cast<int>(n_rows - r0 < 16 ? n_rows - r0 : 16);
    const uint8_t* ptrs[16];
    for (int r = 0; r < 16; ++r) ptrs[r] = wp + (r0 + (r < rows ? r : 0)) * w_stride;
    for (int64_t b0 = 0; b0 < nb; b0 += kQ80Chunk) {
      const int64_t cb = nb - b0 < kQ80Chunk ? nb - b0 : kQ80Chunk;
      for (int64_t b = 0; b < cb; ++b) {
        MakeQ80Image(ptrs, (b0 + b) * kQ80Bytes, images + b * kQ80Image);
      }
      Q80Pass(images, b0, cb, rows, ap, a_stride, n_cols, y + r0, y_stride);
    }
  }
}

void Q80Pack16(const void* w, size_t w_stride, int64_t n, void* dst) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const uint8_t* ptrs[16];
  for (int r = 0; r < 16; ++r) ptrs[r] = wp + r * w_stride;
  for (int64_t b = 0; b < n / 32; ++b) {
    MakeQ80Image(ptrs, b * kQ80Bytes, static_cast<uint8_t*>(dst) + b * kQ80Image);
  }
}

void Q80TilePacked(const void* wp, int64_t n_groups, const void* a, size_t a_stride,
                   int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const int64_t nb = n / 32;
  const auto* ap = static_cast<const uint8_t*>(a);
  for (int64_t c0 = 0; c0 < n_cols; c0 += kQ80ColChunk) {
    const int64_t nc = n_cols - c0 < kQ80ColChunk ? n_cols - c0 : kQ80ColChunk;
    for (int64_t g = 0; g < n_groups; ++g) {
      Q80Pass(static_cast<const uint8_t*>(wp) + g * nb * kQ80Image, 0, nb, 16,
              ap + c0 * a_stride, a_stride, nc, y + c0 * y_stride + 16 * g, y_stride);
    }
  }
}

}  // namespace

void FillAvx512Kernels(KernelTable* t) {
  auto idx = [](GgmlType type) { return static_cast<uint32_t>(type); };
  t->dequantize[idx(GgmlType::kF16)] = DequantFloat<F16Row>;
  t->dequantize[idx(GgmlType::kBF16)] = DequantFloat<BF16Row>;
  t->dot_tile[idx(GgmlType::kF32)] = FloatTile<F32Row>;
  t->dot_tile[idx(GgmlType::kF16)] = FloatTile<F16Row>;
  t->dot_tile[idx(GgmlType::kBF16)] = FloatTile<BF16Row>;
  t->dot_tile[idx(GgmlType::kQ8_0)] = Q80Tile;
  t->pack16[idx(GgmlType::kQ8_0)] = Q80Pack16;
  t->dot_tile_packed[idx(GgmlType::kQ8_0)] = Q80TilePacked;

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

  const GgmlType k_quants[] = {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                               GgmlType::kQ6_K};
  for (int i = 0; i < 5; ++i) t->quantize_activation[idx(k_quants[i])] = QuantizeQ8_K;
  t->dequantize[idx(GgmlType::kQ2_K)] = DequantK<Q2KT>;
  t->dequantize[idx(GgmlType::kQ3_K)] = DequantK<Q3KT>;
  t->dequantize[idx(GgmlType::kQ4_K)] = DequantK<Q4KT>;
  t->dequantize[idx(GgmlType::kQ5_K)] = DequantK<Q5KT>;
  t->dequantize[idx(GgmlType::kQ6_K)] = DequantK<Q6KT>;
}

}  // namespace qwen::quant::internal

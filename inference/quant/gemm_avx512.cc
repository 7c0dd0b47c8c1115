// AVX-512 VNNI tile products for the k-quants: weight rows in the vector lanes.
//
// dot_tile for Q3_K, Q4_K, Q5_K and Q6_K. The rows of a tile are taken 16 at a time, one per
// 32-bit lane. Each 256-weight block of those 16 rows is unpacked ONCE into 64 vectors of
// unsigned bytes, vector g holding weights 4g .. 4g + 3 of every row (a 16 x 16 dword transpose
// of the packed bits, then shifts and masks), plus the rows' sub-block scales as 16-bit integers
// in the lanes. Every activation column then costs one vpdpbusd per 4 weights of the 16 rows (4
// activation bytes broadcast from the Q8_K block), and sub-block scales are applied in integers
// with vpdpwssd (Q6_K: vpmulld) on each sub-block's sum, so a block ends in one exact integer per
// row and column. The unpack is shared by all columns: with many columns (prefill, batched
// decode) the loop runs close to one vpdpbusd per cycle; with one column (decode) it is a
// matrix-vector product whose cost is the unpack.
//
// Every (row, column) result is computed by the same operations whatever the number of rows and
// columns of the call and wherever the row falls in a tile (each lane is independent, each
// column has its own accumulators), so a column's result does not depend on the other columns
// batched with it. Per block the arithmetic is:
//   S = sum over sub-blocks of sc_s * sum_i q_i a_i       (exact int32)
//   M = sum over sub-blocks of mn_s * bsum_s              (Q4_K, Q5_K; exact int32)
//   acc = fma(float(S), d * da, acc); acc = fma(float(M), -dmin * da, acc)
// with blocks taken in order and acc starting at 0 (Q3_K folds a factor 256 into S and 1/256
// into d, both exact).
//
// Same discipline as kernels_avx512.cc: everything in an anonymous namespace, intrinsics and
// plain loops only; FillAvx512GemmKernels is the only visible symbol.
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

constexpr int kQKK = 256;
constexpr int kLanes = 16;  // rows per tile
constexpr int kGroup = 8;   // columns whose accumulators stay in registers

// One 256-weight block of 16 rows, unpacked.
struct alignas(64) Unpacked {
  __m512i w[64];   // w[g] lane r: unsigned weights 4g .. 4g + 3 of row r
  __m512i sc[16];  // per-type sub-block scales (see each type)
  __m512i mn[4];   // Q4_K / Q5_K: pairs (mn_2i, mn_2i+1) as int16
  __m512 d;        // per-row factor of S
  __m512 dmin;     // per-row factor of M (negated)
};

QWEN_INLINE int32_t Load32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

QWEN_INLINE __m512i Bytes(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }

// In place: v[i] lane j (dword j of row i) becomes v[j] lane i.
QWEN_INLINE void Transpose16(__m512i* v) {
  __m512i a[16], b[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  // b[4i + x] 128-bit lane L: dword 4L + x of rows 4i .. 4i + 3.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x) {
    const __m512i c = _mm512_shuffle_i32x4(b[x], b[4 + x], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i d = _mm512_shuffle_i32x4(b[x], b[4 + x], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512i e = _mm512_shuffle_i32x4(b[8 + x], b[12 + x], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i f = _mm512_shuffle_i32x4(b[8 + x], b[12 + x], _MM_SHUFFLE(3, 1, 3, 1));
    v[x] = _mm512_shuffle_i32x4(c, e, _MM_SHUFFLE(2, 0, 2, 0));
    v[8 + x] = _mm512_shuffle_i32x4(c, e, _MM_SHUFFLE(3, 1, 3, 1));
    v[4 + x] = _mm512_shuffle_i32x4(d, f, _MM_SHUFFLE(2, 0, 2, 0));
    v[12 + x] = _mm512_shuffle_i32x4(d, f, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// 16 bytes at rows[r] + off for the 16 rows, as 4 vectors: x[i] lane r = dword i of row r.
QWEN_INLINE void Gather4(const uint8_t* const* rows, int64_t off, __m512i* x) {
  __m512i z[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    __m512i t = _mm512_castsi128_si512(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q] + off)));
    t = _mm512_inserti32x4(
        t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 1] + off)), 1);
    t = _mm512_inserti32x4(
        t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 2] + off)), 2);
    z[q] = _mm512_inserti32x4(
        t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 3] + off)), 3);
  }
  // z[q] lane 4j + i = row 4q + j dword i.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512i idx = _mm512_setr_epi32(i, 4 + i, 8 + i, 12 + i, 16 + i, 20 + i, 24 + i, 28 + i,
                                          i, 4 + i, 8 + i, 12 + i, 16 + i, 20 + i, 24 + i, 28 + i);
    const __m512i lo = _mm512_permutex2var_epi32(z[0], idx, z[1]);
    const __m512i hi = _mm512_permutex2var_epi32(z[2], idx, z[3]);
    x[i] = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));
  }
}

// Half-precision values at rows[r] + off, as floats in lane r.
QWEN_INLINE __m512 GatherHalf(const uint8_t* const* rows, int64_t off) {
  alignas(32) uint16_t h[16];
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) std::memcpy(&h[r], rows[r] + off, 2);
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h)));
}

// The low 16 bits of each lane as a half-precision value.
QWEN_INLINE __m512 LowHalf(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }

// pshufb control that moves byte i of every dword to byte `to` of it, zeroing the other bytes.
QWEN_INLINE __m512i ByteToSlot(int i, int to) {
  int32_t c[4];
  for (int d = 0; d < 4; ++d) {
    uint32_t v = 0x80808080u;
    v &= ~(0xFFu << (8 * to));
    v |= static_cast<uint32_t>(4 * d + i) << (8 * to);
    c[d] = static_cast<int32_t>(v);
  }
  return _mm512_broadcast_i32x4(_mm_setr_epi32(c[0], c[1], c[2], c[3]));
}

// pshufb control: bytes i and i + 1 of every dword to bytes 0 and 2, zero elsewhere (two
// unsigned bytes as two int16).
QWEN_INLINE __m512i BytePairToWords(int i) {
  int32_t c[4];
  for (int d = 0; d < 4; ++d) {
    c[d] = static_cast<int32_t>(0x80008000u | static_cast<uint32_t>(4 * d + i) |
                                (static_cast<uint32_t>(4 * d + i + 1) << 16));
  }
  return _mm512_broadcast_i32x4(_mm_setr_epi32(c[0], c[1], c[2], c[3]));
}

// Q8_K value group g (values 4g .. 4g + 3) of an activation block, as a broadcast dword. See
// BlockQ8_K: value 16 s + 4 k + b is at qs[64 k + 4 s + b], so group g = 4 s + k is at
// 64 (g % 4) + 4 (g / 4).
QWEN_INLINE __m512i Act(const BlockQ8_K* a, int g) {
  return _mm512_set1_epi32(Load32(a->qs + 64 * (g % 4) + 4 * (g / 4)));
}

// Q4_K / Q5_K scales and minimums from the 12 scale bytes (x1, x2, x3 = dwords 1-3 of the
// block head, after d and dmin in dword 0).
QWEN_INLINE void K4Scales(const __m512i* head, Unpacked* t) {
  const __m512i x0 = head[1], x1 = head[2], x2 = head[3];
  const __m512i m3f = Bytes(0x3F), m0f = Bytes(0x0F);
  // Bytes j of sca: sc_j (j < 4); of scb: sc_{j+4}; likewise mna, mnb.
  const __m512i sca = _mm512_and_si512(x0, m3f);
  const __m512i scb = _mm512_and_si512(
      _mm512_ternarylogic_epi32(m0f, x2, _mm512_srli_epi32(x0, 2), 0xCA), m3f);
  const __m512i mna = _mm512_and_si512(x1, m3f);
  const __m512i mnb = _mm512_and_si512(
      _mm512_ternarylogic_epi32(m0f, _mm512_srli_epi32(x2, 4), _mm512_srli_epi32(x1, 2), 0xCA),
      m3f);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) t->sc[j] = _mm512_shuffle_epi8(j < 4 ? sca : scb, ByteToSlot(j % 4, 0));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t->mn[i] = _mm512_shuffle_epi8(i < 2 ? mna : mnb, BytePairToWords(2 * (i % 2)));
  }
  t->d = LowHalf(head[0]);
  t->dmin = _mm512_sub_ps(_mm512_setzero_ps(), LowHalf(_mm512_srli_epi32(head[0], 16)));
}

// ---------------------------------------------------------------------------------------------
// Q3_K: u = q + 4 in [0, 7]; per sub-block of 16 the integer sum starts at -4 bsum_s, so it is
// sum q a (|.| <= 8128, an int16), and vpdpwssd multiplies it by 256 (sc - 32) (the signed byte
// sc - 32 in the high byte of the low word: pshufb can place it, not sign-extend it).
struct Q3K {
  static constexpr int kBytes = 110;
  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Unpacked* t) {
    __m512i a[16], b[16];
    // a: hmask[0..31], qs[0..31]; b: qs[16..63], scales[12], d (62 bytes, the block's end).
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      a[r] = _mm512_loadu_si512(rows[r] + off);
      b[r] = _mm512_maskz_loadu_epi8(0x3FFFFFFFFFFFFFFFull, rows[r] + off + 48);
    }
    Transpose16(a);
    Transpose16(b);
    const __m512i three = Bytes(3), four = Bytes(4);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) {
        const int qd = 8 * h + m;  // qs dword
        const __m512i q = qd < 8 ? a[8 + qd] : b[qd - 4];
        const __m512i hm = a[m];
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
          const __m512i lo = _mm512_and_si512(g == 0 ? q : _mm512_srli_epi32(q, 2 * g), three);
          const __mmask64 hb = _mm512_test_epi8_mask(hm, Bytes(1 << (4 * h + g)));
          t->w[32 * h + 8 * g + m] = _mm512_mask_add_epi8(lo, hb, lo, four);
        }
      }
    }
    const __m512i x0 = b[12], x1 = b[13], x2 = b[14];
    const __m512i m0f = Bytes(0x0F), m30 = Bytes(0x30), m32 = Bytes(32);
#pragma GCC unroll 4
    for (int gs = 0; gs < 4; ++gs) {
      // Bytes i: scale 4 gs + i.
      const __m512i src = gs % 2 == 0 ? x0 : x1;
      const __m512i low = _mm512_and_si512(gs < 2 ? src : _mm512_srli_epi32(src, 4), m0f);
      const __m512i hs = gs == 0   ? _mm512_slli_epi32(x2, 4)
                         : gs == 1 ? _mm512_slli_epi32(x2, 2)
                         : gs == 2 ? x2
                                   : _mm512_srli_epi32(x2, 2);
      const __m512i sc6 = _mm512_ternarylogic_epi32(m30, hs, low, 0xCA);
      const __m512i sgn = _mm512_sub_epi8(sc6, m32);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) t->sc[4 * gs + i] = _mm512_shuffle_epi8(sgn, ByteToSlot(i, 1));
    }
    t->d = _mm512_mul_ps(LowHalf(b[15]), _mm512_set1_ps(1.0f / 256.0f));
  }

  template <int NC>
  static QWEN_INLINE void Columns(const Unpacked& t, const BlockQ8_K* const* ab, __m512i* s,
                                  __m512i*) {
    alignas(64) int32_t init[NC][16];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const __m512i bs = _mm512_cvtepi16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[c]->bsums)));
      _mm512_store_si512(init[c], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 2)));
      s[c] = _mm512_setzero_si512();
    }
#pragma GCC unroll 1
    for (int sb = 0; sb < 16; ++sb) {
      const __m512i w0 = t.w[4 * sb], w1 = t.w[4 * sb + 1], w2 = t.w[4 * sb + 2],
                    w3 = t.w[4 * sb + 3], sc = t.sc[sb];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const int8_t* q = ab[c]->qs + 4 * sb;
        __m512i i = _mm512_set1_epi32(init[c][sb]);
        i = _mm512_dpbusd_epi32(i, w0, _mm512_set1_epi32(Load32(q)));
        i = _mm512_dpbusd_epi32(i, w1, _mm512_set1_epi32(Load32(q + 64)));
        i = _mm512_dpbusd_epi32(i, w2, _mm512_set1_epi32(Load32(q + 128)));
        i = _mm512_dpbusd_epi32(i, w3, _mm512_set1_epi32(Load32(q + 192)));
        s[c] = _mm512_dpwssd_epi32(s[c], i, sc);
      }
    }
  }
  static constexpr bool kHasMin = false;
};

// ---------------------------------------------------------------------------------------------
// Q4_K: u in [0, 15]; sums over half sub-blocks of 16 (|.| <= 30480) are multiplied by sc_j
// (int16) with vpdpwssd; the minimums' sum M = sum mn_j (bsum_2j + bsum_2j+1) likewise.
struct Q4K {
  static constexpr int kBytes = 144;
  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Unpacked* t) {
    __m512i a[16], b[16], head[4];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      a[r] = _mm512_loadu_si512(rows[r] + off + 16);
      b[r] = _mm512_loadu_si512(rows[r] + off + 80);
    }
    Transpose16(a);
    Transpose16(b);
    const __m512i nib = Bytes(0x0F);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) {
        const int qd = 8 * c + m;
        const __m512i q = qd < 16 ? a[qd] : b[qd - 16];
        t->w[16 * c + m] = _mm512_and_si512(q, nib);
        t->w[16 * c + 8 + m] = _mm512_and_si512(_mm512_srli_epi32(q, 4), nib);
      }
    }
    Gather4(rows, off, head);
    K4Scales(head, t);
  }

  template <int NC>
  static QWEN_INLINE void Columns(const Unpacked& t, const BlockQ8_K* const* ab, __m512i* s,
                                  __m512i* mo) {
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) s[c] = _mm512_setzero_si512();
#pragma GCC unroll 1
    for (int j = 0; j < 8; ++j) {
      const __m512i sc = t.sc[j];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int g0 = 8 * j + 4 * h;
        const __m512i w0 = t.w[g0], w1 = t.w[g0 + 1], w2 = t.w[g0 + 2], w3 = t.w[g0 + 3];
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) {
          __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, Act(ab[c], g0));
          i = _mm512_dpbusd_epi32(i, w1, Act(ab[c], g0 + 1));
          i = _mm512_dpbusd_epi32(i, w2, Act(ab[c], g0 + 2));
          i = _mm512_dpbusd_epi32(i, w3, Act(ab[c], g0 + 3));
          s[c] = _mm512_dpwssd_epi32(s[c], i, sc);
        }
      }
    }
    MinTerms<NC>(t, ab, mo);
  }

  template <int NC>
  static QWEN_INLINE void MinTerms(const Unpacked& t, const BlockQ8_K* const* ab, __m512i* mo) {
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      // Sums of 32 as int16 pairs: dwords 0, 1, 4, 5 = (B0, B1), (B2, B3), (B4, B5), (B6, B7).
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[c]->bsums));
      const __m256i b32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
      const __m256i pairs = _mm256_packs_epi32(b32, b32);
      alignas(32) int32_t p[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(p), pairs);
      __m512i m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), t.mn[0], _mm512_set1_epi32(p[0]));
      m = _mm512_dpwssd_epi32(m, t.mn[1], _mm512_set1_epi32(p[1]));
      m = _mm512_dpwssd_epi32(m, t.mn[2], _mm512_set1_epi32(p[4]));
      mo[c] = _mm512_dpwssd_epi32(m, t.mn[3], _mm512_set1_epi32(p[5]));
    }
  }
  static constexpr bool kHasMin = true;
};

// ---------------------------------------------------------------------------------------------
// Q5_K: u in [0, 31]; sums over quarter sub-blocks of 8 (|.| <= 31496) times sc_j.
struct Q5K {
  static constexpr int kBytes = 176;
  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Unpacked* t) {
    __m512i a[16], b[16], c2[16], head[4];
    // a: qh[0..31], qs[0..31]; b: qs[32..95]; c2: qs[64..127].
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      a[r] = _mm512_loadu_si512(rows[r] + off + 16);
      b[r] = _mm512_loadu_si512(rows[r] + off + 80);
      c2[r] = _mm512_loadu_si512(rows[r] + off + 112);
    }
    Transpose16(a);
    Transpose16(b);
    Transpose16(c2);
    const __m512i nib = Bytes(0x0F), sixteen = Bytes(16);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) {
        const int qd = 8 * c + m;
        const __m512i q = qd < 8 ? a[8 + qd] : qd < 24 ? b[qd - 8] : c2[qd - 16];
        const __m512i qh = a[m];
        const __m512i lo = _mm512_and_si512(q, nib);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(q, 4), nib);
        t->w[16 * c + m] =
            _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh, Bytes(1 << (2 * c))), lo, sixteen);
        t->w[16 * c + 8 + m] = _mm512_mask_add_epi8(
            hi, _mm512_test_epi8_mask(qh, Bytes(1 << (2 * c + 1))), hi, sixteen);
      }
    }
    Gather4(rows, off, head);
    K4Scales(head, t);
  }

  template <int NC>
  static QWEN_INLINE void Columns(const Unpacked& t, const BlockQ8_K* const* ab, __m512i* s,
                                  __m512i* mo) {
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) s[c] = _mm512_setzero_si512();
#pragma GCC unroll 1
    for (int j = 0; j < 8; ++j) {
      const __m512i sc = t.sc[j];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const int g0 = 8 * j + 2 * k;
        const __m512i w0 = t.w[g0], w1 = t.w[g0 + 1];
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) {
          __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, Act(ab[c], g0));
          i = _mm512_dpbusd_epi32(i, w1, Act(ab[c], g0 + 1));
          s[c] = _mm512_dpwssd_epi32(s[c], i, sc);
        }
      }
    }
    Q4K::MinTerms<NC>(t, ab, mo);
  }
  static constexpr bool kHasMin = true;
};

// ---------------------------------------------------------------------------------------------
// Q6_K: u = q + 32 in [0, 63]; per sub-block of 16 the sum starts at -32 bsum_s (sum q a,
// up to 65024 in magnitude: not an int16), so the signed scale is applied with vpmulld.
struct Q6K {
  static constexpr int kBytes = 210;
  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Unpacked* t) {
    __m512i l0[16], l1[16], h[16], scs[4];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      l0[r] = _mm512_loadu_si512(rows[r] + off);
      l1[r] = _mm512_loadu_si512(rows[r] + off + 64);
      h[r] = _mm512_loadu_si512(rows[r] + off + 128);
    }
    Transpose16(l0);
    Transpose16(l1);
    Transpose16(h);
    const __m512i nib = Bytes(0x0F), m30 = Bytes(0x30);
    // Weight 128 hh + 32 g + l: low 4 bits in ql dword 16 hh + 8 (g % 2) + m, nibble g / 2;
    // high 2 bits at bits 2g of qh dword 8 hh + m.
#pragma GCC unroll 2
    for (int hh = 0; hh < 2; ++hh) {
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) {
        const __m512i qh = h[8 * hh + m];
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
          const int ld = 16 * hh + 8 * (g % 2) + m;
          const __m512i ql = ld < 16 ? l0[ld] : l1[ld - 16];
          const __m512i lo = g < 2 ? ql : _mm512_srli_epi32(ql, 4);
          const __m512i hs = g == 0   ? _mm512_slli_epi32(qh, 4)
                             : g == 1 ? _mm512_slli_epi32(qh, 2)
                             : g == 2 ? qh
                                      : _mm512_srli_epi32(qh, 2);
          t->w[32 * hh + 8 * g + m] =
              _mm512_ternarylogic_epi32(nib, lo, _mm512_and_si512(hs, m30), 0xCA);
        }
      }
    }
    Gather4(rows, off + 192, scs);
#pragma GCC unroll 16
    for (int s = 0; s < 16; ++s) {
      const __m512i v = scs[s / 4];
      t->sc[s] = _mm512_srai_epi32(s % 4 == 3 ? v : _mm512_slli_epi32(v, 24 - 8 * (s % 4)), 24);
    }
    t->d = GatherHalf(rows, off + 208);
  }

  template <int NC>
  static QWEN_INLINE void Columns(const Unpacked& t, const BlockQ8_K* const* ab, __m512i* s,
                                  __m512i*) {
    alignas(64) int32_t init[NC][16];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const __m512i bs = _mm512_cvtepi16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[c]->bsums)));
      _mm512_store_si512(init[c], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 5)));
      s[c] = _mm512_setzero_si512();
    }
#pragma GCC unroll 1
    for (int sb = 0; sb < 16; ++sb) {
      const __m512i w0 = t.w[4 * sb], w1 = t.w[4 * sb + 1], w2 = t.w[4 * sb + 2],
                    w3 = t.w[4 * sb + 3], sc = t.sc[sb];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const int8_t* q = ab[c]->qs + 4 * sb;
        __m512i i = _mm512_set1_epi32(init[c][sb]);
        i = _mm512_dpbusd_epi32(i, w0, _mm512_set1_epi32(Load32(q)));
        i = _mm512_dpbusd_epi32(i, w1, _mm512_set1_epi32(Load32(q + 64)));
        i = _mm512_dpbusd_epi32(i, w2, _mm512_set1_epi32(Load32(q + 128)));
        i = _mm512_dpbusd_epi32(i, w3, _mm512_set1_epi32(Load32(q + 192)));
        s[c] = _mm512_add_epi32(s[c], _mm512_mullo_epi32(i, sc));
      }
    }
  }
  static constexpr bool kHasMin = false;
};

// ---------------------------------------------------------------------------------------------

// One block of one column group: integer sums, then the float update of the 16 rows' partial
// results, which live in y (the first block starts from zero).
template <class T, int NC>
void Group(const Unpacked& t, const uint8_t* a, size_t a_stride, int64_t b, float* y,
           size_t y_stride, __mmask16 mask, bool first) {
  const BlockQ8_K* ab[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) ab[c] = reinterpret_cast<const BlockQ8_K*>(a + c * a_stride) + b;
  __m512i s[NC], m[NC];
  T::template Columns<NC>(t, ab, s, m);
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    float* yc = y + c * y_stride;
    __m512 acc = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, yc);
    const __m512 da = _mm512_set1_ps(ab[c]->d);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), _mm512_mul_ps(t.d, da), acc);
    if constexpr (T::kHasMin) {
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m[c]), _mm512_mul_ps(t.dmin, da), acc);
    }
    _mm512_mask_storeu_ps(yc, mask, acc);
  }
}

template <class T>
using GroupFn = void (*)(const Unpacked&, const uint8_t*, size_t, int64_t, float*, size_t,
                         __mmask16, bool);

template <class T>
struct Groups {
  static constexpr GroupFn<T> kFns[kGroup + 1] = {nullptr,        Group<T, 1>, Group<T, 2>,
                                                  Group<T, 3>,    Group<T, 4>, Group<T, 5>,
                                                  Group<T, 6>,    Group<T, 7>, Group<T, 8>};
};

// Weights are prefetched this many blocks ahead in each of the 16 rows.
constexpr int kPrefetchBlocks = 8;

template <class T>
void Tile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
          int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQKK;
  Unpacked t;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kLanes) {
    const int64_t rows = n_rows - r0 < kLanes ? n_rows - r0 : kLanes;
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    // Lanes past the last row repeat it (read, never stored).
    const uint8_t* rp[kLanes];
    for (int r = 0; r < kLanes; ++r) rp[r] = wp + (r0 + (r < rows ? r : rows - 1)) * w_stride;
    // The next tile's rows, block b while this tile works on block b: a tile's worth of
    // reads ahead, and nothing left for the hardware prefetcher to learn from 16 short streams.
    const int64_t next_rows = n_rows - r0 - kLanes;
    for (int64_t b = 0; b < nb; ++b) {
      if (next_rows > 0) {
        for (int r = 0; r < kLanes; ++r) {
          const uint8_t* p = rp[r] + (kLanes + (r < next_rows ? 0 : 0)) * w_stride +
                             b * T::kBytes;
          if (r < next_rows) {
            for (int o = 0; o < T::kBytes + 63; o += 64) {
              _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
            }
          }
        }
      }
      T::Unpack(rp, b * T::kBytes, &t);
      for (int64_t c0 = 0; c0 < n_cols; c0 += kGroup) {
        const int64_t nc = n_cols - c0 < kGroup ? n_cols - c0 : kGroup;
        Groups<T>::kFns[nc](t, ap + c0 * a_stride, a_stride, b, y + c0 * y_stride + r0, y_stride,
                            mask, b == 0);
      }
    }
  }
}

}  // namespace

void FillAvx512GemmKernels(KernelTable* t) {
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ3_K)] = Tile<Q3K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ4_K)] = Tile<Q4K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ5_K)] = Tile<Q5K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ6_K)] = Tile<Q6K>;
}

}  // namespace qwen::quant::internal

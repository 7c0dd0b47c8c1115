// AVX2 dot_tile for the k-quants (Q2_K .. Q6_K) and Q8_0, and their packed layout, for CPUs without
// AVX-512 (Zen 2 / Zen 3 EPYC, Intel client cores). No VNNI: products are vpmaddubsw (unsigned
// weight bytes times signed activation bytes, summed in pairs to int16) and vpmaddwd (int16
// pairs times int16 scales, summed to int32).
//
// Rows in the lanes. A block (256 weights) of 8 rows is handled as its "image": vector j holds
// dword j of each of the 8 rows' blocks (lane r = row r), followed, for Q3_K and Q6_K, by the 8
// rows' half-precision d (their blocks are not a whole number of dwords). From the image, the
// weights 16 s + 4 k .. + 3 (sub-block s, k < 4) of the 8 rows are one vector of unsigned
// bytes, W(s, k); the activations they meet are one dword of the Q8_K block (offset 64 k + 4 s,
// see BlockQ8_K), broadcast to all lanes. Per column and sub-block the four vpmaddubsw results
// add up in int16 (no overflow: see each type) and one vpmaddwd by the sub-block's integer
// scale ends the sub-block in int32, so the block's integer sums S (and M) come out exact, one
// per row, in the lanes; then acc = fma(float(S), d * da, acc) per row, as kernels.h defines.
//
// Packed layout (pack16 / dot_tile_packed): a group of 16 rows is stored as its two halves of 8
// rows, each the images of its blocks in order, so a half is one sequential stream and the
// kernels merely load. The file's own rows (dot_tile) are imaged block by block into a buffer
// on the fly (an 8 x 8 dword transpose) and go through the same block kernel: the same bits.
//
// Up to kRegCols columns keep their int32 sums in registers, the weight vectors being made
// once per sub-block for all of them; more columns unpack each block's weight vectors into a
// buffer first and take them kRegCols columns at a time.
//
// Same discipline as kernels_avx2.cc: everything in an anonymous namespace, intrinsics and plain
// loops only; FillAvx2GemmKernels is the only visible symbol.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {
namespace {

#define QWEN_INLINE inline __attribute__((always_inline))

constexpr int kQKK = 256;
constexpr int kRows = 8;     // rows per image (lanes)
constexpr int kRegCols = 4;  // columns whose sums stay in registers, weights made on the fly
// Packed images are prefetched into L2 this many bytes ahead of the block being multiplied. One
// line per block into L1 left single-sequence decode reading 14 of the 20 GB/s plain loads got
// (Xeon at the AVX2 level, 2 threads): the hardware prefetcher alone kept too few lines in
// flight. Whole blocks 12 KiB ahead: one core from memory, 1 column, Q3_K 18 -> 22 G MACs/s,
// Q6_K 10.4 -> 14, Q4_K +5%, 8 columns +2-8%; decode +6-7%. 4, 8 and 16 KiB were within noise.
constexpr size_t kPackedAhead = 12288;
// Columns per pass when the weight vectors come from the block's buffer: T::kBufCols, 8 or 6
// (Q4_K's lighter unpacking leaves it fastest at 6 in quant_bench; 8 would spill).
constexpr int kMaxBufCols = 8;

QWEN_INLINE __m256i Bytes(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }

QWEN_INLINE __m256i Load(const __m256i_u* v, int j) { return _mm256_loadu_si256(v + j); }

QWEN_INLINE __m256i Bcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Bit `from` of every byte of v moved to bit `to` (other bits of the result: zero).
QWEN_INLINE __m256i BitTo(__m256i v, int from, int to) {
  const __m256i s = from > to   ? _mm256_srli_epi16(v, from - to)
                    : from < to ? _mm256_slli_epi16(v, to - from)
                                : v;
  return _mm256_and_si256(s, Bytes(1 << to));
}

// pshufb control: byte i of every dword to bytes 1 and 3 of it, zero in bytes 0 and 2, so each
// word is 256 times the signed byte.
QWEN_INLINE __m256i ByteToHighWords(int i) {
  const int c = static_cast<int>(0x00800080u | (static_cast<uint32_t>(i) << 8) |
                                 (static_cast<uint32_t>(i) << 24));
  const __m128i x = _mm_setr_epi32(c, c + 0x04000400, c + 0x08000800, c + 0x0C000C00);
  return _mm256_broadcastsi128_si256(x);
}

// pshufb control: byte i of every dword to bytes 0 and 2 (unsigned words), zero elsewhere.
QWEN_INLINE __m256i ByteToWords(int i) {
  const int c = static_cast<int>(0x80008000u | static_cast<uint32_t>(i) |
                                 (static_cast<uint32_t>(i) << 16));
  const __m128i x = _mm_setr_epi32(c, c + 0x00040004, c + 0x00080008, c + 0x000C000C);
  return _mm256_broadcastsi128_si256(x);
}

// pshufb control: bytes i and i + 1 of every dword to bytes 0 and 2 (two unsigned words).
QWEN_INLINE __m256i BytePairToWords(int i) {
  const int c = static_cast<int>(0x80008000u | static_cast<uint32_t>(i) |
                                 (static_cast<uint32_t>(i + 1) << 16));
  const __m128i x = _mm_setr_epi32(c, c + 0x00040004, c + 0x00080008, c + 0x000C000C);
  return _mm256_broadcastsi128_si256(x);
}

// The low (hi = false) or high half-precision word of every dword lane, as floats.
QWEN_INLINE __m256 HalfWords(__m256i v, bool hi) {
  const __m256i pick = hi ? _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1,
                                             -1, 2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1,
                                             -1, -1)
                          : _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1,
                                             -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1,
                                             -1, -1);
  const __m256i w = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0x08);
  return _mm256_cvtph_ps(_mm256_castsi256_si128(w));
}

// In place: v[i] lane j (dword j of row i) becomes v[j] lane i.
QWEN_INLINE void Transpose8(__m256i* v) {
  __m256i a[8], b[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    b[4 * i] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x) {
    v[x] = _mm256_permute2x128_si256(b[x], b[4 + x], 0x20);
    v[4 + x] = _mm256_permute2x128_si256(b[x], b[4 + x], 0x31);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-type pieces. Each type T has:
//   kBytes: block bytes; kVecs: dword vectors of the image; kTailOffset: byte offset of d in the
//   block for types whose image ends with the 8 rows' d halves (else -1).
//   Block: the per-block state all columns share (scales as vpmaddwd operands, row factors).
//   Setup(image, Block*); W(image vectors, s, k): weights 16 s + 4 k .. + 3 as unsigned bytes;
//   Scale(block, s): the vpmaddwd operand of sub-block s; kSplit: the four products of a
//   sub-block are added in int16 all together (false) or two by two (true) before vpmaddwd;
//   kPairs / Pair(block, p) / PairBsums: per-row int16 pairs that, times dword p of the
//   activation sums (bsums, or bsums32 when PairBsums32), give the block's M or correction C;
//   Fold(S, C-or-M, block, da, acc).

// Q3_K: u = q + 4 in [0, 7]. Raw image: [0, 8) hmask dwords, [8, 24) qs dwords, [24, 27)
// scales, then d; the stored image re-encodes the weights (Encode). A sub-block's four products stay below 4 * 2 * 7 * 127 in int16; its scale word is
// 256 (sc - 32), so the int32 sum is 256 sum_s (sc_s - 32) sum u a, and the correction
// C = sum_s (sc_s - 32) bsum_s removes the offset 4: 256 S = that - 1024 C (|.| < 2^31), and
// d / 256 turns it back exactly.
struct Q3K {
  static constexpr int kBufCols = 8;
  static constexpr int kBytes = 110;
  static constexpr int kVecs = 27;
  static constexpr int kTailOffset = 108;
  static constexpr bool kSplit = false;
  static constexpr int kPairs = 8;
  static constexpr bool kPairBsums32 = false;
  static constexpr bool kHasMin = false;
  struct Block {
    __m256i sc[16];
    __m256i pair[8];
    __m256 d;
  };
  static QWEN_INLINE void Setup(const uint8_t* img, Block* b) {
    const auto* v = reinterpret_cast<const __m256i_u*>(img);
    const __m256i x0 = Load(v, 24), x1 = Load(v, 25), x2 = Load(v, 26);
    const __m256i m0f = Bytes(0x0F), m32 = Bytes(32);
#pragma GCC unroll 4
    for (int gs = 0; gs < 4; ++gs) {
      // Bytes i: the 6-bit scale 4 gs + i.
      const __m256i src = gs % 2 == 0 ? x0 : x1;
      const __m256i low = _mm256_and_si256(gs < 2 ? src : _mm256_srli_epi16(src, 4), m0f);
      const __m256i high = _mm256_and_si256(
          gs < 2 ? _mm256_slli_epi16(x2, 4 - 2 * gs) : _mm256_srli_epi16(x2, 2 * gs - 4),
          Bytes(0x30));
      const __m256i sgn = _mm256_sub_epi8(_mm256_or_si256(low, high), m32);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) b->sc[4 * gs + i] = _mm256_shuffle_epi8(sgn, ByteToHighWords(i));
    }
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      b->pair[p] =
          _mm256_srai_epi16(_mm256_blend_epi16(b->sc[2 * p], b->sc[2 * p + 1], 0xAA), 8);
    }
    b->d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(
                             reinterpret_cast<const __m128i*>(img + 32 * kVecs))),
                         _mm256_set1_ps(1.0f / 256.0f));
  }
  // The file's bits of weights 16 s + 4 k .. + 3 (= 128 h + 32 g + l): low bits at bits 2 g of
  // qs dword 8 h + l / 4, high bit at bit 4 h + g of hmask dword l / 4, in the raw image.
  static QWEN_INLINE __m256i RawW(const __m256i_u* v, int s, int k) {
    const int h = s / 8, g = (s % 8) / 2, m = 4 * (s % 2) + k;
    const __m256i q = Load(v, 8 + 8 * h + m);
    const __m256i lo = _mm256_and_si256(g == 0 ? q : _mm256_srli_epi16(q, 2 * g), Bytes(3));
    return _mm256_or_si256(lo, BitTo(Load(v, m), 4 * h + g, 2));
  }
  // Stored image: the 64 weight vectors w = 4 s + k as 3-bit fields, eight vectors (w = 8 G +
  // j) in three byte planes P = vectors 3 G .. 3 G + 2 of the image:
  //   P0 = u0 | u1 << 3 | u2 << 6 (low 2 bits),  P1 = u2 >> 2 | u3 << 1 | u4 << 4 | u5 << 7,
  //   P2 = u5 >> 1 | u6 << 2 | u7 << 5,
  // so a vector costs 2.6 operations to make instead of 4.75 from the file's planes; then the
  // scale dwords (image vectors 24-26) and d, as in the raw image.
  static QWEN_INLINE void Encode(const __m256i_u* raw, __m256i_u* out) {
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      __m256i u[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) u[j] = RawW(raw, (8 * g + j) / 4, j % 4);
      const __m256i p0 = _mm256_or_si256(
          _mm256_or_si256(u[0], _mm256_slli_epi16(u[1], 3)),
          _mm256_and_si256(_mm256_slli_epi16(u[2], 6), Bytes(0xC0)));
      const __m256i p1 = _mm256_or_si256(
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(u[2], 2), Bytes(1)),
                          _mm256_slli_epi16(u[3], 1)),
          _mm256_or_si256(_mm256_slli_epi16(u[4], 4),
                          _mm256_and_si256(_mm256_slli_epi16(u[5], 7), Bytes(0x80))));
      const __m256i p2 = _mm256_or_si256(
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(u[5], 1), Bytes(3)),
                          _mm256_slli_epi16(u[6], 2)),
          _mm256_slli_epi16(u[7], 5));
      _mm256_storeu_si256(out + 3 * g, p0);
      _mm256_storeu_si256(out + 3 * g + 1, p1);
      _mm256_storeu_si256(out + 3 * g + 2, p2);
    }
#pragma GCC unroll 3
    for (int j = 24; j < 27; ++j) _mm256_storeu_si256(out + j, Load(raw, j));
  }
  static QWEN_INLINE __m256i W(const __m256i_u* v, int s, int k) {
    const int w = 4 * s + k, g = w / 8, j = w % 8;
    const __m256i m7 = Bytes(7);
    switch (j) {
      case 0:
        return _mm256_and_si256(Load(v, 3 * g), m7);
      case 1:
        return _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g), 3), m7);
      case 2:
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g), 6), Bytes(3)),
                               _mm256_and_si256(_mm256_slli_epi16(Load(v, 3 * g + 1), 2), Bytes(4)));
      case 3:
        return _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g + 1), 1), m7);
      case 4:
        return _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g + 1), 4), m7);
      case 5:
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g + 1), 7), Bytes(1)),
                               _mm256_and_si256(_mm256_slli_epi16(Load(v, 3 * g + 2), 1), Bytes(6)));
      case 6:
        return _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g + 2), 2), m7);
      default:
        return _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * g + 2), 5), m7);
    }
  }
  static QWEN_INLINE __m256i Scale(const Block& b, int s) { return b.sc[s]; }
  static QWEN_INLINE __m256i Pair(const Block& b, int p) { return b.pair[p]; }
  static QWEN_INLINE __m256 Fold(__m256i s, __m256i c, const Block& b, __m256 da, __m256 acc) {
    const __m256i s256 = _mm256_sub_epi32(s, _mm256_slli_epi32(c, 10));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s256), _mm256_mul_ps(b.d, da), acc);
  }
};

// Q2_K: q in [0, 3]. Image: [0, 4) scales, [4, 20) qs, [20] d | dmin. S = sum_s (sc_s & 15)
// sum q a (products below 4 * 2 * 3 * 127), M = sum_s (sc_s >> 4) bsum_s.
struct Q2K {
  static constexpr int kBufCols = 8;
  static constexpr int kBytes = 84;
  static constexpr int kVecs = 21;
  static constexpr int kTailOffset = -1;
  static constexpr bool kSplit = false;
  static constexpr int kPairs = 8;
  static constexpr bool kPairBsums32 = false;
  static constexpr bool kHasMin = true;
  struct Block {
    __m256i sc[16];
    __m256i pair[8];
    __m256 d, dmin;
  };
  static QWEN_INLINE void Setup(const uint8_t* img, Block* b) {
    const auto* v = reinterpret_cast<const __m256i_u*>(img);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i x = Load(v, j);
      const __m256i lo = _mm256_and_si256(x, Bytes(0x0F));
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), Bytes(0x0F));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) b->sc[4 * j + i] = _mm256_shuffle_epi8(lo, ByteToWords(i));
#pragma GCC unroll 2
      for (int i = 0; i < 2; ++i) b->pair[2 * j + i] = _mm256_shuffle_epi8(hi, BytePairToWords(2 * i));
    }
    const __m256i dd = Load(v, 20);
    b->d = HalfWords(dd, false);
    b->dmin = _mm256_sub_ps(_mm256_setzero_ps(), HalfWords(dd, true));
  }
  static QWEN_INLINE __m256i W(const __m256i_u* v, int s, int k) {
    const int h = s / 8, g = (s % 8) / 2, m = 4 * (s % 2) + k;
    const __m256i q = Load(v, 4 + 8 * h + m);
    return _mm256_and_si256(g == 0 ? q : _mm256_srli_epi16(q, 2 * g), Bytes(3));
  }
  static QWEN_INLINE __m256i Scale(const Block& b, int s) { return b.sc[s]; }
  static QWEN_INLINE __m256i Pair(const Block& b, int p) { return b.pair[p]; }
  static QWEN_INLINE __m256 Fold(__m256i s, __m256i m, const Block& b, __m256 da, __m256 acc) {
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(b.d, da), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(b.dmin, da), acc);
  }
};

// Q4_K and Q5_K scales and minimums: from the 12 scale bytes (image vectors 1-3), sc_j as
// unsigned words in both words of the lanes, and the pairs (mn_2p, mn_2p+1).
struct K4Scales {
  __m256i sc[8];
  __m256i pair[4];
  __m256 d, dmin;
  QWEN_INLINE void Setup(const __m256i_u* v) {
    const __m256i x0 = Load(v, 1), x1 = Load(v, 2), x2 = Load(v, 3);
    const __m256i m3f = Bytes(0x3F), m0f = Bytes(0x0F), m30 = Bytes(0x30);
    const __m256i sc_lo = _mm256_and_si256(x0, m3f);
    const __m256i mn_lo = _mm256_and_si256(x1, m3f);
    const __m256i sc_hi =
        _mm256_or_si256(_mm256_and_si256(x2, m0f), _mm256_and_si256(_mm256_srli_epi16(x0, 2), m30));
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(x2, 4), m0f),
                                          _mm256_and_si256(_mm256_srli_epi16(x1, 2), m30));
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      sc[i] = _mm256_shuffle_epi8(sc_lo, ByteToWords(i));
      sc[4 + i] = _mm256_shuffle_epi8(sc_hi, ByteToWords(i));
    }
    pair[0] = _mm256_shuffle_epi8(mn_lo, BytePairToWords(0));
    pair[1] = _mm256_shuffle_epi8(mn_lo, BytePairToWords(2));
    pair[2] = _mm256_shuffle_epi8(mn_hi, BytePairToWords(0));
    pair[3] = _mm256_shuffle_epi8(mn_hi, BytePairToWords(2));
    const __m256i dd = Load(v, 0);
    d = HalfWords(dd, false);
    dmin = _mm256_sub_ps(_mm256_setzero_ps(), HalfWords(dd, true));
  }
};

// Q4_K: u in [0, 15] (four products below 4 * 2 * 15 * 127). Image: [0] d | dmin, [1, 4)
// scales, [4, 36) qs. Weight 16 s + 4 k + b = 64 c + 32 hi + l: nibble hi of qs dword
// 8 c + l / 4; scale j = s / 2.
struct Q4K {
  static constexpr int kBufCols = 6;
  static constexpr int kBytes = 144;
  static constexpr int kVecs = 36;
  static constexpr int kTailOffset = -1;
  static constexpr bool kSplit = false;
  static constexpr int kPairs = 4;
  static constexpr bool kPairBsums32 = true;
  static constexpr bool kHasMin = true;
  using Block = K4Scales;
  static QWEN_INLINE void Setup(const uint8_t* img, Block* b) {
    b->Setup(reinterpret_cast<const __m256i_u*>(img));
  }
  static QWEN_INLINE __m256i W(const __m256i_u* v, int s, int k) {
    const int c = s / 4, hi = (s % 4) / 2, m = 4 * (s % 2) + k;
    const __m256i q = Load(v, 4 + 8 * c + m);
    return _mm256_and_si256(hi ? _mm256_srli_epi16(q, 4) : q, Bytes(0x0F));
  }
  static QWEN_INLINE __m256i Scale(const Block& b, int s) { return b.sc[s / 2]; }
  static QWEN_INLINE __m256i Pair(const Block& b, int p) { return b.pair[p]; }
  static QWEN_INLINE __m256 Fold(__m256i s, __m256i m, const Block& b, __m256 da, __m256 acc) {
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(b.d, da), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(b.dmin, da), acc);
  }
};

// Q5_K: u in [0, 31] (four products below 4 * 2 * 31 * 127 = 31496). Image: [0] d | dmin,
// [1, 4) scales, [4, 12) qh, [12, 44) qs; bit 4 of weight 64 c + 32 hi + l is bit 2 c + hi of
// qh byte l.
struct Q5K {
  static constexpr int kBufCols = 8;
  static constexpr int kBytes = 176;
  static constexpr int kVecs = 44;
  static constexpr int kTailOffset = -1;
  static constexpr bool kSplit = false;
  static constexpr int kPairs = 4;
  static constexpr bool kPairBsums32 = true;
  static constexpr bool kHasMin = true;
  using Block = K4Scales;
  static QWEN_INLINE void Setup(const uint8_t* img, Block* b) {
    b->Setup(reinterpret_cast<const __m256i_u*>(img));
  }
  static QWEN_INLINE __m256i W(const __m256i_u* v, int s, int k) {
    const int c = s / 4, hi = (s % 4) / 2, m = 4 * (s % 2) + k;
    const __m256i q = Load(v, 12 + 8 * c + m);
    const __m256i lo = _mm256_and_si256(hi ? _mm256_srli_epi16(q, 4) : q, Bytes(0x0F));
    return _mm256_or_si256(lo, BitTo(Load(v, 4 + m), 2 * c + hi, 4));
  }
  static QWEN_INLINE __m256i Scale(const Block& b, int s) { return b.sc[s / 2]; }
  static QWEN_INLINE __m256i Pair(const Block& b, int p) { return b.pair[p]; }
  static QWEN_INLINE __m256 Fold(__m256i s, __m256i m, const Block& b, __m256 da, __m256 acc) {
    return Q4K::Fold(s, m, b, da, acc);
  }
};

// Q6_K: u = q + 32 in [0, 63]: two products stay below 2 * 2 * 63 * 127 in int16, so a
// sub-block takes two vpmaddwd by its signed scale (sign-extended words). The offset comes out
// through C = sum_s sc_s bsum_s: S = sum - 32 C. Raw image: [0, 32) ql, [32, 48) qh, [48, 52)
// scales, then d; the stored image re-encodes the weights (Encode). Weight 16 s + 4 k + b = 128 hh + 32 gg + l: low 4 bits in nibble gg / 2 of ql
// dword 16 hh + 8 (gg % 2) + l / 4, high 2 bits at bits 2 gg of qh dword 8 hh + l / 4.
struct Q6K {
  static constexpr int kBufCols = 8;
  static constexpr int kBytes = 210;
  static constexpr int kVecs = 52;
  static constexpr int kTailOffset = 208;
  static constexpr bool kSplit = true;
  static constexpr int kPairs = 8;
  static constexpr bool kPairBsums32 = false;
  static constexpr bool kHasMin = false;
  struct Block {
    __m256i sc[16];
    __m256i pair[8];
    __m256 d;
  };
  static QWEN_INLINE void Setup(const uint8_t* img, Block* b) {
    const auto* v = reinterpret_cast<const __m256i_u*>(img);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i x = Load(v, 48 + j);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        b->sc[4 * j + i] = _mm256_srai_epi16(_mm256_shuffle_epi8(x, ByteToHighWords(i)), 8);
      }
    }
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      b->pair[p] = _mm256_blend_epi16(b->sc[2 * p], b->sc[2 * p + 1], 0xAA);
    }
    b->d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(img + 32 * kVecs)));
  }
  // The file's bits of weights 16 s + 4 k .. + 3, in the raw image.
  static QWEN_INLINE __m256i RawW(const __m256i_u* v, int s, int k) {
    const int hh = s / 8, gg = (s % 8) / 2, m = 4 * (s % 2) + k;
    const __m256i ql = Load(v, 16 * hh + 8 * (gg % 2) + m);
    const __m256i lo = _mm256_and_si256(gg / 2 ? _mm256_srli_epi16(ql, 4) : ql, Bytes(0x0F));
    const __m256i qh = Load(v, 32 + 8 * hh + m);
    const int sh = 2 * gg;  // bits sh, sh + 1 to bits 4, 5
    const __m256i h = sh < 4   ? _mm256_slli_epi16(qh, 4 - sh)
                      : sh > 4 ? _mm256_srli_epi16(qh, sh - 4)
                               : qh;
    return _mm256_or_si256(lo, _mm256_and_si256(h, Bytes(0x30)));
  }
  // Stored image: sub-block s's four weight vectors (u0..u3, 6 bits) in three byte planes,
  // vectors 3 s .. 3 s + 2: P_i = u_i | (bits 2 i, 2 i + 1 of u3) << 6, so u0..u2 are one AND
  // each and u3 eight operations (2.75 a vector instead of 4.5 from the file's planes); then the
  // scale dwords (image vectors 48-51) and d.
  static QWEN_INLINE void Encode(const __m256i_u* raw, __m256i_u* out) {
#pragma GCC unroll 16
    for (int sb = 0; sb < 16; ++sb) {
      const __m256i u3 = RawW(raw, sb, 3);
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i) {
        const __m256i top = _mm256_and_si256(
            i < 3 ? _mm256_slli_epi16(u3, 6 - 2 * i) : u3, Bytes(0xC0));
        _mm256_storeu_si256(out + 3 * sb + i, _mm256_or_si256(RawW(raw, sb, i), top));
      }
    }
#pragma GCC unroll 4
    for (int j = 48; j < 52; ++j) _mm256_storeu_si256(out + j, Load(raw, j));
  }
  static QWEN_INLINE __m256i W(const __m256i_u* v, int s, int k) {
    const __m256i m3f = Bytes(0x3F);
    if (k < 3) return _mm256_and_si256(Load(v, 3 * s + k), m3f);
    const __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * s), 6), Bytes(0x03));
    const __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * s + 1), 4), Bytes(0x0C));
    const __m256i b2 = _mm256_and_si256(_mm256_srli_epi16(Load(v, 3 * s + 2), 2), Bytes(0x30));
    return _mm256_or_si256(_mm256_or_si256(b0, b1), b2);
  }
  static QWEN_INLINE __m256i Scale(const Block& b, int s) { return b.sc[s]; }
  static QWEN_INLINE __m256i Pair(const Block& b, int p) { return b.pair[p]; }
  static QWEN_INLINE __m256 Fold(__m256i s, __m256i c, const Block& b, __m256 da, __m256 acc) {
    const __m256i full = _mm256_sub_epi32(s, _mm256_slli_epi32(c, 5));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(full), _mm256_mul_ps(b.d, da), acc);
  }
};

// ---------------------------------------------------------------------------------------------
// Images.

template <class T>
constexpr size_t ImageBytes() {
  return static_cast<size_t>(kRows) * T::kBytes;
}

// Types whose stored image re-encodes the weights (Q3_K, Q6_K) have Encode(raw, out).
template <class T, class = void>
struct HasEncode {
  static constexpr bool value = false;
};
template <class T>
struct HasEncode<T, decltype(void(T::Encode(nullptr, nullptr)))> {
  static constexpr bool value = true;
};

// The raw image of block `off` (byte offset in each row) of 8 rows: vector j lane r = dword j
// of row r's block, then (kTailOffset) the 8 rows' d.
template <class T>
QWEN_INLINE void MakeRawImage(const uint8_t* const* rows, int64_t off, uint8_t* dst) {
  auto* out = reinterpret_cast<__m256i_u*>(dst);
  int j = 0;
  for (; j + 8 <= T::kVecs; j += 8) {
    __m256i v[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i_u*>(rows[r] + off + 4 * j));
    }
    Transpose8(v);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) _mm256_storeu_si256(out + j + i, v[i]);
  }
  for (; j < T::kVecs; ++j) {
    alignas(32) int32_t lane[8];
    for (int r = 0; r < 8; ++r) std::memcpy(&lane[r], rows[r] + off + 4 * j, 4);
    _mm256_storeu_si256(out + j, _mm256_load_si256(reinterpret_cast<const __m256i*>(lane)));
  }
  if constexpr (T::kTailOffset >= 0) {
    for (int r = 0; r < 8; ++r) {
      std::memcpy(dst + 32 * T::kVecs + 2 * r, rows[r] + off + T::kTailOffset, 2);
    }
  }
}

// The stored image (what the block kernel reads) of block `off` of 8 rows into dst
// (ImageBytes<T>()).
template <class T>
QWEN_INLINE void MakeImage(const uint8_t* const* rows, int64_t off, uint8_t* dst) {
  if constexpr (HasEncode<T>::value) {
    alignas(32) uint8_t raw[ImageBytes<T>()];
    MakeRawImage<T>(rows, off, raw);
    T::Encode(reinterpret_cast<const __m256i_u*>(raw), reinterpret_cast<__m256i_u*>(dst));
    if constexpr (T::kTailOffset >= 0) std::memcpy(dst + 32 * T::kVecs, raw + 32 * T::kVecs, 16);
  } else {
    MakeRawImage<T>(rows, off, dst);
  }
}

// ---------------------------------------------------------------------------------------------
// The block kernel: one block image of 8 rows against NC columns (their Q8_K blocks ab[c]),
// folded into acc[c]. `w` is null (make the weight vectors from the image) or the block's 64
// weight vectors made beforehand (index 4 s + k).

template <class T, int NC>
QWEN_INLINE void BlockProduct(const uint8_t* img, const typename T::Block& blk,
                              const __m256i* w, const BlockQ8_K* const* ab, __m256* acc) {
  const auto* v = reinterpret_cast<const __m256i_u*>(img);
  __m256i s[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) s[c] = _mm256_setzero_si256();
#pragma GCC unroll 16
  for (int sb = 0; sb < 16; ++sb) {
    __m256i wv[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) wv[k] = w != nullptr ? _mm256_load_si256(w + 4 * sb + k) : T::W(v, sb, k);
    const __m256i sc = T::Scale(blk, sb);
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const int8_t* q = ab[c]->qs + 4 * sb;
      const __m256i p0 = _mm256_maddubs_epi16(wv[0], Bcast32(q));
      const __m256i p1 = _mm256_maddubs_epi16(wv[1], Bcast32(q + 64));
      const __m256i p2 = _mm256_maddubs_epi16(wv[2], Bcast32(q + 128));
      const __m256i p3 = _mm256_maddubs_epi16(wv[3], Bcast32(q + 192));
      if constexpr (T::kSplit) {
        s[c] = _mm256_add_epi32(s[c], _mm256_madd_epi16(_mm256_add_epi16(p0, p1), sc));
        s[c] = _mm256_add_epi32(s[c], _mm256_madd_epi16(_mm256_add_epi16(p2, p3), sc));
      } else {
        const __m256i x = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
        s[c] = _mm256_add_epi32(s[c], _mm256_madd_epi16(x, sc));
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    const auto* sums = T::kPairBsums32 ? ab[c]->bsums32 : ab[c]->bsums;
    __m256i m = _mm256_madd_epi16(T::Pair(blk, 0), Bcast32(sums));
#pragma GCC unroll 8
    for (int p = 1; p < T::kPairs; ++p) {
      m = _mm256_add_epi32(m, _mm256_madd_epi16(T::Pair(blk, p), Bcast32(sums + 2 * p)));
    }
    acc[c] = T::Fold(s[c], m, blk, _mm256_set1_ps(ab[c]->d), acc[c]);
  }
}

// The 64 weight vectors of a block image, for column counts that reuse them.
template <class T>
QWEN_INLINE void MakeWeights(const uint8_t* img, __m256i* w) {
  const auto* v = reinterpret_cast<const __m256i_u*>(img);
#pragma GCC unroll 16
  for (int sb = 0; sb < 16; ++sb) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) _mm256_store_si256(w + 4 * sb + k, T::W(v, sb, k));
  }
}

// Writes 8 rows (only the first n_rows) of column results.
QWEN_INLINE void StoreRows(float* y, __m256 v, int n_rows) {
  if (n_rows == kRows) {
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int r = 0; r < n_rows; ++r) y[r] = t[r];
}

// Block images come from `images` (a packed half: block b at b * ImageBytes) or, when `rows` is
// set, are made from those 8 file rows into a buffer as they are needed.
template <class T>
struct ImageSource {
  const uint8_t* images = nullptr;
  const uint8_t* const* rows = nullptr;
  QWEN_INLINE const uint8_t* Get(int64_t b, uint8_t* buf) const {
    if (rows == nullptr) return images + static_cast<size_t>(b) * ImageBytes<T>();
    MakeImage<T>(rows, b * T::kBytes, buf);
    return buf;
  }
  // Packed images form one stream through the whole matrix (halves and groups are adjacent), so
  // each block asks for the block kPackedAhead bytes further on, all of its lines: past a
  // matrix's end the prefetches are dropped harmlessly.
  QWEN_INLINE void Prefetch(const uint8_t* img) const {
    if (rows != nullptr) return;
#pragma GCC unroll 16
    for (size_t o = 0; o < ImageBytes<T>(); o += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(img + kPackedAhead + o), _MM_HINT_T1);
    }
  }
};

// 8 rows (n_rows valid) times columns [0, n_cols) of activation rows `a` (stride a_stride):
// y[c * y_stride + r].
template <class T>
void EightRows(const ImageSource<T>& src, int n_rows, const uint8_t* a, size_t a_stride,
               int64_t n_cols, float* y, size_t y_stride, int64_t nb) {
  alignas(32) uint8_t image[ImageBytes<T>() + 32];
  typename T::Block blk;
  if (n_cols <= kRegCols) {
    const auto nc = static_cast<int>(n_cols);
    __m256 acc[kRegCols];
    for (int c = 0; c < kRegCols; ++c) acc[c] = _mm256_setzero_ps();
    const BlockQ8_K* ab[kRegCols];
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* img = src.Get(b, image);
      src.Prefetch(img);
      T::Setup(img, &blk);
      for (int c = 0; c < nc; ++c) ab[c] = reinterpret_cast<const BlockQ8_K*>(a + c * a_stride) + b;
      switch (nc) {
#define QWEN_CASE(N) \
  case N:            \
    BlockProduct<T, N>(img, blk, nullptr, ab, acc); \
    break;
        QWEN_CASE(1)
        QWEN_CASE(2)
        QWEN_CASE(3)
        QWEN_CASE(4)
#undef QWEN_CASE
      }
    }
    for (int c = 0; c < nc; ++c) StoreRows(y + c * y_stride, acc[c], n_rows);
    return;
  }
  // Many columns: the weight vectors of each block once, then T::kBufCols columns at a time, the
  // running sums kept in y (the n_rows x n_cols entries only).
  alignas(32) __m256i w[64];
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* img = src.Get(b, image);
    src.Prefetch(img);
    T::Setup(img, &blk);
    MakeWeights<T>(img, w);
    for (int64_t c0 = 0; c0 < n_cols; c0 += T::kBufCols) {
      const int nc = static_cast<int>(n_cols - c0 < T::kBufCols ? n_cols - c0 : T::kBufCols);
      const BlockQ8_K* ab[kMaxBufCols];
      __m256 acc[kMaxBufCols];
      for (int c = 0; c < nc; ++c) {
        ab[c] = reinterpret_cast<const BlockQ8_K*>(a + (c0 + c) * a_stride) + b;
        if (b == 0) {
          acc[c] = _mm256_setzero_ps();
        } else if (n_rows == kRows) {
          acc[c] = _mm256_loadu_ps(y + (c0 + c) * y_stride);
        } else {
          alignas(32) float t[8] = {};
          for (int r = 0; r < n_rows; ++r) t[r] = y[(c0 + c) * y_stride + r];
          acc[c] = _mm256_load_ps(t);
        }
      }
      if (nc == T::kBufCols) {
        BlockProduct<T, T::kBufCols>(img, blk, w, ab, acc);
      } else if (nc < T::kBufCols) {
        switch (nc) {
#define QWEN_CASE(N) \
  case N:            \
    BlockProduct<T, N>(img, blk, w, ab, acc); \
    break;
          QWEN_CASE(1)
          QWEN_CASE(2)
          QWEN_CASE(3)
          QWEN_CASE(4)
          QWEN_CASE(5)
          QWEN_CASE(6)
          QWEN_CASE(7)
#undef QWEN_CASE
        }
      }
      for (int c = 0; c < nc; ++c) StoreRows(y + (c0 + c) * y_stride, acc[c], n_rows);
    }
  }
}

// Columns per pass over the rows of a call: a pass's activations (64 columns x 10 blocks x 312
// bytes for 2560 weights) stay in L2 while every row of the call meets them, instead of being
// read again from L3 for every 8 rows.
constexpr int64_t kColChunk = 64;

template <class T>
void Tile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
          int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQKK;
  for (int64_t c0 = 0; c0 < n_cols; c0 += kColChunk) {
    const int64_t nc = n_cols - c0 < kColChunk ? n_cols - c0 : kColChunk;
    for (int64_t r0 = 0; r0 < n_rows; r0 += kRows) {
      const int rows = static_cast<int>(n_rows - r0 < kRows ? n_rows - r0 : kRows);
      const uint8_t* ptrs[kRows];
      // Missing rows of a short last group repeat its first row; their results are not stored.
      for (int r = 0; r < kRows; ++r) ptrs[r] = wp + (r0 + (r < rows ? r : 0)) * w_stride;
      ImageSource<T> src;
      src.rows = ptrs;
      EightRows<T>(src, rows, ap + c0 * a_stride, a_stride, nc, y + c0 * y_stride + r0, y_stride,
                   nb);
    }
  }
}

// A packed group of 16 rows: half h (rows 8 h .. 8 h + 7) is the images of its blocks in order.
template <class T>
void Pack16(const void* w, size_t w_stride, int64_t n, void* dst) {
  const auto* wp = static_cast<const uint8_t*>(w);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQKK;
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ptrs[kRows];
    for (int r = 0; r < kRows; ++r) ptrs[r] = wp + (8 * h + r) * w_stride;
    for (int64_t b = 0; b < nb; ++b) {
      MakeImage<T>(ptrs, b * T::kBytes, out + (h * nb + b) * ImageBytes<T>());
    }
  }
}

template <class T>
void TilePacked(const void* wp, int64_t n_groups, const void* a, size_t a_stride, int64_t n_cols,
                float* y, size_t y_stride, int64_t n) {
  const int64_t nb = n / kQKK;
  const size_t half_bytes = static_cast<size_t>(nb) * ImageBytes<T>();
  const auto* ap = static_cast<const uint8_t*>(a);
  for (int64_t c0 = 0; c0 < n_cols; c0 += kColChunk) {
    const int64_t nc = n_cols - c0 < kColChunk ? n_cols - c0 : kColChunk;
    for (int64_t g = 0; g < 2 * n_groups; ++g) {
      ImageSource<T> src;
      src.images = static_cast<const uint8_t*>(wp) + g * half_bytes;
      EightRows<T>(src, kRows, ap + c0 * a_stride, a_stride, nc, y + c0 * y_stride + g * kRows,
                   y_stride, nb);
    }
  }
}

template <class T>
void Set(KernelTable* t, GgmlType type, bool packed) {
  const auto i = static_cast<uint32_t>(type);
  t->dot_tile[i] = Tile<T>;
  if (packed) {
    t->pack16[i] = Pack16<T>;
    t->dot_tile_packed[i] = TilePacked<T>;
  }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 weights (32 signed bytes and a half d per block) against Q8_0 activations, 8 rows in the
// lanes. Image of a block of 8 rows: 8 vectors (lane r = qs dword j of row r), then the 8 rows'
// d. Per column and block the exact S of each row comes from vpmaddubsw(|w|, a with w's sign)
// (pairs at most 2 * 128 * 127) and vpmaddwd by ones; then acc = fma(float(S), d * da, acc).

constexpr int kQ80Bytes = 34;
constexpr size_t kQ80Image = 8 * kQ80Bytes;
constexpr int kQ80Cols = 4;        // columns per pass (sums in registers)
constexpr int64_t kQ80Chunk = 32;  // blocks imaged at a time from the file's rows

QWEN_INLINE void MakeQ80Image(const uint8_t* const* rows, int64_t off, uint8_t* dst) {
  __m256i v[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i_u*>(rows[r] + off + 2));
  }
  Transpose8(v);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i_u*>(dst + 32 * j), v[j]);
  for (int r = 0; r < 8; ++r) std::memcpy(dst + 256 + 2 * r, rows[r] + off, 2);
}

template <int N>
QWEN_INLINE void Q80Blocks(const uint8_t* images, int64_t n_blocks, const BlockQ8_0* const* ab,
                           __m256* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* img = images + b * kQ80Image;
    const auto* v = reinterpret_cast<const __m256i_u*>(img);
    __m256i s[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) s[c] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i w = Load(v, j);
      const __m256i mag = _mm256_abs_epi8(w);  // 128 for -128: right as an unsigned byte
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) {
        const __m256i a = _mm256_sign_epi8(Bcast32(ab[c][b].qs + 4 * j), w);
        s[c] = _mm256_add_epi32(s[c], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, a), ones));
      }
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(img + 256)));
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      const __m256 da = _mm256_set1_ps(_cvtsh_ss(ab[c][b].d));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_mul_ps(d, da), acc[c]);
    }
  }
}

// Blocks [b0, b0 + nb) of 8 rows (images at `images`, n_rows valid) against every column; the
// sums continue from y unless b0 == 0.
QWEN_INLINE void Q80Pass(const uint8_t* images, int64_t b0, int64_t nb, int n_rows,
                         const uint8_t* a, size_t a_stride, int64_t n_cols, float* y,
                         size_t y_stride) {
  for (int64_t c0 = 0; c0 < n_cols; c0 += kQ80Cols) {
    const int nc = static_cast<int>(n_cols - c0 < kQ80Cols ? n_cols - c0 : kQ80Cols);
    const BlockQ8_0* ab[kQ80Cols];
    __m256 acc[kQ80Cols];
    for (int c = 0; c < nc; ++c) {
      ab[c] = reinterpret_cast<const BlockQ8_0*>(a + (c0 + c) * a_stride) + b0;
      if (b0 == 0) {
        acc[c] = _mm256_setzero_ps();
      } else {
        alignas(32) float t[8] = {};
        for (int r = 0; r < n_rows; ++r) t[r] = y[(c0 + c) * y_stride + r];
        acc[c] = _mm256_load_ps(t);
      }
    }
    switch (nc) {
      case 1: Q80Blocks<1>(images, nb, ab, acc); break;
      case 2: Q80Blocks<2>(images, nb, ab, acc); break;
      case 3: Q80Blocks<3>(images, nb, ab, acc); break;
      default: Q80Blocks<4>(images, nb, ab, acc); break;
    }
    for (int c = 0; c < nc; ++c) StoreRows(y + (c0 + c) * y_stride, acc[c], n_rows);
  }
}

void Q80Tile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
             int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / 32;
  alignas(32) uint8_t images[kQ80Chunk * kQ80Image];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRows) {
    const int rows = static_cast<int>(n_rows - r0 < kRows ? n_rows - r0 : kRows);
    const uint8_t* ptrs[kRows];
    for (int r = 0; r < kRows; ++r) ptrs[r] = wp + (r0 + (r < rows ? r : 0)) * w_stride;
    for (int64_t b0 = 0; b0 < nb; b0 += kQ80Chunk) {
      const int64_t cb = nb - b0 < kQ80Chunk ? nb - b0 : kQ80Chunk;
      for (int64_t b = 0; b < cb; ++b) MakeQ80Image(ptrs, (b0 + b) * kQ80Bytes, images + b * kQ80Image);
      Q80Pass(images, b0, cb, rows, ap, a_stride, n_cols, y + r0, y_stride);
    }
  }
}

void Q80Pack16(const void* w, size_t w_stride, int64_t n, void* dst) {
  const auto* wp = static_cast<const uint8_t*>(w);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / 32;
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ptrs[kRows];
    for (int r = 0; r < kRows; ++r) ptrs[r] = wp + (8 * h + r) * w_stride;
    for (int64_t b = 0; b < nb; ++b) {
      MakeQ80Image(ptrs, b * kQ80Bytes, out + (h * nb + b) * kQ80Image);
    }
  }
}

void Q80TilePacked(const void* wp, int64_t n_groups, const void* a, size_t a_stride,
                   int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const int64_t nb = n / 32;
  const auto* ap = static_cast<const uint8_t*>(a);
  for (int64_t c0 = 0; c0 < n_cols; c0 += kColChunk) {
    const int64_t nc = n_cols - c0 < kColChunk ? n_cols - c0 : kColChunk;
    for (int64_t g = 0; g < 2 * n_groups; ++g) {
      const uint8_t* images = static_cast<const uint8_t*>(wp) + g * nb * kQ80Image;
      Q80Pass(images, 0, nb, kRows, ap + c0 * a_stride, a_stride, nc,
              y + c0 * y_stride + g * kRows, y_stride);
    }
  }
}

}  // namespace

void FillAvx2GemmKernels(KernelTable* t) {
  Set<Q2K>(t, GgmlType::kQ2_K, false);
  Set<Q3K>(t, GgmlType::kQ3_K, true);
  Set<Q4K>(t, GgmlType::kQ4_K, true);
  Set<Q5K>(t, GgmlType::kQ5_K, true);
  Set<Q6K>(t, GgmlType::kQ6_K, true);
  const auto q80 = static_cast<uint32_t>(GgmlType::kQ8_0);
  t->dot_tile[q80] = Q80Tile;
  t->pack16[q80] = Q80Pack16;
  t->dot_tile_packed[q80] = Q80TilePacked;
  t->packed_format = "avx2-rows8-v3";
}

}  // namespace qwen::quant::internal

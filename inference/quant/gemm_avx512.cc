// AVX-512 VNNI dot_tile for the k-quants Q3_K, Q4_K, Q5_K and Q6_K: matrix-vector products for
// decode, int8 matrix-matrix products for batched decode and prefill.
//
// Tiles (3 columns and more; Q6_K: 5). The rows are taken 16 at a time, one per 32-bit lane.
// Each 256-weight block of those 16 rows is unpacked ONCE into 64 vectors of unsigned bytes,
// vector g holding weights 4g .. 4g + 3 of every row (16 x 16 dword transposes of the packed
// bits, then shifts and masks), plus the rows' sub-block scales as 16-bit integers in the
// lanes. Every activation column then costs one vpdpbusd per 4 weights of the 16 rows, with 4
// activation bytes broadcast by the instruction itself from the Q8_K block; sub-block scales
// are applied in integers with vpdpwssd (Q6_K: vpmulld) on each sub-block's sum (or, where
// vpdpbusd's pipes limit the loop, on two sums at once, one per word: see PackWords). With 24
// columns or more, Q3_K's scales are folded into the weight bytes (128 - q (sc - 32) fits a byte)
// and a block is nothing but 64 vpdpbusd per column. The unpack is shared by all columns; up to 8
// columns make the weight vectors as they use them, more columns write them to a buffer first.
//
// Matrix-vector (1-2 columns; Q6_K: 1-4). Each row is unpacked on its own into four vectors
// whose lane s holds 4 weights of sub-block s (the Q8_K interleave), with no transposes, and 16
// rows' per-lane partial sums are then added across lanes into rows-in-lanes.
//
// Packed weights (pack16 / dot_tile_packed). A copy made once at load stores the blocks of
// each 16 rows as the vectors that the tiles build with the transposes, so the tile kernels
// merely load them, from one sequential stream. Every column count takes the tile kernels: with
// nothing to transpose they do less work than the matrix-vector kernel from one column on
// (quant_bench dot_tile_packed_cached: 30-50% less time at 1-2 columns). Streaming from memory
// they are faster too (Zen 4: 15-40% at 1-2 columns, 20-35% at 8), except Q6_K with one column
// (about 10% slower than dot_tile's matrix-vector kernel). The same Raw feeds the same Group
// functions, so the results are the same bits as dot_tile's.
//
// Every (row, column) result is computed by the same operations whatever the number of rows and
// columns of the call and wherever the row falls in a tile, so a column's result does not
// depend on the other columns batched with it. Per block, both paths compute
//   S = sum over sub-blocks of sc_s * sum_i q_i a_i       (exact int32)
//   M = sum over sub-blocks of mn_s * bsum_s              (Q4_K, Q5_K; exact int32)
// and then, identically, acc = fma(float(S), d * da, acc); acc = fma(float(M), -dmin * da, acc)
// with blocks taken in order and acc starting at 0 (Q3_K carries a factor 256 in S and 1/256
// in d, both exact).
//
// Same discipline as kernels_avx512.cc: everything in an anonymous namespace, intrinsics, asm
// and plain loops only; FillAvx512GemmKernels is the only visible symbol.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <array>
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

// One 256-weight block of 16 rows with the rows in the lanes: v[j] lane r is dword PackedDword(j)
// of row r's block (per type), from which T::W(raw, g) makes the byte vector of weights
// 4g .. 4g + 3; plus the rows' scales, ready for the column loop. v points either into buf
// (filled by the transposes of 16 file rows, T::Unpack) or straight into packed weights
// (T::UnpackPacked): the same vectors either way, so both sources give the same bits. Packed
// groups need not start 64-byte aligned, hence the unaligned vector type.
struct alignas(64) Raw {
  const __m512i_u* v;
  // Packed weights, up to kGroup columns, T::kSpreadPrefetch: the stretch of the stream
  // (16 * kBytes bytes) that Group prefetches, a few lines per piece; nullptr for none.
  const uint8_t* pf = nullptr;
  __m512i buf[48];
  __m512i sc[16];  // per-type sub-block scales (see each type)
  __m512i mn[4];   // Q4_K / Q5_K: pairs (mn_2i, mn_2i+1) as int16
  __m512 d;        // per-row factor of S
  __m512 dmin;     // per-row factor of M (negated)
};

// The 64 weight vectors of a block, for column counts that reuse them many times.
struct alignas(64) Weights {
  __m512i w[64];
};

QWEN_INLINE int32_t Load32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

QWEN_INLINE uint32_t Load16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
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

// Instructions with a dword broadcast from memory as the last operand ({1to16}). Written as
// asm because GCC 12 emits a separate vpbroadcastd for _mm512_set1_epi32 of a load, and on Zen 4
// that broadcast takes an issue slot of the pipes vpdpbusd runs on: the inner loop ran at 0.55
// vpdpbusd per cycle instead of 0.95.
QWEN_INLINE __m512i DpbusdB(__m512i acc, __m512i w, const void* p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0"
          : "+v"(acc)
          : "v"(w), "m"(*static_cast<const int32_t*>(p)));
  return acc;
}
// DpbusdB from a zero accumulator. With _mm512_setzero_si512() GCC keeps one zero register and
// copies it (vmovdqa64) before each chain, an instruction per column and piece; a vpxord of the
// destination itself is a zeroing idiom, which needs no execution unit.
QWEN_INLINE __m512i DpbusdZ(__m512i w, const void* p) {
  __m512i acc;
  __asm__("vpxord %0, %0, %0\n\tvpdpbusd %2%{1to16%}, %1, %0"
          : "=&v"(acc)
          : "v"(w), "m"(*static_cast<const int32_t*>(p)));
  return acc;
}
QWEN_INLINE __m512i DpwssdB(__m512i acc, __m512i w, const void* p) {
  __asm__("vpdpwssd %2%{1to16%}, %1, %0"
          : "+v"(acc)
          : "v"(w), "m"(*static_cast<const int32_t*>(p)));
  return acc;
}
QWEN_INLINE __m512i AddB(__m512i v, const void* p) {
  __asm__("vpaddd %1%{1to16%}, %0, %0" : "+v"(v) : "m"(*static_cast<const int32_t*>(p)));
  return v;
}

// v * the float at p, broadcast by the instruction (GCC otherwise emits a vbroadcastss).
QWEN_INLINE __m512 MulB(__m512 v, const float* p) {
  __asm__("vmulps %1%{1to16%}, %0, %0" : "+v"(v) : "m"(*p));
  return v;
}

// Byte masks as {1to16} memory operands: the unpacking of the one- and few-column loops keeps
// a block's packed vectors in registers, and GCC, short of registers for the masks too, rebuilt
// each one from a GPR (mov + vpbroadcastd) at every use. ByteMask<To, Count>::kValue: bits
// To .. To + Count - 1 of every byte.
template <int To, int Count>
struct ByteMask {
  alignas(4) static constexpr uint32_t kValue = (((1u << Count) - 1) << To) * 0x01010101u;
};
constexpr const uint32_t& kMask03 = ByteMask<0, 2>::kValue;
constexpr const uint32_t& kMask0F = ByteMask<0, 4>::kValue;

// v & mask. The result gets its own register: the unpacking reuses a packed vector for
// several weight vectors, and an in-place form made GCC copy it before each use.
QWEN_INLINE __m512i AndB(__m512i v, const uint32_t& mask) {
  __m512i r;
  __asm__("vpandd %2%{1to16%}, %1, %0" : "=v"(r) : "v"(v), "m"(mask));
  return r;
}

// (mask & a) | (~mask & b), bitwise (Select with the mask from memory). vpternlogd overwrites
// one of its inputs: b, which the callers compute fresh (the high bits), while a is often a
// packed vector used again (the low bits at shift 0), which would need a copy first.
QWEN_INLINE __m512i SelectB(const uint32_t& mask, __m512i a, __m512i b) {
  __asm__("vpternlogd $0xD8, %2%{1to16%}, %1, %0" : "+v"(b) : "v"(a), "m"(mask));
  return b;
}

// Q8_K value group g (values 4g .. 4g + 3) of an activation block. See BlockQ8_K: value
// 16 s + 4 k + b is at qs[64 k + 4 s + b], so group g = 4 s + k is at 64 (g % 4) + 4 (g / 4).
QWEN_INLINE const int8_t* Act(const BlockQ8_K* a, int g) {
  return a->qs + 64 * (g % 4) + 4 * (g / 4);
}

// Q4_K / Q5_K scales and minimums from the 12 scale bytes (head[1..3] = dwords 1-3 of the
// block, after d and dmin in dword 0).
QWEN_INLINE void K4Scales(const __m512i* head, Raw* t) {
  const __m512i x0 = head[1], x1 = head[2], x2 = head[3];
  const __m512i m3f = Bytes(0x3F), m0f = Bytes(0x0F);
  // Bytes j of sca: sc_j (j < 4); of scb: sc_{j+4}; likewise mna, mnb.
  const __m512i sca = _mm512_and_si512(x0, m3f);
  const __m512i scb =
      _mm512_and_si512(_mm512_ternarylogic_epi32(m0f, x2, _mm512_srli_epi32(x0, 2), 0xCA), m3f);
  const __m512i mna = _mm512_and_si512(x1, m3f);
  const __m512i mnb = _mm512_and_si512(
      _mm512_ternarylogic_epi32(m0f, _mm512_srli_epi32(x2, 4), _mm512_srli_epi32(x1, 2), 0xCA),
      m3f);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    t->sc[j] = _mm512_shuffle_epi8(j < 4 ? sca : scb, ByteToSlot(j % 4, 0));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t->mn[i] = _mm512_shuffle_epi8(i < 2 ? mna : mnb, BytePairToWords(2 * (i % 2)));
  }
  t->d = LowHalf(head[0]);
  t->dmin = _mm512_sub_ps(_mm512_setzero_ps(), LowHalf(_mm512_srli_epi32(head[0], 16)));
}

// Bit `from` of every byte of v moved to bit `to` (other bits garbage).
QWEN_INLINE __m512i BitTo(__m512i v, int from, int to) {
  return from == to  ? v
         : from < to ? _mm512_slli_epi32(v, to - from)
                     : _mm512_srli_epi32(v, from - to);
}

// (sel & a) | (~sel & b), bitwise. vpternlogd overwrites its first operand, so that is `a` (a
// fresh shift or load in the callers), not the constant `sel`: with `sel` first GCC copied the
// constant before every call and, short of registers, rebuilt it from a GPR (a quarter of the
// instructions of the one-column Q3_K loop).
QWEN_INLINE __m512i Select(__m512i sel, __m512i a, __m512i b) {
  return _mm512_ternarylogic_epi32(a, b, sel, 0xE4);
}

// How the tiles move a field of bits within every byte (the high bits of Q3_K, Q5_K and Q6_K
// weights, to just above their low bits): Move<To, Count>(v, from) moves the Count bits that
// start at bit `from` of every byte of v to bit To and clears the other bits; `from` is a
// constant once the callers' loops are unrolled. The two give the same bytes, hence the same
// results, and read the same packed layout.
//
// ShiftBits: a shift and a mask (two instructions; AVX-512 F).
struct ShiftBits {
  template <int To, int Count>
  static QWEN_INLINE __m512i Move(__m512i v, int from) {
    return AndB(BitTo(v, from, To), ByteMask<To, Count>::kValue);
  }
};

// GfniBits: one vgf2p8affineqb, whose 8 x 8 bit matrix (a {1to8} operand) does both. In the
// one-column Q3_K loop that is one instruction of about 5 per weight vector less: in a
// register-only loop on Zen 4, 2.2 instead of 2.7 cycles per vector of 64 weights. GFNI
// competes with vpdpbusd there (moving the low bits with it too was 15% slower than shifts, and
// so are loops that are short of vpdpbusd slots already; see kGfniCols), so only the high bits
// take this path.
struct GfniBits {
  // kMatrix[from] moves Count bits from bit `from` to bit To. Output bit i of a byte is the
  // parity of (matrix byte 7 - i) & (input byte). Bits past 7 (from + Count > 8, a move no
  // caller makes) are left out.
  template <int To, int Count>
  struct Matrices {
    static constexpr std::array<uint64_t, 8> Make() {
      std::array<uint64_t, 8> m{};
      for (int from = 0; from < 8; ++from) {
        for (int k = 0; k < Count && from + k < 8; ++k) {
          m[from] |= (uint64_t{1} << (from + k)) << (8 * (7 - (To + k)));
        }
      }
      return m;
    }
    alignas(64) static constexpr std::array<uint64_t, 8> kMatrix = Make();
  };
  // Not in place (see AndB). With `from` a constant the matrix is a fixed address.
  template <int To, int Count>
  static QWEN_INLINE __m512i Move(__m512i v, int from) {
    static_assert(To + Count <= 8);
    __m512i r;
    __asm__("vgf2p8affineqb $0, %2%{1to8%}, %1, %0"
            : "=v"(r)
            : "v"(v), "m"(Matrices<To, Count>::kMatrix[from]));
    return r;
  }
};

// ---------------------------------------------------------------------------------------------
// Q3_K: u = q + 4 in [0, 7]; per sub-block of 16 the integer sum starts at -4 bsum_s, so it is
// sum q a (|.| <= 8128, an int16), and vpdpwssd multiplies it by 256 (sc - 32) (the signed byte
// sc - 32 in the high byte of the low word: pshufb can place it, not sign-extend it).
// raw.v: [0, 8) hmask dwords, [8, 24) qs dwords, [24, 27) scales: dword j of the block. B moves
// the high bits: ShiftBits, or GfniBits for one column on a CPU with GFNI (see kGfniCols).
template <class B>
struct Q3K {
  static constexpr int kBytes = 110;
  static constexpr bool kSpreadPrefetch = false;
  // Packed: per block of 16 rows, the 27 vectors of raw.v; d (16 halves) in the group's tail.
  static constexpr int kVecs = 27;
  static constexpr int kTail = 32;
  static constexpr int kDOffset = 108;
  static constexpr int PackedDword(int j) { return 4 * j; }
  static constexpr int kPiece = 4;         // k-groups per piece (one int16 sum)
  static constexpr int kInit = -4;         // the integer sum of a sub-block starts at kInit * bsum
  static constexpr bool kPairable = true;  // Apply is a vpdpwssd of int16 sums (see PackWords)
  static constexpr int kPairFusedCols = kGroup + 1;  // never
  static constexpr bool kHasMin = false;
  static QWEN_INLINE int ScaleIndex(int piece) { return piece; }
  static QWEN_INLINE __m512i Apply(__m512i s, __m512i i, __m512i sc) {
    return _mm512_dpwssd_epi32(s, i, sc);
  }

  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Raw* t) {
    __m512i* a = t->buf;
    __m512i b[16];
    // a: hmask[0..31], qs[0..31]; b: qs[16..63], scales[12], d (62 bytes, the block's end).
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      a[r] = _mm512_loadu_si512(rows[r] + off);
      b[r] = _mm512_maskz_loadu_epi8(0x3FFFFFFFFFFFFFFFull, rows[r] + off + 48);
    }
    Transpose16(a);
    Transpose16(b);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) t->buf[16 + i] = b[4 + i];  // qs dwords 8-15
    t->v = t->buf;
    Scales(b + 12, t);
    t->d = _mm512_mul_ps(LowHalf(b[15]), _mm512_set1_ps(1.0f / 256.0f));
  }

  static QWEN_INLINE void UnpackPacked(const uint8_t* p, const uint8_t* tail, Raw* t) {
    t->v = reinterpret_cast<const __m512i_u*>(p);
    const __m512i x[3] = {t->v[24], t->v[25], t->v[26]};
    Scales(x, t);
    t->d =
        _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tail))),
                      _mm512_set1_ps(1.0f / 256.0f));
  }

  // x: the 12 scale bytes as dwords 0-2 of the 16 rows.
  static QWEN_INLINE void Scales(const __m512i* x, Raw* t) {
    const __m512i x0 = x[0], x1 = x[1], x2 = x[2];
    const __m512i m0f = Bytes(0x0F), m30 = Bytes(0x30), m32 = Bytes(32);
#pragma GCC unroll 4
    for (int gs = 0; gs < 4; ++gs) {
      // Bytes i: scale 4 gs + i.
      const __m512i src = gs % 2 == 0 ? x0 : x1;
      const __m512i low = _mm512_and_si512(gs < 2 ? src : _mm512_srli_epi32(src, 4), m0f);
      const __m512i sc6 = Select(m30, BitTo(x2, 2 * gs, 4), low);
      const __m512i sgn = _mm512_sub_epi8(sc6, m32);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) t->sc[4 * gs + i] = _mm512_shuffle_epi8(sgn, ByteToSlot(i, 1));
    }
  }

  // Weights 4g .. 4g + 3, g = 32 h + 8 gg + m: bits 2 gg of qs dword 8 h + m, high bit at bit
  // 4 h + gg of hmask dword m.
  static QWEN_INLINE __m512i W(const Raw& t, int g) {
    const int h = g / 32, gg = (g % 32) / 8, m = g % 8;
    const __m512i q = t.v[8 + 8 * h + m];
    const __m512i lo = gg == 0 ? q : _mm512_srli_epi32(q, 2 * gg);
    const __m512i hb = B::template Move<2, 1>(t.v[m], 4 * h + gg);
    return SelectB(kMask03, lo, hb);
  }

  // Many columns: the scales folded into the weights, w'' = 128 - q (sc - 32) in [0, 252]
  // (q (sc - 32) lies in [-124, 128]), so a block is 64 vpdpbusd per column and nothing else:
  //   sum w'' a = 128 sum a - sum_s (sc_s - 32) sum q a = 128 sum a - S,
  // the same exact S as the unfolded kernels. Bytes are multiplied in 16-bit halves.
  static constexpr bool kFoldable = true;
  static QWEN_INLINE void MakeFolded(const Raw& t, Weights* w) {
    const __m512i lo_bytes = _mm512_set1_epi16(0x00FF);
#pragma GCC unroll 16
    for (int s = 0; s < 16; ++s) {
      // sc - 32 in both words of each lane (t.sc holds 256 (sc - 32) in the low word).
      const __m512i x = _mm512_srai_epi16(t.sc[s], 8);
      const __m512i sc = _mm512_or_si512(x, _mm512_slli_epi32(x, 16));
      // w'' = 128 + 4 (sc - 32) - u (sc - 32), u = q + 4.
      const __m512i base = _mm512_add_epi16(_mm512_slli_epi16(sc, 2), _mm512_set1_epi16(128));
#pragma GCC unroll 4
      for (int x4 = 0; x4 < 4; ++x4) {
        const __m512i u = W(t, 4 * s + x4);
        const __m512i even =
            _mm512_sub_epi16(base, _mm512_mullo_epi16(_mm512_and_si512(u, lo_bytes), sc));
        const __m512i odd = _mm512_sub_epi16(base, _mm512_mullo_epi16(_mm512_srli_epi16(u, 8), sc));
        w->w[4 * s + x4] = Select(lo_bytes, even, _mm512_slli_epi16(odd, 8));
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Q4_K: u in [0, 15]; sums over half sub-blocks of 16 (|.| <= 30480) are multiplied by sc_j
// (int16) with vpdpwssd; the minimums' sum M = sum mn_j (bsum_2j + bsum_2j+1) likewise.
// raw.v: the 32 qs dwords.
struct Q4K {
  static constexpr bool kSpreadPrefetch = false;
  // Packed: per block of 16 rows, the 32 vectors of raw.v, then dwords 0-3 of the block (d,
  // dmin, scales).
  static constexpr int kVecs = 36;
  static constexpr int kTail = 0;
  static constexpr int kDOffset = 0;
  static constexpr int PackedDword(int j) { return j < 32 ? 16 + 4 * j : 4 * (j - 32); }
  static constexpr bool kFoldable = false;
  static QWEN_INLINE void MakeFolded(const Raw&, Weights*) {}
  static constexpr int kBytes = 144;
  static constexpr int kPiece = 4;
  static constexpr int kInit = 0;
  static constexpr bool kPairable = true;
  static constexpr int kPairFusedCols = 4;
  static constexpr bool kHasMin = true;
  static QWEN_INLINE int ScaleIndex(int piece) { return piece / 2; }
  static QWEN_INLINE __m512i Apply(__m512i s, __m512i i, __m512i sc) {
    return _mm512_dpwssd_epi32(s, i, sc);
  }

  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Raw* t) {
    __m512i head[4];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      t->buf[r] = _mm512_loadu_si512(rows[r] + off + 16);
      t->buf[16 + r] = _mm512_loadu_si512(rows[r] + off + 80);
    }
    Transpose16(t->buf);
    Transpose16(t->buf + 16);
    t->v = t->buf;
    Gather4(rows, off, head);
    K4Scales(head, t);
  }

  static QWEN_INLINE void UnpackPacked(const uint8_t* p, const uint8_t*, Raw* t) {
    t->v = reinterpret_cast<const __m512i_u*>(p);
    const __m512i head[4] = {t->v[32], t->v[33], t->v[34], t->v[35]};
    K4Scales(head, t);
  }

  // g = 16 c + 8 hi + m: nibble hi of qs dword 8 c + m.
  static QWEN_INLINE __m512i W(const Raw& t, int g) {
    const int c = g / 16, hi = (g % 16) / 8, m = g % 8;
    const __m512i q = t.v[8 * c + m];
    return AndB(hi ? _mm512_srli_epi32(q, 4) : q, kMask0F);
  }
};

// ---------------------------------------------------------------------------------------------
// Q5_K: u in [0, 31]; sums over quarter sub-blocks of 8 (|.| <= 31496) times sc_j.
// raw.v: [0, 8) qh dwords, [8, 40) qs dwords.
struct Q5K {
  static constexpr bool kSpreadPrefetch = true;
  // Packed: per block of 16 rows, the 40 vectors of raw.v, then dwords 0-3 of the block.
  static constexpr int kVecs = 44;
  static constexpr int kTail = 0;
  static constexpr int kDOffset = 0;
  static constexpr int PackedDword(int j) { return j < 40 ? 16 + 4 * j : 4 * (j - 40); }
  static constexpr bool kFoldable = false;
  static QWEN_INLINE void MakeFolded(const Raw&, Weights*) {}
  static constexpr int kBytes = 176;
  static constexpr int kPiece = 2;
  static constexpr int kInit = 0;
  static constexpr bool kPairable = true;
  static constexpr int kPairFusedCols = kGroup + 1;  // never
  static constexpr bool kHasMin = true;
  static QWEN_INLINE int ScaleIndex(int piece) { return piece / 4; }
  static QWEN_INLINE __m512i Apply(__m512i s, __m512i i, __m512i sc) {
    return _mm512_dpwssd_epi32(s, i, sc);
  }

  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Raw* t) {
    __m512i head[4], c[16];
    // qh[0..31] + qs[0..31]; qs[32..95]; qs[64..127].
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      t->buf[r] = _mm512_loadu_si512(rows[r] + off + 16);
      t->buf[16 + r] = _mm512_loadu_si512(rows[r] + off + 80);
      c[r] = _mm512_loadu_si512(rows[r] + off + 112);
    }
    Transpose16(t->buf);
    Transpose16(t->buf + 16);
    Transpose16(c);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) t->buf[32 + i] = c[8 + i];  // qs dwords 24-31
    t->v = t->buf;
    Gather4(rows, off, head);
    K4Scales(head, t);
  }

  static QWEN_INLINE void UnpackPacked(const uint8_t* p, const uint8_t*, Raw* t) {
    t->v = reinterpret_cast<const __m512i_u*>(p);
    const __m512i head[4] = {t->v[40], t->v[41], t->v[42], t->v[43]};
    K4Scales(head, t);
  }

  // g = 16 c + 8 hi + m: nibble hi of qs dword 8 c + m, bit 4 at bit 2 c + hi of qh dword m.
  static QWEN_INLINE __m512i W(const Raw& t, int g) {
    const int c = g / 16, hi = (g % 16) / 8, m = g % 8;
    const __m512i q = t.v[8 + 8 * c + m];
    const __m512i hb = ShiftBits::Move<4, 1>(t.v[m], 2 * c + hi);
    return SelectB(kMask0F, hi ? _mm512_srli_epi32(q, 4) : q, hb);
  }
};

// ---------------------------------------------------------------------------------------------
// Q6_K: u = q + 32 in [0, 63]; per sub-block of 16 the sum starts at -32 bsum_s (sum q a,
// up to 65024 in magnitude: not an int16), so the signed scale is applied with vpmulld.
// raw.v: [0, 32) ql dwords, [32, 48) qh dwords.
struct Q6K {
  static constexpr bool kSpreadPrefetch = true;
  // Packed: per block of 16 rows, the 48 vectors of raw.v, then the scales' 4 dwords; d (16
  // halves) in the group's tail.
  static constexpr int kVecs = 52;
  static constexpr int kTail = 32;
  static constexpr int kDOffset = 208;
  static constexpr int PackedDword(int j) { return 4 * j; }
  static constexpr bool kFoldable = false;
  static QWEN_INLINE void MakeFolded(const Raw&, Weights*) {}
  static constexpr int kBytes = 210;
  static constexpr int kPiece = 4;
  static constexpr int kInit = -32;
  static constexpr bool kPairable = false;           // sums beyond int16, scaled by vpmulld
  static constexpr int kPairFusedCols = kGroup + 1;  // never
  static constexpr bool kHasMin = false;
  static QWEN_INLINE int ScaleIndex(int piece) { return piece; }
  static QWEN_INLINE __m512i Apply(__m512i s, __m512i i, __m512i sc) {
    return _mm512_add_epi32(s, _mm512_mullo_epi32(i, sc));
  }

  static QWEN_INLINE void Unpack(const uint8_t* const* rows, int64_t off, Raw* t) {
    __m512i scs[4];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      t->buf[r] = _mm512_loadu_si512(rows[r] + off);
      t->buf[16 + r] = _mm512_loadu_si512(rows[r] + off + 64);
      t->buf[32 + r] = _mm512_loadu_si512(rows[r] + off + 128);
    }
    Transpose16(t->buf);
    Transpose16(t->buf + 16);
    Transpose16(t->buf + 32);
    t->v = t->buf;
    Gather4(rows, off + 192, scs);
    Scales(scs, t);
    t->d = GatherHalf(rows, off + 208);
  }

  static QWEN_INLINE void UnpackPacked(const uint8_t* p, const uint8_t* tail, Raw* t) {
    t->v = reinterpret_cast<const __m512i_u*>(p);
    const __m512i scs[4] = {t->v[48], t->v[49], t->v[50], t->v[51]};
    Scales(scs, t);
    t->d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tail)));
  }

  // scs: the 16 scale bytes as dwords 0-3 of the 16 rows.
  static QWEN_INLINE void Scales(const __m512i* scs, Raw* t) {
#pragma GCC unroll 16
    for (int s = 0; s < 16; ++s) {
      const __m512i v = scs[s / 4];
      t->sc[s] = _mm512_srai_epi32(s % 4 == 3 ? v : _mm512_slli_epi32(v, 24 - 8 * (s % 4)), 24);
    }
  }

  // g = 32 hh + 8 gg + m: low 4 bits in ql dword 16 hh + 8 (gg % 2) + m, nibble gg / 2; high 2
  // bits at bits 2 gg of qh dword 8 hh + m.
  static QWEN_INLINE __m512i W(const Raw& t, int g) {
    const int hh = g / 32, gg = (g % 32) / 8, m = g % 8;
    const __m512i ql = t.v[16 * hh + 8 * (gg % 2) + m];
    const __m512i qh = t.v[32 + 8 * hh + m];
    const __m512i hs = ShiftBits::Move<4, 2>(qh, 2 * gg);
    return SelectB(kMask0F, gg < 2 ? ql : _mm512_srli_epi32(ql, 4), hs);
  }
};

// ---------------------------------------------------------------------------------------------

template <class T>
void MakeWeights(const Raw& t, Weights* w) {
#pragma GCC unroll 64
  for (int g = 0; g < 64; ++g) w->w[g] = T::W(t, g);
}

// Q4_K / Q5_K: M = sum_j mn_j bsums32_j per column, the pairs (mn_2i, mn_2i+1) against the
// activation block's pairs (bsums32_2i, bsums32_2i+1).
template <int NC>
QWEN_INLINE void MinTerms(const Raw& t, const BlockQ8_K* const* ab, __m512i* mo) {
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    __m512i m = DpwssdB(_mm512_setzero_si512(), t.mn[0], &ab[c]->bsums32[0]);
    m = DpwssdB(m, t.mn[1], &ab[c]->bsums32[2]);
    m = DpwssdB(m, t.mn[2], &ab[c]->bsums32[4]);
    mo[c] = DpwssdB(m, t.mn[3], &ab[c]->bsums32[6]);
  }
}

// Many columns: the activation blocks of the next column group (`next`: its first column's
// block; nullptr for none), NC of them, prefetched into L1 a share per piece of the current
// group. The walk across columns (a block of each column, a row apart) is not a stream the
// hardware prefetcher follows, and with K = 9216 a tile's 512 columns of activations (5.7 MB)
// come from L3: in alternated quant_bench runs (Zen 4, shared machine) the folded Q3_K tiles
// had medians of 170-187 G MAC/s without these and 184-200 with them.
template <int NC>
QWEN_INLINE void PrefetchActs(const uint8_t* next, size_t a_stride, int piece, int pieces) {
  if (next == nullptr) return;
  // A block's 312 bytes span 5 or 6 lines, whatever its alignment.
  constexpr int kOffsets[6] = {0, 64, 128, 192, 256, sizeof(BlockQ8_K) - 1};
  constexpr int kItems = 6 * NC;
#pragma GCC unroll 8
  for (int k = piece * kItems / pieces; k < (piece + 1) * kItems / pieces; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(next + (k / 6) * a_stride + kOffsets[k % 6]),
                 _MM_HINT_T0);
  }
}

// Paired scales: Group may apply the scales of two pieces with one vpdpwssd (types with
// T::kPairable): the two pieces' sums, each an int16 already (what Apply's vpdpwssd needs of one),
// become the two words of each lane, against their two scales. That is one instruction on the pipes
// of vpdpbusd less per two pieces and column, for two that are not (a shift and a select), so it
// pays where vpdpbusd's pipes limit the loop: with the weights read from the buffer (more than
// kGroup columns), and with Q4_K's light unpacking from T::kPairFusedCols columns on. Where the
// loop makes its weight vectors as it goes, the unpacking, on the other pipes, limits it instead.
// quant_bench dot_tile_packed_cached, 5 alternated runs, Zen 4: Q4_K 4 / 8 / 64 columns 7% / 9% /
// 8% faster, 2 columns 6% slower (3 columns: +1% and +10% in two series of 6-8 pairs, the
// crossover, so left unpaired); Q5_K 64 columns 13% faster, 2 / 8 columns 9% / 4% slower; Q3_K
// (from kFoldCols columns on, folded scales instead) 16 columns 7% faster, 2-8 columns -3% to +1%.
// S is the same exact integer either way. The pairable types' t.sc hold their scale in the low word
// of each lane and 0 in the high one.

// Lane r: the low word of a's lane r, then the low word of b's.
constexpr uint32_t kLowWords = 0x0000FFFF;
QWEN_INLINE __m512i PackWords(__m512i a, __m512i b) {
  return SelectB(kLowWords, a, _mm512_slli_epi32(b, 16));
}
// The scales of pieces p - 1 and p (p odd) as the two words of each lane, to match PackWords.
template <class T>
QWEN_INLINE __m512i PairScales(const Raw& t, int p) {
  return _mm512_or_si512(t.sc[T::ScaleIndex(p - 1)], _mm512_slli_epi32(t.sc[T::ScaleIndex(p)], 16));
}

// One block of one column group: the integer sums S (and M), then the float update of the 16
// rows' partial results, which live in y (the first block starts from zero). kFused: the weight
// vectors are made from `t` as they are used (few columns), else read from `w`. `next`: see
// PrefetchActs.
template <class T, int NC, bool kFused>
void Group(const Raw& t, const Weights* w, const uint8_t* a, size_t a_stride, int64_t b, float* y,
           size_t y_stride, __mmask16 mask, bool first, const uint8_t* next) {
  const BlockQ8_K* ab[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) ab[c] = reinterpret_cast<const BlockQ8_K*>(a + c * a_stride) + b;
  alignas(64) int32_t init[T::kInit != 0 ? NC : 1][16];
  if constexpr (T::kInit != 0) {
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      const __m512i bs =
          _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[c]->bsums)));
      _mm512_store_si512(init[c], _mm512_mullo_epi32(bs, _mm512_set1_epi32(T::kInit)));
    }
  }
  __m512i s[NC], m[NC], first_half[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) s[c] = _mm512_setzero_si512();
  constexpr int kPieces = 64 / T::kPiece;
  constexpr int kLines = (16 * T::kBytes + 63) / 64;
  constexpr bool kPair = T::kPairable && (!kFused || NC >= T::kPairFusedCols);
  static_assert(!kPair || kPieces % 2 == 0);
#pragma GCC unroll 32
  for (int p = 0; p < kPieces; ++p) {
    if constexpr (!kFused) PrefetchActs<NC>(next, a_stride, p, kPieces);
    if (t.pf != nullptr) {  // packed weights: this piece's share of the block's prefetches
#pragma GCC unroll 8
      for (int l = p * kLines / kPieces; l < (p + 1) * kLines / kPieces; ++l) {
        _mm_prefetch(reinterpret_cast<const char*>(t.pf + 64 * l), _MM_HINT_T1);
      }
    }
    __m512i wv[T::kPiece];
#pragma GCC unroll 4
    for (int x = 0; x < T::kPiece; ++x) {
      wv[x] = kFused ? T::W(t, T::kPiece * p + x) : w->w[T::kPiece * p + x];
    }
    // Paired: the scales of this piece's pair (used after its second piece).
    const __m512i sc = kPair ? PairScales<T>(t, p | 1) : t.sc[T::ScaleIndex(p)];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      __m512i i = DpbusdZ(wv[0], Act(ab[c], T::kPiece * p));
#pragma GCC unroll 4
      for (int x = 1; x < T::kPiece; ++x) i = DpbusdB(i, wv[x], Act(ab[c], T::kPiece * p + x));
      if constexpr (T::kInit != 0) i = AddB(i, &init[c][p]);
      if constexpr (!kPair) {
        s[c] = T::Apply(s[c], i, sc);
      } else if (p % 2 == 0) {
        first_half[c] = i;
      } else {
        s[c] = T::Apply(s[c], PackWords(first_half[c], i), sc);
      }
    }
  }
  if constexpr (T::kHasMin) MinTerms<NC>(t, ab, m);
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    float* yc = y + c * y_stride;
    __m512 acc = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, yc);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), MulB(t.d, &ab[c]->d), acc);
    if constexpr (T::kHasMin) {
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m[c]), MulB(t.dmin, &ab[c]->d), acc);
    }
    _mm512_mask_storeu_ps(yc, mask, acc);
  }
}

// The folded weights of T::MakeFolded: per column 64 vpdpbusd from 128 sum a down to 128 sum a -
// S (the sum in the tiles' other kernels), then the same float update.
template <class T, int NC>
void GroupFolded(const Raw& t, const Weights* w, const uint8_t* a, size_t a_stride, int64_t b,
                 float* y, size_t y_stride, __mmask16 mask, bool first, const uint8_t* next) {
  const BlockQ8_K* ab[NC];
  __m512i i[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    ab[c] = reinterpret_cast<const BlockQ8_K*>(a + c * a_stride) + b;
    i[c] = _mm512_set1_epi32(ab[c]->neg128_sum);
  }
#pragma GCC unroll 64
  for (int g = 0; g < 64; ++g) {
    PrefetchActs<NC>(next, a_stride, g, 64);
    const __m512i wv = w->w[g];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) i[c] = DpbusdB(i[c], wv, Act(ab[c], g));
  }
  // The unfolded kernels' S (256 times the Q3_K sum) is -256 i, and their update is
  // fma(float(S), d * da, acc). Here the factor -256 moves to d: float(-256 i) = -256 float(i)
  // and (-256 d) * da = -256 (d * da), both exactly (powers of two; d * da is not subnormal
  // for a half-precision d and a block of activations whose largest magnitude exceeds 1e-26,
  // and is 0 either way for a zero block), so the result is the same bits, with two integer
  // operations per column less.
  const __m512 dn = _mm512_mul_ps(t.d, _mm512_set1_ps(-256.0f));
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    float* yc = y + c * y_stride;
    __m512 acc = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, yc);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i[c]), MulB(dn, &ab[c]->d), acc);
    _mm512_mask_storeu_ps(yc, mask, acc);
  }
}

using GroupFn = void (*)(const Raw&, const Weights*, const uint8_t*, size_t, int64_t, float*,
                         size_t, __mmask16, bool, const uint8_t*);

template <class T>
struct FoldedGroups {
  static constexpr GroupFn kFns[kGroup + 1] = {
      nullptr,           GroupFolded<T, 1>, GroupFolded<T, 2>, GroupFolded<T, 3>, GroupFolded<T, 4>,
      GroupFolded<T, 5>, GroupFolded<T, 6>, GroupFolded<T, 7>, GroupFolded<T, 8>};
};

// From this many columns on, foldable types fold the scales into the weights.
constexpr int64_t kFoldCols = 24;

template <class T, bool kFused>
struct Groups {
  static constexpr GroupFn kFns[kGroup + 1] = {nullptr,
                                               Group<T, 1, kFused>,
                                               Group<T, 2, kFused>,
                                               Group<T, 3, kFused>,
                                               Group<T, 4, kFused>,
                                               Group<T, 5, kFused>,
                                               Group<T, 6, kFused>,
                                               Group<T, 7, kFused>,
                                               Group<T, 8, kFused>};
};

// ============================== Matrix-vector path ==============================
// For one to a few columns the transposes cost more than they save. Each row is unpacked on
// its own into four vectors whose 32-bit lane s holds 4 weights of sub-block s (piece k: weights
// 16 s + 4 k .. + 3, the order of the Q8_K interleave), so each vpdpbusd leaves sub-block sums in
// the lanes, and one vpdpwssd (Q6_K: vpmulld) applies the scales. A row's block ends as a vector
// of partial sums of S (Q4_K, Q5_K: lanes 0-7 partial S, 8-15 partial M); 16 rows' vectors are
// then summed across lanes into one vector with the rows in the lanes (exact integers), and the
// float update is the tiles' own, operation for operation.

// Column counts up to R::kGemvCols take the matrix-vector kernel (measured crossover: from 3
// columns on the tiles' unpack is cheaper than 3 row unpacks for Q3_K..Q5_K; Q6_K's 3
// transposes per tile make its crossover 5). At most kGemvCols.
constexpr int kGemvCols = 4;
// Rows prefetched ahead into L2 (each row of a decode matrix is 1-5 KB).
constexpr int kGemvAhead = 16;
constexpr int kL1Ahead = 1024;  // bytes ahead of the current block, into L1
constexpr int kMaxBlocks = 64;  // rows of up to 16384 weights
constexpr int kGemvChunk = 16;  // blocks of a row unpacked before their 16-row reductions

// Constant vectors from a lane formula (s = lane).
#define QWEN_LANES(expr)                                                                         \
  _mm512_set_epi32(L(15, expr), L(14, expr), L(13, expr), L(12, expr), L(11, expr), L(10, expr), \
                   L(9, expr), L(8, expr), L(7, expr), L(6, expr), L(5, expr), L(4, expr),       \
                   L(3, expr), L(2, expr), L(1, expr), L(0, expr))
#define L(s_, expr) ([](int s) { return (expr); }(s_))

// One row's block: pieces w[k], the per-lane scale and (Q4_K, Q5_K) minimum multipliers.
struct RowBlock {
  __m512i w[4];
  __m512i sc;
  __m512i mn;
};

// Q3_K lane s: qs dword 8 (s / 8) + 4 (s % 2) + k, bits 2g with g = (s / 2) % 4; high bit at bit
// 4 (s / 8) + g of hmask dword 4 (s % 2) + k. Scale lane s: 256 (sc_s - 32) in the low word (as
// the tiles: S comes out 256 times the sub-block sum, exactly what Q3K::Unpack's d expects).
struct RowQ3K {
  static constexpr int kGemvCols = 2;
  using Tile = Q3K<ShiftBits>;
  static constexpr int kPrep = -4;  // prepared activation term: kPrep * bsum_s (init of I)
  static constexpr bool kHasMin = false;
  static constexpr int kDOffset = 108;  // d
  static constexpr int kDBytes = 2;
  static QWEN_INLINE void Unpack(const uint8_t* p, RowBlock* rb) {
    const __m512i qs = _mm512_loadu_si512(p + 32);
    const __m512i hm =
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512i idx_q = QWEN_LANES(8 * (s / 8) + 4 * (s % 2));
    const __m512i shift_q = QWEN_LANES(2 * ((s / 2) % 4));
    const __m512i idx_h = QWEN_LANES(4 * (s % 2));
    const __m512i rot_h = QWEN_LANES((34 - (4 * (s / 8) + (s / 2) % 4)) % 32);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m512i kv = _mm512_set1_epi32(k);
      const __m512i lo =
          _mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx_q, kv), qs), shift_q);
      const __m512i hb = _mm512_and_si512(
          _mm512_rolv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx_h, kv), hm), rot_h),
          Bytes(4));
      rb->w[k] = Select(Bytes(3), lo, hb);
    }
    // 6-bit scales: low nibble of scale s in byte s % 8 (high nibble for s >= 8), top 2 bits at
    // bits 2 (s / 4) of byte 8 + s % 4.
    const __m128i x = _mm_maskz_loadu_epi8(0x0FFF, p + 96);
    const __m128i low =
        _mm_and_si128(_mm_unpacklo_epi64(x, _mm_srli_epi16(x, 4)), _mm_set1_epi8(0x0F));
    const __m128i t = _mm_srlv_epi32(
        _mm_shuffle_epi8(x, _mm_setr_epi8(8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11)),
        _mm_setr_epi32(0, 2, 4, 6));
    const __m128i sc6 =
        _mm_ternarylogic_epi32(_mm_set1_epi8(0x30), _mm_slli_epi32(t, 4), low, 0xCA);
    rb->sc = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_sub_epi8(sc6, _mm_set1_epi8(32))), 8);
  }
  static QWEN_INLINE __m512i Sum(__m512i i, const RowBlock& rb, __m512i) {
    return _mm512_dpwssd_epi32(_mm512_setzero_si512(), i, rb.sc);
  }
};

// Q4_K lane s: nibble (s / 2) % 2 of qs dword 8 (s / 4) + 4 (s % 2) + k; scale and minimum of
// sub-block s / 2. The block's 12 scale bytes become [sc_0..7, mn_0..7] as in the tiles.
QWEN_INLINE void K4RowScales(const uint8_t* p, RowBlock* rb) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 4));
  const __m128i m3f = _mm_set1_epi8(0x3F);
  const __m128i a = _mm_and_si128(x, m3f);  // dwords 0, 1: sc_0..3, mn_0..3
  const __m128i x2 =
      _mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(2, 2, 2, 2)), _mm_setr_epi32(0, 4, 0, 0));
  const __m128i b = _mm_and_si128(
      _mm_ternarylogic_epi32(_mm_set1_epi8(0x0F), x2, _mm_srli_epi32(x, 2), 0xCA), m3f);
  const __m512i all = _mm512_cvtepu8_epi32(_mm_unpacklo_epi32(a, b));  // sc_0..7, mn_0..7
  rb->sc = _mm512_permutexvar_epi32(QWEN_LANES(s / 2), all);
  rb->mn = _mm512_permutexvar_epi32(QWEN_LANES(8 + s / 2), all);
}

// Partial S in lanes 0-7, partial M in lanes 8-15.
QWEN_INLINE __m512i FoldSM(__m512i sv, __m512i mv) {
  return _mm512_add_epi32(_mm512_shuffle_i64x2(sv, mv, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_i64x2(sv, mv, _MM_SHUFFLE(3, 2, 3, 2)));
}

struct RowQ4K {
  static constexpr int kGemvCols = 2;
  using Tile = Q4K;
  static constexpr int kPrep = 1;  // bsum_s, for M
  static constexpr bool kHasMin = true;
  static constexpr int kDOffset = 0;  // d, dmin
  static constexpr int kDBytes = 4;
  static QWEN_INLINE void Unpack(const uint8_t* p, RowBlock* rb) {
    const __m512i q0 = _mm512_loadu_si512(p + 16), q1 = _mm512_loadu_si512(p + 80);
    const __m512i idx = QWEN_LANES(8 * (s / 4) + 4 * (s % 2));
    const __m512i shift = QWEN_LANES(4 * ((s / 2) % 2));
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      rb->w[k] = _mm512_and_si512(
          _mm512_srlv_epi32(
              _mm512_permutex2var_epi32(q0, _mm512_add_epi32(idx, _mm512_set1_epi32(k)), q1),
              shift),
          Bytes(0x0F));
    }
    K4RowScales(p, rb);
  }
  static QWEN_INLINE __m512i Sum(__m512i i, const RowBlock& rb, __m512i bsums) {
    return FoldSM(_mm512_dpwssd_epi32(_mm512_setzero_si512(), i, rb.sc),
                  _mm512_dpwssd_epi32(_mm512_setzero_si512(), rb.mn, bsums));
  }
};

// Q5_K: Q4_K plus bit 4 of lane s at bit s / 2 of qh dword 4 (s % 2) + k.
struct RowQ5K {
  static constexpr int kGemvCols = 2;
  using Tile = Q5K;
  static constexpr int kPrep = 1;
  static constexpr bool kHasMin = true;
  static constexpr int kDOffset = 0;  // d, dmin
  static constexpr int kDBytes = 4;
  static QWEN_INLINE void Unpack(const uint8_t* p, RowBlock* rb) {
    const __m512i q0 = _mm512_loadu_si512(p + 48), q1 = _mm512_loadu_si512(p + 112);
    const __m512i qh =
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
    const __m512i idx = QWEN_LANES(8 * (s / 4) + 4 * (s % 2));
    const __m512i shift = QWEN_LANES(4 * ((s / 2) % 2));
    const __m512i idx_h = QWEN_LANES(4 * (s % 2));
    const __m512i rot_h = QWEN_LANES((36 - s / 2) % 32);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m512i kv = _mm512_set1_epi32(k);
      const __m512i lo =
          _mm512_srlv_epi32(_mm512_permutex2var_epi32(q0, _mm512_add_epi32(idx, kv), q1), shift);
      const __m512i hb = _mm512_and_si512(
          _mm512_rolv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx_h, kv), qh), rot_h),
          Bytes(0x10));
      rb->w[k] = Select(Bytes(0x0F), lo, hb);
    }
    K4RowScales(p, rb);
  }
  static QWEN_INLINE __m512i Sum(__m512i i, const RowBlock& rb, __m512i bsums) {
    return RowQ4K::Sum(i, rb, bsums);
  }
};

// Q6_K lane s, g = (s / 2) % 4: low 4 bits from ql dword 16 (s / 8) + 8 (g % 2) + 4 (s % 2) + k,
// nibble g / 2; high 2 bits at bits 2g of qh dword 8 (s / 8) + 4 (s % 2) + k.
struct RowQ6K {
  static constexpr int kGemvCols = 4;
  using Tile = Q6K;
  static constexpr int kPrep = -32;
  static constexpr bool kHasMin = false;
  static constexpr int kDOffset = 208;  // d
  static constexpr int kDBytes = 2;
  static QWEN_INLINE void Unpack(const uint8_t* p, RowBlock* rb) {
    const __m512i l0 = _mm512_loadu_si512(p), l1 = _mm512_loadu_si512(p + 64);
    const __m512i h = _mm512_loadu_si512(p + 128);
    const __m512i idx_l = QWEN_LANES(16 * (s / 8) + 8 * (((s / 2) % 4) % 2) + 4 * (s % 2));
    const __m512i shift_l = QWEN_LANES(4 * (((s / 2) % 4) / 2));
    const __m512i idx_h = QWEN_LANES(8 * (s / 8) + 4 * (s % 2));
    const __m512i rot_h = QWEN_LANES((36 - 2 * ((s / 2) % 4)) % 32);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m512i kv = _mm512_set1_epi32(k);
      const __m512i lo = _mm512_srlv_epi32(
          _mm512_permutex2var_epi32(l0, _mm512_add_epi32(idx_l, kv), l1), shift_l);
      const __m512i hi = _mm512_and_si512(
          _mm512_rolv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(idx_h, kv), h), rot_h),
          Bytes(0x30));
      rb->w[k] = Select(Bytes(0x0F), lo, hi);
    }
    rb->sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
  }
  static QWEN_INLINE __m512i Sum(__m512i i, const RowBlock& rb, __m512i) {
    return _mm512_mullo_epi32(i, rb.sc);
  }
};

#undef L
#undef QWEN_LANES

// v[r] (16 lanes of partial sums of row r) -> one vector, lane r = sum of v[r]'s lanes. With
// `split`, lanes 0-7 and 8-15 are two separate sums: returns the first, *second the other.
QWEN_INLINE __m512i ReduceRows(const __m512i* v, bool split, __m512i* second) {
  __m512i a[8], c[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                            _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    c[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * j], a[2 * j + 1]),
                            _mm512_unpackhi_epi64(a[2 * j], a[2 * j + 1]));
  }
  // c[j] 128-bit lane L: rows 4j .. 4j + 3, the partials of v's lane L.
  const __m512i d0 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i d1 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i e0 = _mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0));
  const __m512i e1 = _mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1));
  if (split) {
    *second = e1;
    return e0;
  }
  return _mm512_add_epi32(e0, e1);
}

// The tiles' per-row factors from the 16 rows' dword at kDOffset (see each Tile type's Unpack).
template <class R>
QWEN_INLINE void RowFactors(const uint32_t* dd, __m512* d, __m512* dmin) {
  const __m512i v = _mm512_load_si512(dd);
  if constexpr (R::kPrep == -4) {
    *d = _mm512_mul_ps(LowHalf(v), _mm512_set1_ps(1.0f / 256.0f));
  } else {
    *d = LowHalf(v);
  }
  if constexpr (R::kHasMin) {
    *dmin = _mm512_sub_ps(_mm512_setzero_ps(), LowHalf(_mm512_srli_epi32(v, 16)));
  }
}

template <class R, int NC>
void Gemv(const uint8_t* wp, size_t w_stride, int64_t n_rows, const uint8_t* ap, size_t a_stride,
          float* y, size_t y_stride, int64_t nb) {
  constexpr int kBytes = R::Tile::kBytes;
  alignas(64) int32_t prep[NC][kMaxBlocks][16];
  for (int c = 0; c < NC; ++c) {
    for (int64_t b = 0; b < nb; ++b) {
      const auto* ab = reinterpret_cast<const BlockQ8_K*>(ap + c * a_stride) + b;
      const __m512i bs =
          _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab->bsums)));
      _mm512_store_si512(prep[c][b],
                         R::kPrep == 1 ? bs : _mm512_mullo_epi32(bs, _mm512_set1_epi32(R::kPrep)));
    }
  }
  alignas(64) __m512i part[NC][kGemvChunk][16];
  alignas(64) uint32_t dd[kGemvChunk][16];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kLanes) {
    const int64_t rows = n_rows - r0 < kLanes ? n_rows - r0 : kLanes;
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    __m512 acc[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += kGemvChunk) {
      const int64_t nbc = nb - b0 < kGemvChunk ? nb - b0 : kGemvChunk;
      for (int r = 0; r < kLanes; ++r) {
        const int64_t row = r0 + (r < rows ? r : rows - 1);
        const uint8_t* p = wp + row * w_stride + b0 * kBytes;
        // kGemvAhead rows ahead, the same stretch of blocks.
        if (row + kGemvAhead < n_rows) {
          const uint8_t* q = p + kGemvAhead * w_stride;
          for (int64_t o = 0; o < nbc * kBytes; o += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(q + o), _MM_HINT_T1);
          }
        }
        for (int64_t bb = 0; bb < nbc; ++bb) {
          const uint8_t* pb = p + bb * kBytes;
          // Into L1, a few blocks ahead in this row (or the next: rows are usually contiguous).
          _mm_prefetch(reinterpret_cast<const char*>(pb + kL1Ahead), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(pb + kL1Ahead + 64), _MM_HINT_T0);
          if (kBytes > 128)
            _mm_prefetch(reinterpret_cast<const char*>(pb + kL1Ahead + 128), _MM_HINT_T0);
          RowBlock rb;
          R::Unpack(pb, &rb);
          dd[bb][r] = R::kDBytes == 4 ? static_cast<uint32_t>(Load32(pb + R::kDOffset))
                                      : Load16(pb + R::kDOffset);
#pragma GCC unroll 4
          for (int c = 0; c < NC; ++c) {
            const auto* ab = reinterpret_cast<const BlockQ8_K*>(ap + c * a_stride) + b0 + bb;
            const __m512i pv = _mm512_load_si512(prep[c][b0 + bb]);
            __m512i i = R::kPrep == 1 ? _mm512_setzero_si512() : pv;
#pragma GCC unroll 4
            for (int k = 0; k < 4; ++k) {
              i = _mm512_dpbusd_epi32(i, rb.w[k], _mm512_loadu_si512(ab->qs + 64 * k));
            }
            part[c][bb][r] = R::Sum(i, rb, pv);
          }
        }
      }
      for (int64_t bb = 0; bb < nbc; ++bb) {
        __m512 d, dmin;
        RowFactors<R>(dd[bb], &d, &dmin);
#pragma GCC unroll 4
        for (int c = 0; c < NC; ++c) {
          const auto* ab = reinterpret_cast<const BlockQ8_K*>(ap + c * a_stride) + b0 + bb;
          __m512i m;
          const __m512i sv = ReduceRows(part[c][bb], R::kHasMin, &m);
          const __m512 da = _mm512_set1_ps(ab->d);
          acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sv), _mm512_mul_ps(d, da), acc[c]);
          if constexpr (R::kHasMin) {
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, da), acc[c]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) _mm512_mask_storeu_ps(y + c * y_stride + r0, mask, acc[c]);
  }
}

template <class R>
void GemvCols(const uint8_t* wp, size_t w_stride, int64_t n_rows, const uint8_t* ap,
              size_t a_stride, int64_t n_cols, float* y, size_t y_stride, int64_t nb) {
  switch (n_cols) {
    case 1:
      return Gemv<R, 1>(wp, w_stride, n_rows, ap, a_stride, y, y_stride, nb);
    case 2:
      return Gemv<R, 2>(wp, w_stride, n_rows, ap, a_stride, y, y_stride, nb);
    case 3:
      return Gemv<R, 3>(wp, w_stride, n_rows, ap, a_stride, y, y_stride, nb);
    default:
      return Gemv<R, 4>(wp, w_stride, n_rows, ap, a_stride, y, y_stride, nb);
  }
}

// ============================== Tile loop ==============================

// The blocks of one tile of 16 rows, from whichever source makes their Raw (Src::Unpack), with
// the column loop shared: one copy of the logic for file rows and packed rows.
template <class T, class Src>
QWEN_INLINE void TileBlocks(const Src& src, int64_t nb, const uint8_t* ap, size_t a_stride,
                            int64_t n_cols, float* y, size_t y_stride, __mmask16 mask, Raw* t,
                            Weights* wv) {
  for (int64_t b = 0; b < nb; ++b) {
    const bool spread = T::kSpreadPrefetch && n_cols <= kGroup;
    src.Prefetch(b, spread);
    src.Unpack(b, spread, t);
    if (n_cols <= kGroup) {
      Groups<T, true>::kFns[n_cols](*t, nullptr, ap, a_stride, b, y, y_stride, mask, b == 0,
                                    nullptr);
      continue;
    }
    const bool fold = T::kFoldable && n_cols >= kFoldCols;
    if (fold) {
      T::MakeFolded(*t, wv);
    } else {
      MakeWeights<T>(*t, wv);
    }
    for (int64_t c0 = 0; c0 < n_cols; c0 += kGroup) {
      const int64_t nc = n_cols - c0 < kGroup ? n_cols - c0 : kGroup;
      const GroupFn fn = fold ? FoldedGroups<T>::kFns[nc] : Groups<T, false>::kFns[nc];
      // The next group's blocks: block b of the next columns, or block b + 1 of the first ones.
      const uint8_t* next = nullptr;
      if (c0 + kGroup < n_cols) {
        next = ap + (c0 + kGroup) * a_stride + b * sizeof(BlockQ8_K);
      } else if (b + 1 < nb) {
        next = ap + (b + 1) * sizeof(BlockQ8_K);
      }
      fn(*t, wv, ap + c0 * a_stride, a_stride, b, y + c0 * y_stride, y_stride, mask, b == 0, next);
    }
  }
}

// 16 file rows, transposed block by block.
template <class T>
struct RowSource {
  const uint8_t* rp[kLanes];
  size_t w_stride;
  int64_t next_rows;  // rows after this tile
  int64_t nb;

  QWEN_INLINE void Prefetch(int64_t b, bool) const {
    // The next tile's rows, block b while this tile works on block b: a tile's worth of reads
    // ahead, where the hardware prefetcher has only 16 short streams to learn from.
    for (int r = 0; r < kLanes && r < next_rows; ++r) {
      const uint8_t* p = rp[r] + kLanes * w_stride + b * T::kBytes;
      for (int o = 0; o < T::kBytes + 63; o += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T1);
      }
    }
    if (b + 2 < nb) {
      for (int r = 0; r < kLanes; ++r) {
        const uint8_t* p = rp[r] + (b + 2) * T::kBytes;
        for (int o = 0; o < T::kBytes + 63; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
        }
      }
    }
  }
  QWEN_INLINE void Unpack(int64_t b, bool, Raw* t) const { T::Unpack(rp, b * T::kBytes, t); }
};

// ============================== Packed weights ==============================
// A group (16 rows of nb blocks, 16 * RowBytes bytes) is nb blocks of T::kVecs vectors, vector j
// of block b holding dword T::PackedDword(j) of block b of the 16 rows (lane r = row r): exactly
// the Raw that the transposes would make. Then, for Q3_K and Q6_K, whose blocks are not a
// multiple of 4 bytes, the tail: per block the 16 rows' half-precision d (32 bytes). Keeping the
// tails apart keeps the vectors 64-byte aligned when the group is and the vector stream
// contiguous. The layout's name is kPackedFormat: change it with the layout.
constexpr const char* kPackedFormat = "avx512-k16-v2";  // v2: with Q8_0 (kernels_avx512.cc)

template <class T>
void Pack16(const void* w, size_t w_stride, int64_t n, void* dst) {
  static_assert(T::kVecs * 64 + T::kTail == kLanes * T::kBytes);
  const auto* src = static_cast<const uint8_t*>(w);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQKK;
  uint8_t* tail = out + nb * T::kVecs * 64;
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < kLanes; ++r) {
      const uint8_t* blk = src + r * w_stride + b * T::kBytes;
      for (int j = 0; j < T::kVecs; ++j) {
        std::memcpy(out + (b * T::kVecs + j) * 64 + 4 * r, blk + T::PackedDword(j), 4);
      }
      if (T::kTail) std::memcpy(tail + b * T::kTail + 2 * r, blk + T::kDOffset, 2);
    }
  }
}

// Packed weights are prefetched into L2 this many bytes ahead of the block being unpacked (3-7
// blocks). The stream is sequential, but the hardware prefetcher did not keep up: with 8
// columns Q4_K took twice as long without this. 12 KiB beat 4, 6, 8, 16, 24, 32 and 64 KiB, and
// prefetching into L1 as well (near or far) was slower (quant_bench, Zen 4).
constexpr int kPackedAhead = 12288;
// Where the prefetches of a block are issued, per type (T::kSpreadPrefetch), measured with up
// to 8 columns: as one burst before the block (Q3_K, Q4_K: 10-30% faster with one column), or
// a few per piece inside Group (Q5_K, Q6_K, whose 44 and 53 lines per block in one burst
// stalled the pipeline: Q6_K 1 / 2 / 8 columns took 0.97 / 1.04 / 2.2 ms instead of 0.87 /
// 0.72 / 1.59). From 9 columns on, compute hides either; the burst is used.

template <class T>
struct PackedSource {
  const uint8_t* p;     // the group's first vector
  const uint8_t* tail;  // the group's tail
  int64_t group_bytes;
  // spread: Group issues the block's stream prefetches (t->pf), a few per piece, instead of
  // one burst here (see kSpreadPrefetch).
  QWEN_INLINE void Prefetch(int64_t b, bool spread) const {
    // 16 * kBytes per block, not kVecs * 64: consecutive blocks, and the last block of a group
    // and the first of the next, then prefetch adjoining ranges of the stream, tails included
    // (prefetching only the vectors left 5 lines per group of Q3_K / Q6_K to demand misses,
    // 30% of Q3_K's time with one column).
    const uint8_t* q = p + b * kLanes * T::kBytes + kPackedAhead;
    if (!spread) {
#pragma GCC unroll 64
      for (int o = 0; o < kLanes * T::kBytes; o += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(q + o), _MM_HINT_T1);
      }
    }
    // The tail is read when its group starts but lies at the group's end: the next group's
    // tail, one line per two blocks, a group ahead.
    if (T::kTail && b % 2 == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(tail + b * T::kTail + group_bytes), _MM_HINT_T1);
    }
  }
  QWEN_INLINE void Unpack(int64_t b, bool spread, Raw* t) const {
    T::UnpackPacked(p + b * T::kVecs * 64, tail + b * T::kTail, t);
    t->pf = spread ? p + b * kLanes * T::kBytes + kPackedAhead : nullptr;
  }
};

// ============================== Entry points ==============================

template <class R>
void Tile(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
          int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  using T = typename R::Tile;
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQKK;
  if (n_cols <= R::kGemvCols && nb <= kMaxBlocks) {
    GemvCols<R>(wp, w_stride, n_rows, ap, a_stride, n_cols, y, y_stride, nb);
    return;
  }
  Raw t;
  Weights wv;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kLanes) {
    const int64_t rows = n_rows - r0 < kLanes ? n_rows - r0 : kLanes;
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    RowSource<T> src;
    // Lanes past the last row repeat it (read, never stored).
    for (int r = 0; r < kLanes; ++r) src.rp[r] = wp + (r0 + (r < rows ? r : rows - 1)) * w_stride;
    src.w_stride = w_stride;
    src.next_rows = n_rows - r0 - kLanes;
    src.nb = nb;
    TileBlocks<T>(src, nb, ap, a_stride, n_cols, y + r0, y_stride, mask, &t, &wv);
  }
}

template <class R, class T = typename R::Tile>
void TilePacked(const void* w, int64_t n_groups, const void* a, size_t a_stride, int64_t n_cols,
                float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  const int64_t nb = n / kQKK;
  const int64_t group_bytes = nb * kLanes * T::kBytes;
  Raw t;
  Weights wv;
  for (int64_t g = 0; g < n_groups; ++g) {
    const PackedSource<T> src{wp + g * group_bytes, wp + g * group_bytes + nb * T::kVecs * 64,
                              group_bytes};
    TileBlocks<T>(src, nb, ap, a_stride, n_cols, y + g * kLanes, y_stride, 0xFFFF, &t, &wv);
  }
}

// With GFNI, Q3_K with up to kGfniCols columns: there the unpacking limits the loop, and one
// instruction less per weight vector made it 9-14% faster (quant_bench, one column, in cache and
// from memory). With more columns the loop waits for vpdpbusd, whose pipes GFNI shares on Zen 4:
// 4-7% slower at 8 columns; likewise Q5_K and Q6_K, whose loops carry more scale steps
// (vpdpwssd, vpmulld) per vpdpbusd, were 3-12% slower at one column.
constexpr int64_t kGfniCols = 1;

template <class R, class TG>
void TilePackedGfni(const void* w, int64_t n_groups, const void* a, size_t a_stride, int64_t n_cols,
                    float* y, size_t y_stride, int64_t n) {
  if (n_cols <= kGfniCols) {
    TilePacked<R, TG>(w, n_groups, a, a_stride, n_cols, y, y_stride, n);
  } else {
    TilePacked<R>(w, n_groups, a, a_stride, n_cols, y, y_stride, n);
  }
}

}  // namespace

void FillAvx512GemmKernels(KernelTable* t, bool gfni) {
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ3_K)] = Tile<RowQ3K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ4_K)] = Tile<RowQ4K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ5_K)] = Tile<RowQ5K>;
  t->dot_tile[static_cast<uint32_t>(GgmlType::kQ6_K)] = Tile<RowQ6K>;
  // One packed layout for both levels: a copy written by either serves the other.
  t->packed_format = kPackedFormat;
  t->pack16[static_cast<uint32_t>(GgmlType::kQ3_K)] = Pack16<RowQ3K::Tile>;
  t->pack16[static_cast<uint32_t>(GgmlType::kQ4_K)] = Pack16<Q4K>;
  t->pack16[static_cast<uint32_t>(GgmlType::kQ5_K)] = Pack16<Q5K>;
  t->pack16[static_cast<uint32_t>(GgmlType::kQ6_K)] = Pack16<Q6K>;
  t->dot_tile_packed[static_cast<uint32_t>(GgmlType::kQ3_K)] =
      gfni ? TilePackedGfni<RowQ3K, Q3K<GfniBits>> : TilePacked<RowQ3K>;
  t->dot_tile_packed[static_cast<uint32_t>(GgmlType::kQ4_K)] = TilePacked<RowQ4K>;
  t->dot_tile_packed[static_cast<uint32_t>(GgmlType::kQ5_K)] = TilePacked<RowQ5K>;
  t->dot_tile_packed[static_cast<uint32_t>(GgmlType::kQ6_K)] = TilePacked<RowQ6K>;
}

}  // namespace qwen::quant::internal

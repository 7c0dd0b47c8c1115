// AVX2 + FMA versions of the vector kernels, bit-identical to the scalar definitions (vec.h):
// the same Exp, fused exactly where the scalar code calls std::fma, and the 16 lanes of every
// reduction held in two registers (lanes 0-7 and 8-15). Remainders shorter than a vector are
// masked or finished with the scalar formula. Private to this file (compiled with AVX2 flags):
// only FillAvx2 is visible, and it is called only on CPUs that have AVX2.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "inference/ops/vec.h"
#include "inference/ops/vec_math.h"

namespace qwen::ops::internal {
namespace {

inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);  // constant first: a NaN x stays NaN
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

inline __m256 Sigmoid(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// Lanes [0, n) set, for n in [0, 8].
inline __m256i Mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The tree of Reduce16 on lanes lo (0-7) and hi (8-15).
inline float Tree(__m256 lo, __m256 hi) {
  const __m256 s = _mm256_add_ps(lo, hi);
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Four trees at once: lanes [a, b, c, d] of the result are Tree(lo_a, hi_a) .. Tree(lo_d, hi_d),
// every sum the same as in Tree.
inline __m128 Tree4(const __m256* lo, const __m256* hi) {
  const __m256 xa = _mm256_add_ps(lo[0], hi[0]);
  const __m256 xb = _mm256_add_ps(lo[1], hi[1]);
  const __m256 xc = _mm256_add_ps(lo[2], hi[2]);
  const __m256 xd = _mm256_add_ps(lo[3], hi[3]);
  const __m256 yab = _mm256_add_ps(_mm256_permute2f128_ps(xa, xb, 0x20),
                                   _mm256_permute2f128_ps(xa, xb, 0x31));  // [Ya | Yb]
  const __m256 ycd = _mm256_add_ps(_mm256_permute2f128_ps(xc, xd, 0x20),
                                   _mm256_permute2f128_ps(xc, xd, 0x31));  // [Yc | Yd]
  const __m256 z = _mm256_add_ps(_mm256_shuffle_ps(yab, ycd, 0x44),
                                 _mm256_shuffle_ps(yab, ycd, 0xEE));  // [Za Zc | Zb Zd]
  const __m256 h = _mm256_hadd_ps(z, z);                              // [Fa Fc Fa Fc | Fb Fd Fb Fd]
  return _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// Finishes a Reduce16 of products whose first `done` terms are in (lo, hi): the remaining
// terms a[i] b[i], done <= i < n, go into lane i % 16 by the scalar formula.
inline float FinishDot(__m256 lo, __m256 hi, const float* a, const float* b, int64_t done,
                       int64_t n) {
  if (done == n) return Tree(lo, hi);
  float p[16];
  _mm256_storeu_ps(p, lo);
  _mm256_storeu_ps(p + 8, hi);
  for (int64_t i = done; i < n; ++i) p[i % 16] = std::fma(a[i], b[i], p[i % 16]);
  return Tree16(p);
}

float Dot(const float* a, const float* b, int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
  }
  return FinishDot(lo, hi, a, b, i, n);
}

// Element-wise ops: full vectors, then one masked vector for the rest.
template <typename Op>
inline void Map1(const float* a, float* out, int64_t n, Op op) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, op(_mm256_loadu_ps(a + i)));
  if (i < n) {
    const __m256i m = Mask(n - i);
    _mm256_maskstore_ps(out + i, m, op(_mm256_maskload_ps(a + i, m)));
  }
}

template <typename Op>
inline void Map2(const float* a, const float* b, float* out, int64_t n, Op op) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, op(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  if (i < n) {
    const __m256i m = Mask(n - i);
    _mm256_maskstore_ps(out + i, m, op(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
  }
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  Map2(gate, up, out, n,
       [](__m256 g, __m256 u) { return _mm256_mul_ps(_mm256_mul_ps(g, Sigmoid(g)), u); });
}

void Silu(float* x, int64_t n) {
  Map1(x, x, n, [](__m256 v) { return _mm256_mul_ps(v, Sigmoid(v)); });
}

void SigmoidMul(const float* gate, float* x, int64_t n) {
  Map2(x, gate, x, n, [](__m256 v, __m256 g) { return _mm256_mul_ps(v, Sigmoid(g)); });
}

double SumSquares(const float* x, int64_t n) {
  double total = 0;
  for (int64_t c = 0; c < n; c += 1024) {
    const int64_t len = std::min<int64_t>(1024, n - c);
    total += static_cast<double>(Dot(x + c, x + c, len));
  }
  return total;
}

void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  if (w == nullptr) {
    Map1(x, out, n, [s](__m256 v) { return _mm256_mul_ps(v, s); });
  } else {
    Map2(x, w, out, n, [s](__m256 v, __m256 wv) { return _mm256_mul_ps(_mm256_mul_ps(v, s), wv); });
  }
}

float ExpSubSum(float* s, float max, int64_t n) {
  const __m256 mx = _mm256_set1_ps(max);
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 e0 = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), mx));
    const __m256 e1 = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + i + 8), mx));
    _mm256_storeu_ps(s + i, e0);
    _mm256_storeu_ps(s + i + 8, e1);
    lo = _mm256_add_ps(lo, e0);
    hi = _mm256_add_ps(hi, e1);
  }
  if (i == n) return Tree(lo, hi);
  float p[16];
  _mm256_storeu_ps(p, lo);
  _mm256_storeu_ps(p + 8, hi);
  // The rest: Exp of up to two masked vectors, sums by the scalar formula.
  for (int64_t j = i; j < n; j += 8) {
    const __m256i m = Mask(std::min<int64_t>(8, n - j));
    _mm256_maskstore_ps(s + j, m, Exp(_mm256_sub_ps(_mm256_maskload_ps(s + j, m), mx)));
  }
  for (; i < n; ++i) p[i % 16] = p[i % 16] + s[i];
  return Tree16(p);
}

// ---- The gated delta rule ------------------------------------------------------------------

constexpr int64_t kTokenGroup = 128;  // tokens whose k·q are computed before the column blocks

// One block of NV * 8 columns from c0 over tokens [t0, t1): the state block (d rows of NV
// vectors) stays in cache across the tokens. After the first token's read pass, each token's
// update pass also accumulates the next token's u and w from the values it stores. Wide blocks
// win (delta_rule_bench, d = 128, on an AVX-512 Xeon running these AVX2 kernels, 512 tokens:
// 64 columns 32 ms per layer, 32 columns 35-36, 16 columns 49-50): every row costs three
// broadcasts and its loop whatever the width, and 2 x NV chains of fused multiply-adds (u and
// w) hide the latency of each other.
template <int NV>
void DeltaBlock(float* S, int d, int c0, float scale, const VecKernels::DeltaTokens& t, int64_t t0,
                int64_t t1, const float* kq) {
  __m256 u[NV], w[NV], delta[NV];
#pragma GCC unroll 16
  for (int c = 0; c < NV; ++c) u[c] = w[c] = _mm256_setzero_ps();
  {
    const float* k = t.k + t0 * t.in_stride;
    const float* q = t.q + t0 * t.in_stride;
    for (int r = 0; r < d; ++r) {
      const __m256 kr = _mm256_set1_ps(k[r]);
      const __m256 qr = _mm256_set1_ps(q[r]);
      const float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
      for (int c = 0; c < NV; ++c) {
        const __m256 s = _mm256_loadu_ps(Sr + 8 * c);
        u[c] = _mm256_fmadd_ps(s, kr, u[c]);
        w[c] = _mm256_fmadd_ps(s, qr, w[c]);
      }
    }
  }
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t tok = t0; tok < t1; ++tok) {
    const __m256 dec = _mm256_set1_ps(t.decay[tok * t.gate_stride]);
    const __m256 bet = _mm256_set1_ps(t.beta[tok * t.gate_stride]);
    const __m256 kqv = _mm256_set1_ps(kq[tok - t0]);
    const float* v = t.v + tok * t.in_stride + c0;
    float* out = t.out + tok * t.out_stride + c0;
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) {
      delta[c] = _mm256_mul_ps(_mm256_fnmadd_ps(dec, u[c], _mm256_loadu_ps(v + 8 * c)), bet);
      _mm256_storeu_ps(out + 8 * c,
                       _mm256_mul_ps(_mm256_fmadd_ps(kqv, delta[c], _mm256_mul_ps(dec, w[c])), sc));
    }
    const float* k = t.k + tok * t.in_stride;
    if (tok + 1 < t1) {
      const float* kn = k + t.in_stride;
      const float* qn = t.q + (tok + 1) * t.in_stride;
#pragma GCC unroll 16
      for (int c = 0; c < NV; ++c) u[c] = w[c] = _mm256_setzero_ps();
      for (int r = 0; r < d; ++r) {
        const __m256 kr = _mm256_set1_ps(k[r]);
        const __m256 knr = _mm256_set1_ps(kn[r]);
        const __m256 qnr = _mm256_set1_ps(qn[r]);
        float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
        for (int c = 0; c < NV; ++c) {
          const __m256 s =
              _mm256_fmadd_ps(kr, delta[c], _mm256_mul_ps(_mm256_loadu_ps(Sr + 8 * c), dec));
          _mm256_storeu_ps(Sr + 8 * c, s);
          u[c] = _mm256_fmadd_ps(s, knr, u[c]);
          w[c] = _mm256_fmadd_ps(s, qnr, w[c]);
        }
      }
    } else {
      for (int r = 0; r < d; ++r) {
        const __m256 kr = _mm256_set1_ps(k[r]);
        float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
        for (int c = 0; c < NV; ++c) {
          _mm256_storeu_ps(
              Sr + 8 * c,
              _mm256_fmadd_ps(kr, delta[c], _mm256_mul_ps(_mm256_loadu_ps(Sr + 8 * c), dec)));
        }
      }
    }
  }
}

// One column by the scalar formula (heads whose width is not a multiple of 8).
void DeltaColumn(float* S, int d, int c, float scale, const VecKernels::DeltaTokens& t, int64_t t0,
                 int64_t t1, const float* kq) {
  for (int64_t tok = t0; tok < t1; ++tok) {
    const float* k = t.k + tok * t.in_stride;
    const float* q = t.q + tok * t.in_stride;
    const float decay = t.decay[tok * t.gate_stride];
    float u = 0, w = 0;
    for (int r = 0; r < d; ++r) {
      u = std::fma(S[static_cast<int64_t>(r) * d + c], k[r], u);
      w = std::fma(S[static_cast<int64_t>(r) * d + c], q[r], w);
    }
    const float delta =
        std::fma(-decay, u, t.v[tok * t.in_stride + c]) * t.beta[tok * t.gate_stride];
    t.out[tok * t.out_stride + c] = std::fma(kq[tok - t0], delta, decay * w) * scale;
    for (int r = 0; r < d; ++r) {
      float& s = S[static_cast<int64_t>(r) * d + c];
      s = std::fma(k[r], delta, s * decay);
    }
  }
}

void DeltaRule(float* S, int d, float scale, const VecKernels::DeltaTokens& t) {
  float kq[kTokenGroup];
  for (int64_t t0 = 0; t0 < t.n_tokens; t0 += kTokenGroup) {
    const int64_t t1 = std::min(t.n_tokens, t0 + kTokenGroup);
    for (int64_t tok = t0; tok < t1; ++tok) {
      kq[tok - t0] = Dot(t.k + tok * t.in_stride, t.q + tok * t.in_stride, d);
    }
    int c0 = 0;
    for (; c0 + 64 <= d; c0 += 64) DeltaBlock<8>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 + 32 <= d; c0 += 32) DeltaBlock<4>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 + 16 <= d; c0 += 16) DeltaBlock<2>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 + 8 <= d; c0 += 8) DeltaBlock<1>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 < d; ++c0) DeltaColumn(S, d, c0, scale, t, t0, t1, kq);
  }
}

// ---- Attention -----------------------------------------------------------------------------

template <bool F16>
inline __m256 Load8(const void* base, int64_t offset) {
  if constexpr (F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + offset)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(base) + offset);
  }
}

template <bool F16>
inline float Scalar(const void* base, int64_t offset) {
  if constexpr (F16) {
    return _cvtsh_ss(static_cast<const uint16_t*>(base)[offset]);
  } else {
    return static_cast<const float*>(base)[offset];
  }
}

// Scores of R rows x K keys (R * K == 8). Lanes 0-7 and 8-15 of the sixteen partial sums are
// independent, so they are computed in two passes over the tile (each reads half of every
// 16-element chunk): eight accumulators and the R + K vectors they multiply fit the sixteen
// registers, where all sixteen lanes at once would reload every operand from memory. Rows and
// keys past the ends are computed on the last real ones and not stored.
template <int R, int K, bool F16>
void ScoreTile(const float* q, int64_t q_stride, int n_rows, const void* k, int64_t k_stride,
               int64_t n_keys, int hd, float* s, int64_t s_stride, int r0, int64_t j0) {
  static_assert(R * K == 8);
  const float* qr[R];
  int64_t kj[K];
#pragma GCC unroll 16
  for (int a = 0; a < R; ++a) qr[a] = q + std::min(r0 + a, n_rows - 1) * q_stride;
#pragma GCC unroll 16
  for (int b = 0; b < K; ++b) kj[b] = std::min<int64_t>(j0 + b, n_keys - 1) * k_stride;
  const int full = hd / 16 * 16;
  __m256 half[2][8];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // lanes 0-7, then 8-15
    __m256 acc[8];
#pragma GCC unroll 16
    for (int x = 0; x < 8; ++x) acc[x] = _mm256_setzero_ps();
    for (int i = 8 * h; i < full; i += 16) {
      __m256 kv[K];
#pragma GCC unroll 16
      for (int b = 0; b < K; ++b) {
        kv[b] = Load8<F16>(k, kj[b] + i);
        // In a register: else the compiler folds the load into each row's multiply-add, and
        // the loads, not the multiply-adds, set the pace.
        asm("" : "+x"(kv[b]));
      }
#pragma GCC unroll 16
      for (int a = 0; a < R; ++a) {
        const __m256 qv = _mm256_loadu_ps(qr[a] + i);
#pragma GCC unroll 16
        for (int b = 0; b < K; ++b) acc[a * K + b] = _mm256_fmadd_ps(qv, kv[b], acc[a * K + b]);
      }
    }
#pragma GCC unroll 16
    for (int x = 0; x < 8; ++x) half[h][x] = acc[x];
  }
  float res[8];
  if (full == hd) {
    _mm_storeu_ps(res, Tree4(half[0], half[1]));
    _mm_storeu_ps(res + 4, Tree4(half[0] + 4, half[1] + 4));
  } else {
    for (int a = 0; a < R; ++a) {
      for (int b = 0; b < K; ++b) {
        float p[16];
        _mm256_storeu_ps(p, half[0][a * K + b]);
        _mm256_storeu_ps(p + 8, half[1][a * K + b]);
        for (int ii = full; ii < hd; ++ii) {
          p[ii % 16] = std::fma(qr[a][ii], Scalar<F16>(k, kj[b] + ii), p[ii % 16]);
        }
        res[a * K + b] = Tree16(p);
      }
    }
  }
  for (int a = 0; a < R && r0 + a < n_rows; ++a) {
    for (int b = 0; b < K && j0 + b < n_keys; ++b) s[(r0 + a) * s_stride + j0 + b] = res[a * K + b];
  }
}

template <bool F16>
void Scores(const float* q, int64_t q_stride, int n_rows, const void* k, int64_t k_stride,
            int64_t n_keys, int hd, float* s, int64_t s_stride) {
  int r0 = 0;
  for (; r0 + 2 <= n_rows; r0 += 2) {
    for (int64_t j0 = 0; j0 < n_keys; j0 += 4) {
      ScoreTile<2, 4, F16>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride, r0, j0);
    }
  }
  for (; r0 < n_rows; ++r0) {
    for (int64_t j0 = 0; j0 < n_keys; j0 += 8) {
      ScoreTile<1, 8, F16>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride, r0, j0);
    }
  }
}

void AttnScores(const float* q, int64_t q_stride, int n_rows, const void* k, bool k_f16,
                int64_t k_stride, int64_t n_keys, int hd, float* s, int64_t s_stride) {
  if (n_rows <= 0 || n_keys <= 0) return;
  if (k_f16) {
    Scores<true>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride);
  } else {
    Scores<false>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride);
  }
}

// acc rows r0..r0+R-1, columns [i0, i0 + 8 CH): rescaled, then the keys every row sees
// together, then each row's own remainder.
template <int R, int CH, bool F16>
void AccTile(const VecKernels::AttnValues& x, int r0, int i0) {
  // Everything the loops read, in locals: the accumulators must stay in registers.
  const float* prow[R];
  int64_t n[R];
  __m256 a[R * CH];  // one dimension: GCC keeps it in registers
  int64_t common = x.n_keys[r0], most = x.n_keys[r0];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    prow[r] = x.p + (r0 + r) * x.p_stride;
    n[r] = x.n_keys[r0 + r];
    common = std::min(common, n[r]);
    most = std::max(most, n[r]);
    const float* row = x.acc + (r0 + r) * x.acc_stride + i0;
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm256_loadu_ps(row + 8 * c);
    if (x.rescale != nullptr && x.rescale[r0 + r] != 1.0f) {
      const __m256 sc = _mm256_set1_ps(x.rescale[r0 + r]);
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm256_mul_ps(a[r * CH + c], sc);
    }
  }
  const void* const v = x.v;
  const int64_t v_stride = x.v_stride;
  int64_t j = 0;
  for (; j < common; ++j) {
    __m256 vv[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) vv[c] = Load8<F16>(v, j * v_stride + i0 + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 pr = _mm256_broadcast_ss(prow[r] + j);
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm256_fmadd_ps(pr, vv[c], a[r * CH + c]);
    }
  }
  // Keys only some rows see: the others keep their accumulators (blended back, not skipped,
  // so that the loop has no branch and the accumulators stay in registers).
  for (; j < most; ++j) {
    __m256 vv[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) vv[c] = Load8<F16>(v, j * v_stride + i0 + 8 * c);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 keep = _mm256_castsi256_ps(_mm256_set1_epi32(j < n[r] ? -1 : 0));
      const __m256 pr = _mm256_broadcast_ss(prow[r] + (j < n[r] ? j : 0));
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) {
        a[r * CH + c] =
            _mm256_blendv_ps(a[r * CH + c], _mm256_fmadd_ps(pr, vv[c], a[r * CH + c]), keep);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float* row = x.acc + (r0 + r) * x.acc_stride + i0;
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) _mm256_storeu_ps(row + 8 * c, a[r * CH + c]);
  }
}

// Every row group over one column range.
template <int CH, bool F16>
void AccColumns(const VecKernels::AttnValues& x, int i0) {
  int r0 = 0;
  for (; r0 + 4 <= x.n_rows; r0 += 4) AccTile<4, CH, F16>(x, r0, i0);
  for (; r0 + 2 <= x.n_rows; r0 += 2) AccTile<2, CH, F16>(x, r0, i0);
  for (; r0 < x.n_rows; ++r0) AccTile<1, CH, F16>(x, r0, i0);
}

// Column ranges outer, row groups inner: the range's slice of the value tile stays in L1 while
// every row group passes over it. Columns past the last multiple of 8 by the scalar formula.
template <bool F16>
void Accumulate(const VecKernels::AttnValues& x) {
  int i0 = 0;
  for (; i0 + 16 <= x.hd; i0 += 16) AccColumns<2, F16>(x, i0);
  for (; i0 + 8 <= x.hd; i0 += 8) AccColumns<1, F16>(x, i0);
  if (i0 == x.hd) return;
  for (int r = 0; r < x.n_rows; ++r) {
    float* a = x.acc + r * x.acc_stride;
    if (x.rescale != nullptr && x.rescale[r] != 1.0f) {
      for (int i = i0; i < x.hd; ++i) a[i] = a[i] * x.rescale[r];
    }
    for (int64_t j = 0; j < x.n_keys[r]; ++j) {
      const float pj = x.p[r * x.p_stride + j];
      for (int i = i0; i < x.hd; ++i)
        a[i] = std::fma(pj, Scalar<F16>(x.v, j * x.v_stride + i), a[i]);
    }
  }
}

void AttnAccumulate(const VecKernels::AttnValues& x) {
  if (x.n_rows <= 0) return;
  if (x.v_f16) {
    Accumulate<true>(x);
  } else {
    Accumulate<false>(x);
  }
}

}  // namespace

void FillAvx2(VecKernels& t) {
  t.isa = Isa::kAvx2;
  t.silu_mul = SiluMul;
  t.silu = Silu;
  t.sigmoid_mul = SigmoidMul;
  t.sum_squares = SumSquares;
  t.scale_mul = ScaleMul;
  t.exp_sub_sum = ExpSubSum;
  t.dot = Dot;
  t.delta_rule = DeltaRule;
  t.attn_scores = AttnScores;
  t.attn_accumulate = AttnAccumulate;
}

}  // namespace qwen::ops::internal

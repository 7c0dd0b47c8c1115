// AVX-512 versions of the vector kernels, bit-identical to the scalar definitions (vec.h): the
// same Exp, fused exactly where the scalar code calls std::fma, the 16 lanes of every reduction
// in one register, and masked loads and stores where a vector would pass the end. Private to
// this file (compiled with AVX-512 flags): only FillAvx512 is visible, and it is called only on
// CPUs that have it.
#include <immintrin.h>

#include <algorithm>

#include "inference/ops/vec.h"
#include "inference/ops/vec_math.h"

namespace qwen::ops::internal {
namespace {

inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);  // constant first: a NaN x stays NaN
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  // 2^n from its exponent bits, as the other levels do (scalef would give the same product).
  const __m512i bits =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __mmask16 Tail(int64_t left) {
  if (left <= 0) return 0;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// The tree of Reduce16.
inline float Tree(__m512 p) {
  const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(p), _mm512_extractf32x8_ps(p, 1));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Sixteen trees at once: lane x of the result is Tree(a[x]), every sum the same as in Tree.
inline __m512 Tree16x16(const __m512* a) {
  __m512 v1[8], v2[4], v3[2];
  for (int m = 0; m < 8; ++m) {  // p[l] + p[l + 8]: lanes 0-7 key 2m, 8-15 key 2m + 1
    v1[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0x44),
                          _mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0xEE));
  }
#pragma GCC unroll 16
  for (int m = 0; m < 4; ++m) {  // + [l + 4]: quarter k holds key 4m + k
    v2[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v1[2 * m], v1[2 * m + 1], 0x88),
                          _mm512_shuffle_f32x4(v1[2 * m], v1[2 * m + 1], 0xDD));
  }
  for (int m = 0; m < 2; ++m) {  // + [l + 2]: quarter k holds keys 8m + k, 8m + 4 + k
    v3[m] = _mm512_add_ps(_mm512_shuffle_ps(v2[2 * m], v2[2 * m + 1], 0x44),
                          _mm512_shuffle_ps(v2[2 * m], v2[2 * m + 1], 0xEE));
  }
  // + [l + 1]: lane 4k + t holds key 4t + k.
  const __m512 f =
      _mm512_add_ps(_mm512_shuffle_ps(v3[0], v3[1], 0x88), _mm512_shuffle_ps(v3[0], v3[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, f);
}

float Dot(const float* a, const float* b, int64_t n) {
  __m512 p = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    p = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), p);
  if (i < n) {
    const __mmask16 m = Tail(n - i);
    p = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), p,
                              m);
  }
  return Tree(p);
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Tail(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(g, Sigmoid(g)), u));
  }
}

void Silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Tail(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(v, Sigmoid(v)));
  }
}

void SigmoidMul(const float* gate, float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Tail(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(v, Sigmoid(g)));
  }
}

double SumSquares(const float* x, int64_t n) {
  double total = 0;
  for (int64_t c = 0; c < n; c += 1024) {
    total += static_cast<double>(Dot(x + c, x + c, std::min<int64_t>(1024, n - c)));
  }
  return total;
}

void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Tail(n - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    if (w != nullptr) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
    _mm512_mask_storeu_ps(out + i, m, v);
  }
}

float ExpSubSum(float* s, float max, int64_t n) {
  const __m512 mx = _mm512_set1_ps(max);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Tail(n - i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), mx));
    _mm512_mask_storeu_ps(s + i, m, e);
    acc = _mm512_mask_add_ps(acc, m, acc, e);
  }
  return Tree(acc);
}

// ---- The gated delta rule ------------------------------------------------------------------

constexpr int64_t kTokenGroup = 128;  // tokens whose k·q are computed before the column blocks

// One block of NV * 16 columns from c0 (masked past d) over tokens [t0, t1): the state block
// (d rows of NV vectors) stays in cache across the tokens. After the first token's read pass,
// each token's update pass also accumulates the next token's u and w from the values it stores.
// Wide blocks win (delta_rule_bench, d = 128, 512 tokens: 128 columns 26 ms per layer, 64
// columns 34-35, 32 columns 44): every row costs three broadcasts and its loop whatever the
// width, and 2 x NV chains of fused multiply-adds (u and w) hide the latency of each other; a
// head's whole state (64 KiB) streams from L2 at that speed.
template <int NV>
void DeltaBlock(float* S, int d, int c0, float scale, const VecKernels::DeltaTokens& t, int64_t t0,
                int64_t t1, const float* kq) {
  __mmask16 m[NV];
#pragma GCC unroll 16
  for (int c = 0; c < NV; ++c) m[c] = Tail(d - c0 - 16 * c);
  __m512 u[NV], w[NV], delta[NV];
#pragma GCC unroll 16
  for (int c = 0; c < NV; ++c) u[c] = w[c] = _mm512_setzero_ps();
  {
    const float* k = t.k + t0 * t.in_stride;
    const float* q = t.q + t0 * t.in_stride;
    for (int r = 0; r < d; ++r) {
      const __m512 kr = _mm512_set1_ps(k[r]);
      const __m512 qr = _mm512_set1_ps(q[r]);
      const float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
      for (int c = 0; c < NV; ++c) {
        const __m512 s = _mm512_maskz_loadu_ps(m[c], Sr + 16 * c);
        u[c] = _mm512_fmadd_ps(s, kr, u[c]);
        w[c] = _mm512_fmadd_ps(s, qr, w[c]);
      }
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int64_t tok = t0; tok < t1; ++tok) {
    const __m512 dec = _mm512_set1_ps(t.decay[tok * t.gate_stride]);
    const __m512 bet = _mm512_set1_ps(t.beta[tok * t.gate_stride]);
    const __m512 kqv = _mm512_set1_ps(kq[tok - t0]);
    const float* v = t.v + tok * t.in_stride + c0;
    float* out = t.out + tok * t.out_stride + c0;
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) {
      delta[c] =
          _mm512_mul_ps(_mm512_fnmadd_ps(dec, u[c], _mm512_maskz_loadu_ps(m[c], v + 16 * c)), bet);
      _mm512_mask_storeu_ps(
          out + 16 * c, m[c],
          _mm512_mul_ps(_mm512_fmadd_ps(kqv, delta[c], _mm512_mul_ps(dec, w[c])), sc));
    }
    const float* k = t.k + tok * t.in_stride;
    if (tok + 1 < t1) {
      const float* kn = k + t.in_stride;
      const float* qn = t.q + (tok + 1) * t.in_stride;
#pragma GCC unroll 16
      for (int c = 0; c < NV; ++c) u[c] = w[c] = _mm512_setzero_ps();
      for (int r = 0; r < d; ++r) {
        const __m512 kr = _mm512_set1_ps(k[r]);
        const __m512 knr = _mm512_set1_ps(kn[r]);
        const __m512 qnr = _mm512_set1_ps(qn[r]);
        float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
        for (int c = 0; c < NV; ++c) {
          const __m512 s = _mm512_fmadd_ps(
              kr, delta[c], _mm512_mul_ps(_mm512_maskz_loadu_ps(m[c], Sr + 16 * c), dec));
          _mm512_mask_storeu_ps(Sr + 16 * c, m[c], s);
          u[c] = _mm512_fmadd_ps(s, knr, u[c]);
          w[c] = _mm512_fmadd_ps(s, qnr, w[c]);
        }
      }
    } else {
      for (int r = 0; r < d; ++r) {
        const __m512 kr = _mm512_set1_ps(k[r]);
        float* Sr = S + static_cast<int64_t>(r) * d + c0;
#pragma GCC unroll 16
        for (int c = 0; c < NV; ++c) {
          _mm512_mask_storeu_ps(
              Sr + 16 * c, m[c],
              _mm512_fmadd_ps(kr, delta[c],
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(m[c], Sr + 16 * c), dec)));
        }
      }
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
    for (; c0 + 112 < d; c0 += 128) DeltaBlock<8>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 + 48 < d; c0 += 64) DeltaBlock<4>(S, d, c0, scale, t, t0, t1, kq);
    for (; c0 + 16 < d; c0 += 32) DeltaBlock<2>(S, d, c0, scale, t, t0, t1, kq);
    if (c0 < d) DeltaBlock<1>(S, d, c0, scale, t, t0, t1, kq);
  }
}

// ---- Attention -----------------------------------------------------------------------------

template <bool F16>
inline __m512 Load16(const void* base, int64_t offset, __mmask16 m) {
  if constexpr (F16) {
    return _mm512_cvtph_ps(
        _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + offset));
  } else {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + offset);
  }
}

template <bool F16>
inline __m512 Load16(const void* base, int64_t offset) {
  if constexpr (F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + offset)));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(base) + offset);
  }
}

// Scores of R rows x K keys (R * K == 16): sixteen accumulators reduced together. Rows and keys
// past the ends are computed on the last real ones and not stored.
template <int R, int K, bool F16>
void ScoreTile(const float* q, int64_t q_stride, int n_rows, const void* k, int64_t k_stride,
               int64_t n_keys, int hd, float* s, int64_t s_stride, int r0, int64_t j0) {
  static_assert(R * K == 16);
  const float* qr[R];
  int64_t kj[K];
#pragma GCC unroll 16
  for (int a = 0; a < R; ++a) qr[a] = q + std::min(r0 + a, n_rows - 1) * q_stride;
#pragma GCC unroll 16
  for (int b = 0; b < K; ++b) kj[b] = std::min<int64_t>(j0 + b, n_keys - 1) * k_stride;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int x = 0; x < 16; ++x) acc[x] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= hd; i += 16) {
    __m512 kv[K];
#pragma GCC unroll 16
    for (int b = 0; b < K; ++b) kv[b] = Load16<F16>(k, kj[b] + i);
#pragma GCC unroll 16
    for (int a = 0; a < R; ++a) {
      const __m512 qv = _mm512_loadu_ps(qr[a] + i);
#pragma GCC unroll 16
      for (int b = 0; b < K; ++b) acc[a * K + b] = _mm512_fmadd_ps(qv, kv[b], acc[a * K + b]);
    }
  }
  if (i < hd) {
    const __mmask16 m = Tail(hd - i);
    __m512 kv[K];
#pragma GCC unroll 16
    for (int b = 0; b < K; ++b) kv[b] = Load16<F16>(k, kj[b] + i, m);
#pragma GCC unroll 16
    for (int a = 0; a < R; ++a) {
      const __m512 qv = _mm512_maskz_loadu_ps(m, qr[a] + i);
#pragma GCC unroll 16
      for (int b = 0; b < K; ++b) {
        acc[a * K + b] = _mm512_mask3_fmadd_ps(qv, kv[b], acc[a * K + b], m);
      }
    }
  }
  alignas(64) float res[16];
  _mm512_store_ps(res, Tree16x16(acc));
  for (int a = 0; a < R && r0 + a < n_rows; ++a) {
    for (int b = 0; b < K && j0 + b < n_keys; ++b) s[(r0 + a) * s_stride + j0 + b] = res[a * K + b];
  }
}

template <bool F16>
void Scores(const float* q, int64_t q_stride, int n_rows, const void* k, int64_t k_stride,
            int64_t n_keys, int hd, float* s, int64_t s_stride) {
  int r0 = 0;
  for (; r0 + 4 <= n_rows; r0 += 4) {
    for (int64_t j0 = 0; j0 < n_keys; j0 += 4) {
      ScoreTile<4, 4, F16>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride, r0, j0);
    }
  }
  for (; r0 + 2 <= n_rows; r0 += 2) {
    for (int64_t j0 = 0; j0 < n_keys; j0 += 8) {
      ScoreTile<2, 8, F16>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride, r0, j0);
    }
  }
  for (; r0 < n_rows; ++r0) {
    for (int64_t j0 = 0; j0 < n_keys; j0 += 16) {
      ScoreTile<1, 16, F16>(q, q_stride, n_rows, k, k_stride, n_keys, hd, s, s_stride, r0, j0);
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

// acc rows r0..r0+R-1, columns [i0, i0 + 16 CH) (masked past hd): rescaled, then the keys every
// row sees together, then each row's own remainder.
template <int R, int CH, bool F16>
void AccTile(const VecKernels::AttnValues& x, int r0, int i0) {
  // Everything the loops read, in locals: the accumulators must stay in registers.
  __mmask16 m[CH];
#pragma GCC unroll 16
  for (int c = 0; c < CH; ++c) m[c] = Tail(x.hd - i0 - 16 * c);
  const float* prow[R];
  int64_t n[R];
  __m512 a[R * CH];  // one dimension: GCC keeps it in registers
  int64_t common = x.n_keys[r0], most = x.n_keys[r0];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    prow[r] = x.p + (r0 + r) * x.p_stride;
    n[r] = x.n_keys[r0 + r];
    common = std::min(common, n[r]);
    most = std::max(most, n[r]);
    const float* row = x.acc + (r0 + r) * x.acc_stride + i0;
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm512_maskz_loadu_ps(m[c], row + 16 * c);
    if (x.rescale != nullptr && x.rescale[r0 + r] != 1.0f) {
      const __m512 sc = _mm512_set1_ps(x.rescale[r0 + r]);
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm512_mul_ps(a[r * CH + c], sc);
    }
  }
  const void* const v = x.v;
  const int64_t v_stride = x.v_stride;
  int64_t j = 0;
  for (; j < common; ++j) {
    __m512 vv[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) vv[c] = Load16<F16>(v, j * v_stride + i0 + 16 * c, m[c]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 pr = _mm512_set1_ps(prow[r][j]);
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) a[r * CH + c] = _mm512_fmadd_ps(pr, vv[c], a[r * CH + c]);
    }
  }
  // Keys only some rows see: the others keep their accumulators (masked, not skipped, so that
  // the loop has no branch and the accumulators stay in registers).
  for (; j < most; ++j) {
    __m512 vv[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) vv[c] = Load16<F16>(v, j * v_stride + i0 + 16 * c, m[c]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __mmask16 keep = j < n[r] ? 0xFFFF : 0;
      const __m512 pr = _mm512_set1_ps(prow[r][j < n[r] ? j : 0]);
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c)
        a[r * CH + c] = _mm512_mask3_fmadd_ps(pr, vv[c], a[r * CH + c], keep);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float* row = x.acc + (r0 + r) * x.acc_stride + i0;
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) _mm512_mask_storeu_ps(row + 16 * c, m[c], a[r * CH + c]);
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

// Column ranges outer, row groups inner: the range's slice of the value tile (64 columns of up
// to 64 keys: 16 KiB in float) stays in L1 while every row group passes over it.
template <bool F16>
void Accumulate(const VecKernels::AttnValues& x) {
  int i0 = 0;
  for (; i0 + 64 <= x.hd; i0 += 64) AccColumns<4, F16>(x, i0);
  for (; i0 < x.hd; i0 += 16) AccColumns<1, F16>(x, i0);
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

void FillAvx512(VecKernels& t) {
  t.isa = Isa::kAvx512;
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

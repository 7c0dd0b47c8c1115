// AVX2 + FMA versions of the vector kernels. Private to this file (compiled with AVX2 flags):
// only FillAvx2 is visible, and it is called only on CPUs that have AVX2.
#include <immintrin.h>

#include <cmath>

#include "inference/ops/vec.h"

namespace qwen::ops::internal {
namespace {

// exp(x) as in the AVX-512 file, with 2^n built in the exponent bits; inputs clamped to
// [-87, 88] so that n stays a normal exponent.
inline __m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
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

inline float ScalarSigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, Sigmoid(g)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] * ScalarSigmoid(gate[i]) * up[i];
}

void Silu(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(x + i, _mm256_mul_ps(v, Sigmoid(v)));
  }
  for (; i < n; ++i) x[i] = x[i] * ScalarSigmoid(x[i]);
}

void SigmoidMul(const float* gate, float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(x + i,
                     _mm256_mul_ps(_mm256_loadu_ps(x + i), Sigmoid(_mm256_loadu_ps(gate + i))));
  }
  for (; i < n; ++i) x[i] *= ScalarSigmoid(gate[i]);
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

double SumSquares(const float* x, int64_t n) {
  double total = 0;
  int64_t i = 0;
  for (int64_t c = 0; c + 1024 <= n; c += 1024) {
    __m256 acc = _mm256_setzero_ps();
    for (i = c; i < c + 1024; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    total += HorizontalSum(acc);
  }
  __m256 acc = _mm256_setzero_ps();
  for (i = n / 1024 * 1024; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  total += HorizontalSum(acc);
  for (; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
  return total;
}

void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
    if (w != nullptr) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    _mm256_storeu_ps(out + i, v);
  }
  for (; i < n; ++i) out[i] = w != nullptr ? x[i] * scale * w[i] : x[i] * scale;
}

float ExpSubSum(float* s, float max, int64_t n) {
  const __m256 mx = _mm256_set1_ps(max);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), mx));
    _mm256_storeu_ps(s + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = HorizontalSum(acc);
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - max);
    sum += s[i];
  }
  return sum;
}

// The delta-rule step in strips of 64 columns: 16 registers of accumulators per strip (u and w),
// so heads wider than 64 read their state rows once per strip in the first pass.
void DeltaStep(float* S, const float* k, const float* q, const float* v, float decay, float beta,
               float scale, int d, float* out) {
  constexpr int W = 64, C = W / 8;
  if (d % W != 0) {
    // Narrow or odd heads: the same arithmetic, one column at a time.
    float kq = 0;
    for (int r = 0; r < d; ++r) kq += k[r] * q[r];
    for (int c = 0; c < d; ++c) {
      float u = 0, w = 0;
      for (int r = 0; r < d; ++r) {
        u += S[r * d + c] * k[r];
        w += S[r * d + c] * q[r];
      }
      const float delta = (v[c] - decay * u) * beta;
      out[c] = (decay * w + kq * delta) * scale;
      for (int r = 0; r < d; ++r) S[r * d + c] = S[r * d + c] * decay + k[r] * delta;
    }
    return;
  }
  float kq = 0;
  for (int r = 0; r < d; ++r) kq += k[r] * q[r];
  const __m256 dec = _mm256_set1_ps(decay);
  const __m256 bet = _mm256_set1_ps(beta);
  const __m256 kqv = _mm256_set1_ps(kq);
  const __m256 sc = _mm256_set1_ps(scale);
  for (int c0 = 0; c0 < d; c0 += W) {
    __m256 u[C], w[C];
    for (int c = 0; c < C; ++c) u[c] = w[c] = _mm256_setzero_ps();
    for (int r = 0; r < d; ++r) {
      const __m256 kr = _mm256_set1_ps(k[r]);
      const __m256 qr = _mm256_set1_ps(q[r]);
      const float* Sr = S + r * d + c0;
      for (int c = 0; c < C; ++c) {
        const __m256 s = _mm256_loadu_ps(Sr + 8 * c);
        u[c] = _mm256_fmadd_ps(s, kr, u[c]);
        w[c] = _mm256_fmadd_ps(s, qr, w[c]);
      }
    }
    for (int c = 0; c < C; ++c) {
      const __m256 delta =
          _mm256_mul_ps(_mm256_fnmadd_ps(dec, u[c], _mm256_loadu_ps(v + c0 + 8 * c)), bet);
      _mm256_storeu_ps(out + c0 + 8 * c,
                       _mm256_mul_ps(_mm256_fmadd_ps(kqv, delta, _mm256_mul_ps(dec, w[c])), sc));
      u[c] = delta;
    }
    for (int r = 0; r < d; ++r) {
      const __m256 kr = _mm256_set1_ps(k[r]);
      float* Sr = S + r * d + c0;
      for (int c = 0; c < C; ++c) {
        const __m256 s = _mm256_loadu_ps(Sr + 8 * c);
        _mm256_storeu_ps(Sr + 8 * c, _mm256_fmadd_ps(kr, u[c], _mm256_mul_ps(s, dec)));
      }
    }
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
  t.delta_step = DeltaStep;
}

}  // namespace qwen::ops::internal

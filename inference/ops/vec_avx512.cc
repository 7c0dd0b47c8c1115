// AVX-512 versions of the vector kernels. Everything here is private to this file (compiled
// with AVX-512 flags): only FillAvx512 is visible, and it is called only on CPUs that have it.
#include <immintrin.h>

#include "inference/ops/vec.h"

namespace qwen::ops::internal {
namespace {

// exp(x) by range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r and an
// exact scaling by 2^n. Relative error about 2e-7; inputs clamped to [-87.3, 88.7].
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __mmask16 Tail(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
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
  // Float lanes over chunks of 1024, then double: accurate enough for norms of any width.
  double total = 0;
  for (int64_t c = 0; c < n; c += 1024) {
    const int64_t end = c + 1024 < n ? c + 1024 : n;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = c; i < end; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(Tail(end - i), x + i);
      acc = _mm512_fmadd_ps(v, v, acc);
    }
    total += _mm512_reduce_add_ps(acc);
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
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(acc);
}

// The delta-rule step with the state row held in D/16 registers per accumulator.
template <int D>
void DeltaStepFixed(float* S, const float* k, const float* q, const float* v, float decay,
                    float beta, float scale, float* out) {
  constexpr int C = D / 16;
  __m512 u[C], w[C];
  for (int c = 0; c < C; ++c) u[c] = w[c] = _mm512_setzero_ps();
  float kq = 0;
  for (int r = 0; r < D; ++r) {
    const __m512 kr = _mm512_set1_ps(k[r]);
    const __m512 qr = _mm512_set1_ps(q[r]);
    const float* Sr = S + r * D;
    _mm_prefetch(reinterpret_cast<const char*>(Sr + 4 * D), _MM_HINT_T0);
    for (int c = 0; c < C; ++c) {
      const __m512 s = _mm512_loadu_ps(Sr + 16 * c);
      u[c] = _mm512_fmadd_ps(s, kr, u[c]);
      w[c] = _mm512_fmadd_ps(s, qr, w[c]);
    }
    kq += k[r] * q[r];
  }
  const __m512 dec = _mm512_set1_ps(decay);
  const __m512 bet = _mm512_set1_ps(beta);
  const __m512 kqv = _mm512_set1_ps(kq);
  const __m512 sc = _mm512_set1_ps(scale);
  for (int c = 0; c < C; ++c) {
    const __m512 delta =
        _mm512_mul_ps(_mm512_fnmadd_ps(dec, u[c], _mm512_loadu_ps(v + 16 * c)), bet);
    _mm512_storeu_ps(out + 16 * c,
                     _mm512_mul_ps(_mm512_fmadd_ps(kqv, delta, _mm512_mul_ps(dec, w[c])), sc));
    u[c] = delta;
  }
  for (int r = 0; r < D; ++r) {
    const __m512 kr = _mm512_set1_ps(k[r]);
    float* Sr = S + r * D;
    for (int c = 0; c < C; ++c) {
      const __m512 s = _mm512_loadu_ps(Sr + 16 * c);
      _mm512_storeu_ps(Sr + 16 * c, _mm512_fmadd_ps(kr, u[c], _mm512_mul_ps(s, dec)));
    }
  }
}

void (*g_scalar_delta_step)(float*, const float*, const float*, const float*, float, float, float,
                            int, float*) = nullptr;

void DeltaStep(float* S, const float* k, const float* q, const float* v, float decay, float beta,
               float scale, int d, float* out) {
  switch (d) {
    case 128:
      return DeltaStepFixed<128>(S, k, q, v, decay, beta, scale, out);
    case 64:
      return DeltaStepFixed<64>(S, k, q, v, decay, beta, scale, out);
    case 32:
      return DeltaStepFixed<32>(S, k, q, v, decay, beta, scale, out);
    default:
      return g_scalar_delta_step(S, k, q, v, decay, beta, scale, d, out);
  }
}

}  // namespace

void FillAvx512(VecKernels& t) {
  t.isa = Isa::kAvx512;
  g_scalar_delta_step = t.delta_step;  // the level below handles other head sizes
  t.silu_mul = SiluMul;
  t.silu = Silu;
  t.sigmoid_mul = SigmoidMul;
  t.sum_squares = SumSquares;
  t.scale_mul = ScaleMul;
  t.exp_sub_sum = ExpSubSum;
  t.delta_step = DeltaStep;
}

}  // namespace qwen::ops::internal

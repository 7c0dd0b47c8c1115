// Vector kernels of the non-matrix ops (activations, norms, the gated delta rule, attention), one
// interface with a scalar definition and SIMD versions chosen at run time.
#ifndef QWEN_INFERENCE_OPS_VEC_H_
#define QWEN_INFERENCE_OPS_VEC_H_

#include <cstdint>

#include "inference/common/cpu_features.h"

namespace qwen::ops {

// What every level computes: the same bits.
//
// Every function of VecKernels gives bit-identical results at every level (scalar, AVX2,
// AVX-512), for every n and every element position: the scalar code is the definition, written
// with std::fma exactly where the SIMD code fuses, and the SIMD code has no tails that round
// differently (masked loads, or the scalar formula). Nothing depends on where an element falls
// in a vector or on how many elements a call has, so a row's result does not depend on the rows
// computed with it. The canonical orders:
//
// Exp(x), the exponential of every kernel (vec_math.h, ExpRef):
//   x clamped to [-87.3, 88] (NaN stays NaN); n = round-to-nearest-even(x * 1.44269504089f);
//   r = fma(-n, 0.693145751953125f, x); r = fma(-n, 1.428606765330187e-06f, r);
//   p = 1/720; p = fma(p, r, c) for c = 1/120, 1/24, 1/6, 0.5, 1, 1; result p * 2^n (2^n is a
//   normal float built from its exponent bits). Relative error about 2e-7.
// Sigmoid(x) = 1 / (1 + Exp(0 - x)); silu(x) = x * Sigmoid(x).
//
// Reduce16 over a sequence a_0..a_{n-1}: sixteen float partial sums p[l] = +0; for i = 0..n-1 in
//   order, p[i % 16] = fma(x_i, y_i, p[i % 16]) for dot products and sums of squares (x_i = y_i),
//   p[i % 16] = p[i % 16] + e_i for plain sums; then the tree p[l] = p[l] + p[l + 8] (l < 8),
//   p[l] = p[l] + p[l + 4] (l < 4), p[l] = p[l] + p[l + 2] (l < 2), result p[0] + p[1].
//   (AVX-512 holds p in one zmm, AVX2 in two ymm: lanes 0-7 and 8-15.)
// Dot16(a, b, n) = Reduce16 of the products a_i b_i.
//
// Function table of one level. The functions write only their outputs and keep no state: they
// are thread-safe for calls on disjoint outputs.
struct VecKernels {
  Isa isa = Isa::kScalar;
  // out[i] = (gate[i] * Sigmoid(gate[i])) * up[i]; out may alias gate or up.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n) = nullptr;
  // x[i] = x[i] * Sigmoid(x[i]).
  void (*silu)(float* x, int64_t n) = nullptr;
  // x[i] = x[i] * Sigmoid(gate[i]).
  void (*sigmoid_mul)(const float* gate, float* x, int64_t n) = nullptr;
  // Sum of x[i]^2: the elements in chunks of 1024 from 0, each chunk's Reduce16 (fma of x_i x_i)
  // converted to double and added to a double total in chunk order.
  double (*sum_squares)(const float* x, int64_t n) = nullptr;
  // out[i] = (x[i] * scale) * w[i], or x[i] * scale when w is null; out may alias x.
  void (*scale_mul)(const float* x, float scale, const float* w, float* out, int64_t n) = nullptr;
  // s[i] = Exp(s[i] - max) for i < n; returns Reduce16 (plain sum) of the new values.
  float (*exp_sub_sum)(float* s, float max, int64_t n) = nullptr;
  // Dot16(a, b, n).
  float (*dot)(const float* a, const float* b, int64_t n) = nullptr;

  // The gated delta rule of one head over t.n_tokens tokens, state S [d (key r)][d (value c)]
  // row-major, updated in place. Token by token, with k, q, v, decay, beta of that token and
  // S the state before it, for every value column c:
  //   u_c   = fma chain over r = 0..d-1 from +0: u = fma(S[r][c], k[r], u)
  //   w_c   = the same with q[r]
  //   kq    = Dot16(k, q, d)
  //   delta = fma(-decay, u_c, v[c]) * beta
  //   out_c = fma(kq, delta, decay * w_c) * scale
  //   S[r][c] = fma(k[r], delta, S[r][c] * decay)      for every r
  // which equals out = S_newᵀ q * scale without a third pass over S. Columns are independent,
  // so the SIMD versions keep a block of columns in cache across all tokens of the call; a token
  // gets the same bits whether it comes alone (decode) or in a prompt of any length.
  struct DeltaTokens {
    int64_t n_tokens = 0;
    const float* k = nullptr;  // [d] per token, `in_stride` floats apart (so are q and v)
    const float* q = nullptr;
    const float* v = nullptr;
    int64_t in_stride = 0;
    const float* decay = nullptr;  // per token, `gate_stride` apart: exp(g) in (0, 1]
    const float* beta = nullptr;
    int64_t gate_stride = 0;
    float* out = nullptr;  // [d] per token, `out_stride` floats apart
    int64_t out_stride = 0;
  };
  void (*delta_rule)(float* S, int d, float scale, const DeltaTokens& t) = nullptr;

  // Attention scores: s[r * s_stride + j] = Dot16(q_r, K_j, hd) for r < n_rows, j < n_keys,
  // with q_r = q + r * q_stride and K_j the j-th key row, `k_stride` elements apart, in float
  // or (k_f16) IEEE half.
  void (*attn_scores)(const float* q, int64_t q_stride, int n_rows, const void* k, bool k_f16,
                      int64_t k_stride, int64_t n_keys, int hd, float* s,
                      int64_t s_stride) = nullptr;
  // Attention values, for r < n_rows: first, when rescale is set and rescale[r] != 1,
  //   acc[r * acc_stride + i] = acc[r * acc_stride + i] * rescale[r]      (every i < hd)
  // then for j = 0..n_keys[r]-1 in order, for i < hd:
  //   acc[r * acc_stride + i] = fma(p[r * p_stride + j], V_j[i], acc[r * acc_stride + i])
  // with V_j the j-th value row, `v_stride` elements apart, in float or (v_f16) IEEE half.
  struct AttnValues {
    const float* p = nullptr;
    int64_t p_stride = 0;
    const int64_t* n_keys = nullptr;  // per row
    const float* rescale = nullptr;   // per row, or null
    int n_rows = 0;
    const void* v = nullptr;
    bool v_f16 = false;
    int64_t v_stride = 0;
    int hd = 0;
    float* acc = nullptr;
    int64_t acc_stride = 0;
  };
  void (*attn_accumulate)(const AttnValues& a) = nullptr;
};

// The table for exactly `isa`, or the highest level at or below it that the CPU supports.
const VecKernels& VecKernelsFor(Isa isa);
// The table the engine uses: VecKernelsFor(ActiveIsa()).
const VecKernels& Vec();

namespace internal {
void FillScalar(VecKernels& t);
void FillAvx2(VecKernels& t);
void FillAvx512(VecKernels& t);
}  // namespace internal

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_VEC_H_

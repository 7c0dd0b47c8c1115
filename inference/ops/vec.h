// Vector kernels of the non-matrix ops (activations, norms, the delta-rule step), one interface
// with a scalar reference and SIMD versions chosen at run time.
#ifndef QWEN_INFERENCE_OPS_VEC_H_
#define QWEN_INFERENCE_OPS_VEC_H_

#include <cstdint>

#include "inference/common/cpu_features.h"

namespace qwen::ops {

// Function table of one instruction-set level. All functions are pure and thread-safe. The SIMD
// versions use a polynomial exp (max relative error about 2e-7 on [-87, 88]) where the scalar
// reference calls std::exp; everything else is the same arithmetic in another order.
struct VecKernels {
  Isa isa = Isa::kScalar;
  // out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n) = nullptr;
  // x[i] = silu(x[i]).
  void (*silu)(float* x, int64_t n) = nullptr;
  // x[i] *= sigmoid(gate[i]).
  void (*sigmoid_mul)(const float* gate, float* x, int64_t n) = nullptr;
  // sum of x[i]^2 (accumulated in float lanes, then double).
  double (*sum_squares)(const float* x, int64_t n) = nullptr;
  // out[i] = x[i] * scale * w[i] (w may be null: no weight); out may alias x.
  void (*scale_mul)(const float* x, float scale, const float* w, float* out, int64_t n) = nullptr;
  // s[i] = exp(s[i] - max) for i < n; returns the sum of the new values.
  float (*exp_sub_sum)(float* s, float max, int64_t n) = nullptr;
  // One token of the gated delta rule for one head of dimension d (a multiple of 16 for the SIMD
  // versions; others fall back to scalar):
  //   u = Sᵀk, w = Sᵀq; delta = (v - decay u) beta; S = decay S + k deltaᵀ;
  //   out = (decay w + (k·q) delta) * scale
  // which equals o = S_newᵀ q without a third pass over S.
  void (*delta_step)(float* S, const float* k, const float* q, const float* v, float decay,
                     float beta, float scale, int d, float* out) = nullptr;
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

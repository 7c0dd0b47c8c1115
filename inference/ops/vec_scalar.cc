// The reference: plain loops with std::exp, written for clarity.
#include <cmath>

#include "inference/ops/vec.h"

namespace qwen::ops::internal {
namespace {

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void Silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void SigmoidMul(const float* gate, float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= 1.0f / (1.0f + std::exp(-gate[i]));
}

double SumSquares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  if (w == nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
  }
}

float ExpSubSum(float* s, float max, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    s[i] = std::exp(s[i] - max);
    sum += s[i];
  }
  return sum;
}

void DeltaStep(float* S, const float* k, const float* q, const float* v, float decay, float beta,
               float scale, int d, float* out) {
  // u = Sᵀk and w = Sᵀq in one pass over S.
  float u[512], w[512];
  float* uu = d <= 512 ? u : new float[d];
  float* ww = d <= 512 ? w : new float[d];
  for (int c = 0; c < d; ++c) uu[c] = ww[c] = 0;
  float kq = 0;
  for (int r = 0; r < d; ++r) {
    const float* Sr = S + r * d;
    for (int c = 0; c < d; ++c) {
      uu[c] += Sr[c] * k[r];
      ww[c] += Sr[c] * q[r];
    }
    kq += k[r] * q[r];
  }
  // delta = (v - decay u) beta; out = (decay w + (k·q) delta) scale; S = decay S + k deltaᵀ.
  for (int c = 0; c < d; ++c) {
    const float delta = (v[c] - decay * uu[c]) * beta;
    out[c] = (decay * ww[c] + kq * delta) * scale;
    uu[c] = delta;
  }
  for (int r = 0; r < d; ++r) {
    float* Sr = S + r * d;
    for (int c = 0; c < d; ++c) Sr[c] = Sr[c] * decay + k[r] * uu[c];
  }
  if (uu != u) delete[] uu;
  if (ww != w) delete[] ww;
}

}  // namespace

void FillScalar(VecKernels& t) {
  t.isa = Isa::kScalar;
  t.silu_mul = SiluMul;
  t.silu = Silu;
  t.sigmoid_mul = SigmoidMul;
  t.sum_squares = SumSquares;
  t.scale_mul = ScaleMul;
  t.exp_sub_sum = ExpSubSum;
  t.delta_step = DeltaStep;
}

}  // namespace qwen::ops::internal

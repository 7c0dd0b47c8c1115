// The definition: plain loops in the canonical orders of vec.h, with std::fma exactly where the
// SIMD levels fuse. Written for clarity; the SIMD files must match it bit for bit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "inference/common/fp16.h"
#include "inference/ops/vec.h"
#include "inference/ops/vec_math.h"

namespace qwen::ops::internal {
namespace {

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * SigmoidRef(gate[i]) * up[i];
}

void Silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * SigmoidRef(x[i]);
}

void SigmoidMul(const float* gate, float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * SigmoidRef(gate[i]);
}

double SumSquares(const float* x, int64_t n) {
  double total = 0;
  for (int64_t c = 0; c < n; c += 1024) {
    total += static_cast<double>(Dot16Ref(x + c, x + c, std::min<int64_t>(1024, n - c)));
  }
  return total;
}

void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  if (w == nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
  }
}

float ExpSubSum(float* s, float max, int64_t n) {
  float p[16] = {};
  for (int64_t i = 0; i < n; ++i) {
    s[i] = ExpRef(s[i] - max);
    p[i % 16] = p[i % 16] + s[i];
  }
  return Tree16(p);
}

float Dot(const float* a, const float* b, int64_t n) { return Dot16Ref(a, b, n); }

void DeltaRule(float* S, int d, float scale, const VecKernels::DeltaTokens& t) {
  std::vector<float> u(d), w(d);
  for (int64_t tok = 0; tok < t.n_tokens; ++tok) {
    const float* k = t.k + tok * t.in_stride;
    const float* q = t.q + tok * t.in_stride;
    const float* v = t.v + tok * t.in_stride;
    const float decay = t.decay[tok * t.gate_stride];
    const float beta = t.beta[tok * t.gate_stride];
    float* out = t.out + tok * t.out_stride;
    std::fill(u.begin(), u.end(), 0.0f);
    std::fill(w.begin(), w.end(), 0.0f);
    for (int r = 0; r < d; ++r) {
      const float* Sr = S + static_cast<int64_t>(r) * d;
      for (int c = 0; c < d; ++c) {
        u[c] = std::fma(Sr[c], k[r], u[c]);
        w[c] = std::fma(Sr[c], q[r], w[c]);
      }
    }
    const float kq = Dot16Ref(k, q, d);
    for (int c = 0; c < d; ++c) {
      const float delta = std::fma(-decay, u[c], v[c]) * beta;
      out[c] = std::fma(kq, delta, decay * w[c]) * scale;
      u[c] = delta;
    }
    for (int r = 0; r < d; ++r) {
      float* Sr = S + static_cast<int64_t>(r) * d;
      for (int c = 0; c < d; ++c) Sr[c] = std::fma(k[r], u[c], Sr[c] * decay);
    }
  }
}

// Row j of a K or V tile as float.
inline float At(const void* base, bool f16, int64_t stride, int64_t j, int i) {
  if (f16) return Fp16ToFp32(static_cast<const uint16_t*>(base)[j * stride + i]);
  return static_cast<const float*>(base)[j * stride + i];
}

void AttnScores(const float* q, int64_t q_stride, int n_rows, const void* k, bool k_f16,
                int64_t k_stride, int64_t n_keys, int hd, float* s, int64_t s_stride) {
  for (int r = 0; r < n_rows; ++r) {
    const float* qr = q + r * q_stride;
    for (int64_t j = 0; j < n_keys; ++j) {
      float p[16] = {};
      for (int i = 0; i < hd; ++i)
        p[i % 16] = std::fma(qr[i], At(k, k_f16, k_stride, j, i), p[i % 16]);
      s[r * s_stride + j] = Tree16(p);
    }
  }
}

void AttnAccumulate(const VecKernels::AttnValues& x) {
  for (int r = 0; r < x.n_rows; ++r) {
    float* a = x.acc + r * x.acc_stride;
    if (x.rescale != nullptr && x.rescale[r] != 1.0f) {
      for (int i = 0; i < x.hd; ++i) a[i] = a[i] * x.rescale[r];
    }
    for (int64_t j = 0; j < x.n_keys[r]; ++j) {
      const float pj = x.p[r * x.p_stride + j];
      for (int i = 0; i < x.hd; ++i) a[i] = std::fma(pj, At(x.v, x.v_f16, x.v_stride, j, i), a[i]);
    }
  }
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
  t.dot = Dot;
  t.delta_rule = DeltaRule;
  t.attn_scores = AttnScores;
  t.attn_accumulate = AttnAccumulate;
}

}  // namespace qwen::ops::internal

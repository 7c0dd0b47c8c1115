#include "inference/ops/delta_net.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "inference/ops/basic.h"
#include "inference/ops/vec.h"

namespace qwen::ops {
namespace {

int KeyHead(const DeltaRuleArgs& a, int j) { return a.v_tiled ? j % a.n_k : j / (a.n_v / a.n_k); }

}  // namespace

void CausalConv1dSilu(ComputeContext& ctx, const float* x, int64_t n_tokens, int64_t channels,
                      const float* w, int kernel, float* state, float* out) {
  const int hist = kernel - 1;
  // Channels are independent: split them over the threads in cache-friendly spans.
  ctx.pool().ParallelFor(channels, 512, [&](int64_t c0, int64_t c1, int) {
    const int64_t span = c1 - c0;
    for (int64_t t = 0; t < n_tokens; ++t) {
      float* o = out + t * channels + c0;
      for (int64_t c = 0; c < span; ++c) o[c] = 0.0f;
      for (int j = 0; j < kernel; ++j) {
        // Window position j is input row t - hist + j: from the state when negative.
        const int64_t src = t - hist + j;
        const float* in = src < 0 ? state + (hist + src) * channels + c0 : x + src * channels + c0;
        const float* wj = w + j * channels + c0;
        for (int64_t c = 0; c < span; ++c) o[c] += wj[c] * in[c];
      }
      Vec().silu(o, span);
    }
    // New state: the last `hist` rows of (state ++ x).
    for (int r = 0; r < hist; ++r) {
      const int64_t src = n_tokens - hist + r;  // row index into x, negative means old state
      float* dst = state + r * channels + c0;
      const float* from = src < 0 ? state + (hist + src) * channels + c0 : x + src * channels + c0;
      if (from != dst) std::memmove(dst, from, span * sizeof(float));
    }
  });
}

void GatedDeltaRuleRecurrent(ComputeContext& ctx, const DeltaRuleArgs& a) {
  GatedDeltaRuleRecurrent(ctx, Vec(), a);
}

void GatedDeltaRuleRecurrent(ComputeContext& ctx, const VecKernels& vec, const DeltaRuleArgs& a) {
  const int d = a.d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  ctx.pool().ParallelFor(a.n_v, 1, [&](int64_t j0, int64_t j1, int thread) {
    // This head's decay exp(g) and beta, per token.
    float* decay = ctx.ThreadScratch(thread, 0, 2 * static_cast<size_t>(a.n_tokens));
    float* beta = decay + a.n_tokens;
    for (int64_t j = j0; j < j1; ++j) {
      const int i = KeyHead(a, static_cast<int>(j));
      for (int64_t t = 0; t < a.n_tokens; ++t) {
        decay[t] = std::exp(a.g[t * a.n_v + j]);
        beta[t] = a.beta[t * a.n_v + j];
      }
      VecKernels::DeltaTokens tokens;
      tokens.n_tokens = a.n_tokens;
      tokens.k = a.k + i * d;
      tokens.q = a.q + i * d;
      tokens.v = a.v + j * d;
      tokens.in_stride = a.row_stride;
      tokens.decay = decay;
      tokens.beta = beta;
      tokens.gate_stride = 1;
      tokens.out = a.out + j * d;
      tokens.out_stride = static_cast<int64_t>(a.n_v) * d;
      vec.delta_rule(a.state + j * d * d, d, scale, tokens);
    }
  });
}

}  // namespace qwen::ops

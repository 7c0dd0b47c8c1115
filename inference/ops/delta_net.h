// The gated delta net's sequence ops: the causal depthwise convolution and the gated delta rule.
#ifndef QWEN_INFERENCE_OPS_DELTA_NET_H_
#define QWEN_INFERENCE_OPS_DELTA_NET_H_

#include <cstdint>

#include "inference/ops/compute.h"
#include "inference/ops/vec.h"

namespace qwen::ops {

// out[t][c] = silu(sum_j w[j][c] * in[t - (K-1) + j][c]) over a window that reaches back into
// `state` ([K-1, C]: the last K-1 input rows before this call, oldest first); afterwards the
// state holds the last K-1 rows of (state ++ x). x and out are [n_tokens, C]; w is [K, C] (the
// GGUF tensor [C, K] transposed, so that the loop over channels is contiguous).
void CausalConv1dSilu(ComputeContext& ctx, const float* x, int64_t n_tokens, int64_t channels,
                      const float* w, int kernel, float* state, float* out);

// Shapes and strides of one delta-rule call. q and k rows hold n_k heads of d values, v rows
// n_v heads; rows of one token are `row_stride` floats apart (they are views into the conv
// output [n_tokens, q | k | v]). q and k must be L2-normalised already.
struct DeltaRuleArgs {
  const float* q;
  const float* k;
  const float* v;
  int64_t row_stride;
  const float* g;     // [n_tokens, n_v] log decay (negative)
  const float* beta;  // [n_tokens, n_v] in (0, 1)
  int64_t n_tokens;
  int n_k;
  int n_v;
  int d;         // head dim of keys and values
  bool v_tiled;  // value head j reads key head j % n_k (else j / (n_v / n_k))
  float* state;  // [n_v, d (key), d (value)], updated in place
  float* out;    // [n_tokens, n_v, d]
};

// Token by token, for each value head j with key head i:
//   S = S * exp(g); delta = (v - Sᵀk) * beta; S = S + k deltaᵀ; o = Sᵀq / sqrt(d),
// computed by VecKernels::delta_rule (vec.h, which defines the rounding) with decay = exp(g)
// (std::exp) and scale = 1 / sqrt(d); value heads in parallel. A token's output and the state
// after it are the same bits whether it comes alone or with others in one call, at every level.
void GatedDeltaRuleRecurrent(ComputeContext& ctx, const DeltaRuleArgs& a);
// The same with the kernels of a given level instead of the active one (tests and benchmarks).
void GatedDeltaRuleRecurrent(ComputeContext& ctx, const VecKernels& vec, const DeltaRuleArgs& a);

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_DELTA_NET_H_

// Causal multi-head attention with grouped KV heads over a sequence's KV cache.
#ifndef QWEN_INFERENCE_OPS_ATTENTION_H_
#define QWEN_INFERENCE_OPS_ATTENTION_H_

#include <cstdint>

#include "inference/ops/compute.h"

namespace qwen::ops {

// One layer's KV cache of one sequence: K and V as [n_head_kv, capacity, head_dim], in F16 or
// F32. Positions are contiguous per head so a block of keys is one strided read.
struct KvView {
  void* k = nullptr;
  void* v = nullptr;
  bool f16 = true;
  int64_t capacity = 0;
  int n_head_kv = 0;
  int head_dim = 0;

  size_t elem_bytes() const { return f16 ? 2 : 4; }
  size_t offset(int head, int64_t pos) const {
    return (static_cast<size_t>(head) * capacity + pos) * head_dim * elem_bytes();
  }
};

// Stores k, v [n_tokens, n_head_kv, head_dim] at positions pos0.. in the cache.
void KvStore(const KvView& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens);

// Keys are visited in tiles of this many positions at absolute offsets (0, 64, 128, ...).
inline constexpr int64_t kAttentionKeyTile = 64;

// out[t, h] = softmax(q[t, h] · K[g]ᵀ / sqrt(head_dim) over positions 0..pos0 + t) · V[g], with
// g = h / (n_head / n_head_kv) (consecutive query heads share a KV head).
// q and out are [n_tokens, n_head, head_dim].
//
// A query's output is a fixed function of its own q and the cached K/V of positions 0..its
// position, the same bits at every kernel level, whatever other queries the call has, however
// the positions are split between calls (pos0) and whether K/V are converted from F16 per tile
// or per row. With q' = q * (1 / sqrt(head_dim)) (a float product per element), for each key
// tile [64 m, 64 m + 64) in order, over the keys j of the tile up to the query's position:
//   s_j = Dot16(q', K_j) (vec.h);  M = max(M_old, max_j s_j);
//   from the second tile on: c = Exp(M_old - M) and, when c != 1, acc[i] = acc[i] * c and
//   sum = sum * c;  p_j = Exp(s_j - M);  sum = sum + Reduce16(p_j);
//   acc[i] = fma(p_j, V_j[i], acc[i]) for j in order
// (acc and sum start at +0), then out[i] = acc[i] * (1 / sum). Scratch memory does not depend on
// the context length.
void CausalAttention(ComputeContext& ctx, const float* q, int64_t n_tokens, int n_head,
                     const KvView& kv, int64_t pos0, float* out);

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_ATTENTION_H_

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

// out[t, h] = softmax(q[t, h] · K[g]ᵀ / sqrt(head_dim) over positions 0..pos0 + t) · V[g], with
// g = h / (n_head / n_head_kv) (consecutive query heads share a KV head).
// q and out are [n_tokens, n_head, head_dim]. Keys are visited in tiles with an online softmax
// (flash-attention style), so scratch memory does not depend on the context length.
void CausalAttention(ComputeContext& ctx, const float* q, int64_t n_tokens, int n_head,
                     const KvView& kv, int64_t pos0, float* out);

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_ATTENTION_H_

// Element-wise and row-wise ops of the forward pass. Row ops take [n_rows, width] buffers and
// split large inputs over the context's threads.
#ifndef QWEN_INFERENCE_OPS_BASIC_H_
#define QWEN_INFERENCE_OPS_BASIC_H_

#include <cmath>
#include <cstdint>

#include "inference/ops/compute.h"

namespace qwen::ops {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }
// log(1 + e^x), linear above 20 where the difference is below float precision.
inline float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (w may be null: no scaling). out may alias x.
void RmsNorm(ComputeContext& ctx, const float* x, const float* w, int64_t n_rows, int64_t width,
             float eps, float* out);

// x[r] /= max(||x[r]||, eps), in place.
void L2Norm(ComputeContext& ctx, float* x, int64_t n_rows, int64_t width, float eps);

// out[i] = silu(gate[i]) * up[i]. out may alias gate or up.
void SwiGlu(ComputeContext& ctx, const float* gate, const float* up, int64_t n, float* out);

// x[i] *= sigmoid(gate[i]).
void SigmoidGate(ComputeContext& ctx, const float* gate, float* x, int64_t n);

// x[i] *= silu(gate[i]).
void SiluGate(ComputeContext& ctx, const float* gate, float* x, int64_t n);

// y[i] += x[i].
void AddInPlace(float* y, const float* x, int64_t n);

// Rotary embedding, NEOX pairing, on the first n_rot dims of each head: dims (i, i + n_rot/2)
// rotate by pos * base^(-2i / n_rot). x is [n_tokens, n_heads, head_dim]; pos[t] per token.
void RopeNeox(float* x, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
              float base);

// Interleaved multi-axis rotary embedding (Qwen3-VL / Qwen3.5 "IMROPE"): as RopeNeox, but each
// token has four positions (time, row, column, extra) and pair i (of n_rot / 2) takes its angle
// from one of them: with s = i % (sum of sections), time when s % 3 == 0 and s < 3 * sections[0],
// row when s % 3 == 1 and s < 3 * sections[1], column when s % 3 == 2 and s < 3 * sections[2],
// else extra. pos is [n_tokens, 4]. When a token's four positions are equal this computes
// exactly what RopeNeox computes for that position.
void RopeMulti(float* x, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               float base, const int sections[4]);

// Float <-> half conversion of a row (scalar; used for the KV cache writes).
void FloatToHalf(const float* x, uint16_t* out, int64_t n);

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_BASIC_H_

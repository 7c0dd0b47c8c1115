// Products of weight matrices (views into the GGUF mapping, any supported type) with activations.
#ifndef QWEN_INFERENCE_OPS_MATMUL_H_
#define QWEN_INFERENCE_OPS_MATMUL_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "absl/strings/string_view.h"
#include "inference/ops/compute.h"
#include "inference/quant/types.h"

namespace qwen::ops {

// A 2-D weight: n_out rows of n_in elements (GGUF ne = [n_in, n_out]), row-major, in `type`.
struct Weight {
  const uint8_t* data = nullptr;
  quant::GgmlType type = quant::GgmlType::kF32;
  int64_t n_in = 0;
  int64_t n_out = 0;
  size_t row_bytes = 0;
  absl::string_view name;
  // The same rows in the kernels' packed layout (quant::KernelTable::pack16: group g of 16 rows
  // at packed + 16 g row_bytes), or null. Set by the model when a packed copy exists; the fast
  // integer path then reads only this, the reference path and GetRows only `data`.
  const uint8_t* packed = nullptr;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

// One product of a fused group: y[t * n_out + o] = sum_i W[o][i] * x[t][i].
struct MatMulOut {
  const Weight* w;
  float* y;  // [n_tokens, w->n_out]
};

// y = x · Wᵀ for each weight of `outs`, all reading the same input x [n_tokens, n_in].
//
// Fusing products that share an input (q/k/v/gate; ffn gate/up) quantizes x once and splits all
// their rows over the threads in one parallel section. Paths:
// - float weights (F32/F16/BF16): the kernels' float dot_tile;
// - reference mode, quantized weights: tiles of rows dequantized to float32, then the F32
//   dot_tile;
// - fast mode, quantized weights: x rounded to 8-bit blocks once per call, then the kernels'
//   dot_tile over units of rows with every token at once: each weight block is read (and
//   unpacked) once per call.
// Every path computes a token's outputs with the same bits whatever other tokens share the call,
// however the rows are split over threads, and at every instruction-set level
// (quant/kernels.h; tests/quant/matmul_test.cc).
void MatMul(ComputeContext& ctx, const float* x, int64_t n_tokens,
            std::initializer_list<MatMulOut> outs);

inline void MatMul(ComputeContext& ctx, const Weight& w, const float* x, int64_t n_tokens,
                   float* y) {
  MatMul(ctx, x, n_tokens, {MatMulOut{&w, y}});
}

// Copies rows `ids` of an embedding matrix (any type) to float: out[k] = dequant(W[ids[k]]).
void GetRows(const Weight& w, const int32_t* ids, int64_t n, float* out);

}  // namespace qwen::ops

#endif  // QWEN_INFERENCE_OPS_MATMUL_H_

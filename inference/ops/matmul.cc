#include "inference/ops/matmul.h"

#include <algorithm>
#include <vector>

#include "inference/quant/kernels.h"


namespace qwen::ops {
namespace {

using quant::GgmlType;

bool IsFloatType(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}

// Rows of an integer-path work unit are a multiple of the tile kernels' 16 rows; units are sized
// for about this many per thread (dynamic balance) but no shorter than kMinUnitRows (the
// kernels prefetch one tile ahead within a unit).
constexpr int64_t kUnitsPerThread = 6;
constexpr int64_t kMinUnitRows = 64;
constexpr int64_t kMaxUnitRows = 1024;

// A contiguous range of rows of one weight, the unit of work handed to a thread.
struct RowBlock {
  int out;  // index into outs
  int64_t r0, r1;
};

void FloatBlock(ComputeContext& ctx, int thread, const MatMulOut& o, int64_t r0, int64_t r1,
                const float* x, int64_t n_tokens) {
  const Weight& w = *o.w;
  const int64_t rows = r1 - r0;
  const quant::KernelTable& k = quant::Kernels();
  const size_t x_stride = static_cast<size_t>(w.n_in) * sizeof(float);
  if (IsFloatType(w.type)) {
    k.dot_tile[static_cast<int>(w.type)](w.row(r0), w.row_bytes, rows, x, x_stride, n_tokens,
                                         o.y + r0, static_cast<size_t>(w.n_out), w.n_in);
    return;
  }
  // The reference: float32 weights without rounding error, float32 products.
  float* buf = ctx.ThreadScratch(thread, 0, static_cast<size_t>(rows * w.n_in));
  const auto dequant = k.dequantize[static_cast<int>(w.type)];
  for (int64_t r = 0; r < rows; ++r) dequant(w.row(r0 + r), buf + r * w.n_in, w.n_in);
  k.dot_tile[static_cast<int>(quant::GgmlType::kF32)](buf, x_stride, rows, x, x_stride, n_tokens,
                                                      o.y + r0, static_cast<size_t>(w.n_out),
                                                      w.n_in);
}

// All columns in one call: the tile kernels unpack each weight block once for every column, and
// a column's result does not depend on which other columns share the call.
void QuantBlock(const MatMulOut& o, int64_t r0, int64_t r1, const uint8_t* qx, size_t qx_row_bytes,
                int64_t n_tokens) {
  const Weight& w = *o.w;
  const int t = static_cast<int>(w.type);
  if (w.packed != nullptr) {
    // Units are whole 16-row groups (r0 and r1 multiples of 16; packed matrices have n_out a
    // multiple of 16).
    quant::Kernels().dot_tile_packed[t](w.packed + static_cast<size_t>(r0) * w.row_bytes,
                                        (r1 - r0) / 16, qx, qx_row_bytes, n_tokens, o.y + r0,
                                        static_cast<size_t>(w.n_out), w.n_in);
    return;
  }
  quant::Kernels().dot_tile[t](w.row(r0), w.row_bytes, r1 - r0, qx, qx_row_bytes, n_tokens,
                               o.y + r0, static_cast<size_t>(w.n_out), w.n_in);
}

}  // namespace

void MatMul(ComputeContext& ctx, const float* x, int64_t n_tokens,
            std::initializer_list<MatMulOut> outs_list) {
  if (n_tokens <= 0) return;
  const std::vector<MatMulOut> outs(outs_list);
  const int64_t n_in = outs[0].w->n_in;
  const bool reference = ctx.mode() == MathMode::kReference;

  // Quantize the activations once per activation format (formats differ between e.g. Q8_0 and
  // k-quant weights in one group).
  struct Quantized {
    GgmlType format;
    const uint8_t* data;
    size_t row_bytes;
  };
  std::vector<Quantized> quantized;
  std::vector<int> quant_of(outs.size(), -1);
  for (size_t k = 0; k < outs.size(); ++k) {
    const GgmlType t = outs[k].w->type;
    if (reference || IsFloatType(t)) continue;
    const GgmlType f = quant::ActivationType(t);
    for (size_t q = 0; q < quantized.size(); ++q) {
      if (quantized[q].format == f) quant_of[k] = static_cast<int>(q);
    }
    if (quant_of[k] >= 0) continue;
    const size_t row_bytes = quant::ActivationRowBytes(t, n_in);
    uint8_t* buf = ctx.SharedScratch(static_cast<int>(quantized.size()), row_bytes * n_tokens);
    const auto quantize = quant::Kernels().quantize_activation[static_cast<int>(t)];
    if (n_tokens <= 16) {
      // A few rows take microseconds: not worth waking the pool (one synchronization less per
      // MatMul in decode, which matters when the cores are shared).
      for (int64_t t2 = 0; t2 < n_tokens; ++t2) quantize(x + t2 * n_in, buf + t2 * row_bytes, n_in);
    } else {
      ctx.pool().ParallelFor(n_tokens, 16, [&](int64_t b, int64_t e, int) {
        for (int64_t t2 = b; t2 < e; ++t2) quantize(x + t2 * n_in, buf + t2 * row_bytes, n_in);
      });
    }
    quant_of[k] = static_cast<int>(quantized.size());
    quantized.push_back({f, buf, row_bytes});
  }

  // Row blocks over all outputs. Float paths want tall tiles (sgemm efficiency, dequantization
  // amortized over many tokens); integer paths want units of whole 16-row tiles, long enough
  // for prefetching and numerous enough to balance the threads.
  int64_t quant_rows = 0;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (quant_of[k] >= 0) quant_rows += outs[k].w->n_out;
  }
  // Many tokens make every row expensive: smaller units keep both threads busy to the end
  // (the weights are compute-bound then, not streamed).
  const bool wide = n_tokens > 8;
  int64_t unit_rows = quant_rows / ((wide ? 4 : 1) * kUnitsPerThread * ctx.n_threads());
  unit_rows = std::clamp<int64_t>((unit_rows + 15) / 16 * 16, wide ? 16 : kMinUnitRows,
                                  wide ? kMaxUnitRows / 2 : kMaxUnitRows);
  std::vector<RowBlock> blocks;
  for (size_t k = 0; k < outs.size(); ++k) {
    const Weight& w = *outs[k].w;
    int64_t block_rows;
    if (quant_of[k] < 0) {
      block_rows = n_tokens >= 32 ? 64 : 16;
      // Enough blocks for every thread even on small matrices.
      const int64_t per_thread = std::max<int64_t>(1, w.n_out / (4 * ctx.n_threads()));
      block_rows = std::max<int64_t>(1, std::min(block_rows, per_thread));
    } else {
      block_rows = unit_rows;
      // A matrix smaller than two units is split in two tile-aligned halves.
      if (w.n_out < 2 * unit_rows && w.n_out >= 64) block_rows = (w.n_out / 2 + 15) / 16 * 16;
    }
    for (int64_t r0 = 0; r0 < w.n_out; r0 += block_rows) {
      blocks.push_back({static_cast<int>(k), r0, std::min(w.n_out, r0 + block_rows)});
    }
  }
  ctx.pool().ParallelFor(
      static_cast<int64_t>(blocks.size()), 1, [&](int64_t b, int64_t e, int thread) {
        for (int64_t i = b; i < e; ++i) {
          const RowBlock& blk = blocks[i];
          const MatMulOut& o = outs[blk.out];
          const int q = quant_of[blk.out];
          if (q < 0) {
            FloatBlock(ctx, thread, o, blk.r0, blk.r1, x, n_tokens);
          } else {
            QuantBlock(o, blk.r0, blk.r1, quantized[q].data, quantized[q].row_bytes, n_tokens);
          }
        }
      });
}

void GetRows(const Weight& w, const int32_t* ids, int64_t n, float* out) {
  const auto dequant = quant::Kernels().dequantize[static_cast<int>(w.type)];
  for (int64_t k = 0; k < n; ++k) dequant(w.row(ids[k]), out + k * w.n_in, w.n_in);
}

}  // namespace qwen::ops

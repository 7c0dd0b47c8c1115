#include "inference/ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "inference/ops/basic.h"
#include "inference/ops/vec.h"
#include "inference/quant/kernels.h"

namespace qwen::ops {
namespace {

constexpr int64_t kQueryBlock = 32;  // tokens per work item
constexpr int64_t kKeyBlock = 256;   // cached positions per tile

// Copies `n` cached rows of one head starting at `pos` into float rows.
void LoadRows(const KvView& kv, const void* base, int head, int64_t pos, int64_t n, float* out) {
  const uint8_t* src = static_cast<const uint8_t*>(base) + kv.offset(head, pos);
  const int64_t count = n * kv.head_dim;
  if (kv.f16) {
    quant::Kernels().dequantize[static_cast<int>(quant::GgmlType::kF16)](src, out, count);
  } else {
    std::memcpy(out, src, count * sizeof(float));
  }
}

}  // namespace

void KvStore(const KvView& kv, const float* k, const float* v, int64_t pos0, int64_t n_tokens) {
  const int hd = kv.head_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < kv.n_head_kv; ++g) {
      const float* kt = k + (t * kv.n_head_kv + g) * hd;
      const float* vt = v + (t * kv.n_head_kv + g) * hd;
      uint8_t* kd = static_cast<uint8_t*>(kv.k) + kv.offset(g, pos0 + t);
      uint8_t* vd = static_cast<uint8_t*>(kv.v) + kv.offset(g, pos0 + t);
      if (kv.f16) {
        FloatToHalf(kt, reinterpret_cast<uint16_t*>(kd), hd);
        FloatToHalf(vt, reinterpret_cast<uint16_t*>(vd), hd);
      } else {
        std::memcpy(kd, kt, hd * sizeof(float));
        std::memcpy(vd, vt, hd * sizeof(float));
      }
    }
  }
}

void CausalAttention(ComputeContext& ctx, const float* q, int64_t n_tokens, int n_head,
                     const KvView& kv, int64_t pos0, float* out) {
  const int hd = kv.head_dim;
  const int group = n_head / kv.n_head_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t n_qblocks = (n_tokens + kQueryBlock - 1) / kQueryBlock;
  const int64_t n_items = n_qblocks * kv.n_head_kv;

  ctx.pool().ParallelFor(n_items, 1, [&](int64_t begin, int64_t end, int thread) {
    for (int64_t item = begin; item < end; ++item) {
      const int g = static_cast<int>(item % kv.n_head_kv);
      const int64_t t0 = (item / kv.n_head_kv) * kQueryBlock;
      const int64_t nt = std::min(kQueryBlock, n_tokens - t0);
      // Rows of the stacked query matrix: (head in group, token), head-major, so the heads that
      // share this KV head are multiplied with each key tile at once.
      const int64_t rows = group * nt;
      float* qs = ctx.ThreadScratch(thread, 0, rows * hd);             // [rows, hd]
      float* acc = ctx.ThreadScratch(thread, 1, rows * hd);            // [rows, hd]
      float* scores = ctx.ThreadScratch(thread, 2, rows * kKeyBlock);  // [rows, kKeyBlock]
      float* ktile = ctx.ThreadScratch(thread, 3, kKeyBlock * hd);
      float* vtile = ctx.ThreadScratch(thread, 4, kKeyBlock * hd);
      float* stats = ctx.ThreadScratch(thread, 5, 2 * rows);  // running max, running sum
      float* row_max = stats;
      float* row_sum = stats + rows;
      for (int hl = 0; hl < group; ++hl) {
        const int h = g * group + hl;
        for (int64_t t = 0; t < nt; ++t) {
          const float* src = q + ((t0 + t) * n_head + h) * hd;
          float* dst = qs + (hl * nt + t) * hd;
          for (int i = 0; i < hd; ++i) dst[i] = src[i] * scale;
        }
      }
      std::fill(acc, acc + rows * hd, 0.0f);
      std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
      std::fill(row_sum, row_sum + rows, 0.0f);

      const int64_t last_visible = pos0 + t0 + nt - 1;  // the block's last token sees this far
      for (int64_t k0 = 0; k0 <= last_visible; k0 += kKeyBlock) {
        const int64_t nk = std::min(kKeyBlock, last_visible + 1 - k0);
        LoadRows(kv, kv.k, g, k0, nk, ktile);
        LoadRows(kv, kv.v, g, k0, nk, vtile);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                    static_cast<int>(nk), hd, 1.0f, qs, hd, ktile, hd, 0.0f, scores,
                    static_cast<int>(kKeyBlock));
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r % nt;
          const int64_t limit = pos0 + t0 + t - k0;  // last visible key index within the tile
          float* s = scores + r * kKeyBlock;
          const int64_t n_vis = std::min(nk, limit + 1);
          float m = row_max[r];
          for (int64_t j = 0; j < n_vis; ++j) m = std::max(m, s[j]);
          const float correction = std::exp(row_max[r] - m);  // exp(-inf) = 0 on the first tile
          const float sum = n_vis > 0 ? Vec().exp_sub_sum(s, m, n_vis) : 0.0f;
          for (int64_t j = std::max<int64_t>(n_vis, 0); j < nk; ++j) s[j] = 0.0f;
          row_sum[r] = row_sum[r] * correction + sum;
          row_max[r] = m;
          if (correction != 1.0f) {
            float* a = acc + r * hd;
            for (int i = 0; i < hd; ++i) a[i] *= correction;
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), hd,
                    static_cast<int>(nk), 1.0f, scores, static_cast<int>(kKeyBlock), vtile, hd,
                    1.0f, acc, hd);
      }
      for (int hl = 0; hl < group; ++hl) {
        const int h = g * group + hl;
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t r = hl * nt + t;
          const float inv = 1.0f / row_sum[r];
          const float* a = acc + r * hd;
          float* dst = out + ((t0 + t) * n_head + h) * hd;
          for (int i = 0; i < hd; ++i) dst[i] = a[i] * inv;
        }
      }
    }
  });
}

}  // namespace qwen::ops

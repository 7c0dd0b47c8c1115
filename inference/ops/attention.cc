#include "inference/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "inference/ops/basic.h"
#include "inference/ops/vec.h"
#include "inference/ops/vec_math.h"
#include "inference/quant/kernels.h"

namespace qwen::ops {
namespace {

constexpr int64_t kQueryBlock = 16;  // tokens per work item
// With more rows than this in a work item, each K and V tile is converted to float once for all
// of them; with fewer (decode), the kernels read F16 as stored. Same bits either way.
constexpr int kConvertMinRows = 8;

// Copies `n` cached rows of one head starting at `pos` into float rows (exact).
void LoadRows(const KvView& kv, const void* base, int head, int64_t pos, int64_t n, float* out) {
  const uint8_t* src = static_cast<const uint8_t*>(base) + kv.offset(head, pos);
  const int64_t count = n * kv.head_dim;
  if (kv.f16) {
    quant::Kernels().dequantize[static_cast<int>(quant::GgmlType::kF16)](src, out, count);
  } else {
    std::memcpy(out, src, count * sizeof(float));
  }
}

// The largest of m and s[0..n): eight running maxima, so that the comparisons do not wait on
// each other (the maximum is the same value in any order).
float TileMax(const float* s, int64_t n, float m) {
  float p[8] = {m, m, m, m, m, m, m, m};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) p[l] = std::max(p[l], s[j + l]);
  }
  for (; j < n; ++j) p[0] = std::max(p[0], s[j]);
  for (int l = 1; l < 8; ++l) p[0] = std::max(p[0], p[l]);
  return p[0];
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
  const VecKernels& vec = Vec();

  ctx.pool().ParallelFor(n_items, 1, [&](int64_t begin, int64_t end, int thread) {
    for (int64_t item = begin; item < end; ++item) {
      const int g = static_cast<int>(item % kv.n_head_kv);
      const int64_t t0 = (item / kv.n_head_kv) * kQueryBlock;
      const int64_t nt = std::min(kQueryBlock, n_tokens - t0);
      // Rows of the stacked queries: (token, head in group), token-major, so that the heads
      // sharing this KV head meet each key tile together and rows of one token see the same
      // keys.
      const int rows = static_cast<int>(group * nt);
      float* qs = ctx.ThreadScratch(thread, 0, static_cast<size_t>(rows) * hd);
      float* acc = ctx.ThreadScratch(thread, 1, static_cast<size_t>(rows) * hd);
      float* scores = ctx.ThreadScratch(thread, 2, static_cast<size_t>(rows) * kAttentionKeyTile);
      float* stats = ctx.ThreadScratch(thread, 3, 5 * static_cast<size_t>(rows));
      int64_t* visible = reinterpret_cast<int64_t*>(stats);  // keys of the tile each row sees
      float* row_max = stats + 2 * rows;
      float* row_sum = stats + 3 * rows;
      float* rescale = stats + 4 * rows;  // the softmax correction of each row's acc
      const bool convert = kv.f16 && rows > kConvertMinRows;
      float* ktile = nullptr;
      float* vtile = nullptr;
      if (convert) {
        ktile = ctx.ThreadScratch(thread, 4, kAttentionKeyTile * hd);
        vtile = ctx.ThreadScratch(thread, 5, kAttentionKeyTile * hd);
      }
      for (int64_t t = 0; t < nt; ++t) {
        for (int hl = 0; hl < group; ++hl) {
          const float* src = q + ((t0 + t) * n_head + g * group + hl) * hd;
          float* dst = qs + (t * group + hl) * hd;
          for (int i = 0; i < hd; ++i) dst[i] = src[i] * scale;
        }
      }
      std::fill(acc, acc + static_cast<size_t>(rows) * hd, 0.0f);
      std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
      std::fill(row_sum, row_sum + rows, 0.0f);

      const int64_t last_visible = pos0 + t0 + nt - 1;  // the block's last token sees this far
      for (int64_t k0 = 0; k0 <= last_visible; k0 += kAttentionKeyTile) {
        const int64_t nk = std::min(kAttentionKeyTile, last_visible + 1 - k0);
        const void* kt;
        const void* vt;
        bool f16 = kv.f16;
        if (convert) {
          LoadRows(kv, kv.k, g, k0, nk, ktile);
          LoadRows(kv, kv.v, g, k0, nk, vtile);
          kt = ktile;
          vt = vtile;
          f16 = false;
        } else {
          kt = static_cast<const uint8_t*>(kv.k) + kv.offset(g, k0);
          vt = static_cast<const uint8_t*>(kv.v) + kv.offset(g, k0);
        }
        vec.attn_scores(qs, hd, rows, kt, f16, hd, nk, hd, scores, kAttentionKeyTile);
        for (int r = 0; r < rows; ++r) {
          const int64_t pos = pos0 + t0 + r / group;
          const int64_t n_vis = std::clamp<int64_t>(pos - k0 + 1, 0, nk);
          visible[r] = n_vis;
          rescale[r] = 1.0f;
          if (n_vis == 0) continue;
          float* s = scores + static_cast<int64_t>(r) * kAttentionKeyTile;
          const float old_max = row_max[r];
          const float m = TileMax(s, n_vis, old_max);
          // Tile 0 is every query's first: nothing to correct yet. The accumulator's correction
          // is applied by attn_accumulate as it loads the row.
          if (k0 > 0) {
            const float correction = internal::ExpRef(old_max - m);
            if (correction != 1.0f) {
              rescale[r] = correction;
              row_sum[r] = row_sum[r] * correction;
            }
          }
          row_max[r] = m;
          row_sum[r] = row_sum[r] + vec.exp_sub_sum(s, m, n_vis);
        }
        VecKernels::AttnValues values;
        values.p = scores;
        values.p_stride = kAttentionKeyTile;
        values.n_keys = visible;
        values.rescale = rescale;
        values.n_rows = rows;
        values.v = vt;
        values.v_f16 = f16;
        values.v_stride = hd;
        values.hd = hd;
        values.acc = acc;
        values.acc_stride = hd;
        vec.attn_accumulate(values);
      }
      for (int64_t t = 0; t < nt; ++t) {
        for (int hl = 0; hl < group; ++hl) {
          const int64_t r = t * group + hl;
          const float inv = 1.0f / row_sum[r];
          const float* a = acc + r * hd;
          float* dst = out + ((t0 + t) * n_head + g * group + hl) * hd;
          for (int i = 0; i < hd; ++i) dst[i] = a[i] * inv;
        }
      }
    }
  });
}

}  // namespace qwen::ops

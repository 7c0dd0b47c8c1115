// Cost of causal attention over an F16 KV cache in Qwen3.5-4B's shape (16 query heads, 4 KV
// heads, head_dim 256), one thread, per layer:
//   attention/prefill/tokens:<n>      n prompt tokens from position 0 (a prompt's layer)
//   attention/decode/context:<n>      one token after n cached ones
//   openblas/...                      the same with the former OpenBLAS sgemm version (kept here
//                                     only, as the yardstick)
// The new version runs the kernels of the process's level: run with QWEN_ISA=avx2 for AVX2.
// Rates are per second of process CPU time (the machine may be shared).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "inference/common/cpu_features.h"
#include "inference/common/fp16.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/attention.h"
#include "inference/ops/basic.h"
#include "inference/ops/compute.h"
#include "inference/ops/matmul.h"
#include "inference/ops/vec.h"
#include "inference/quant/kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace qwen::ops {
namespace {

// The former OpenBLAS versions run single-threaded, as the engine ran them inside its pool.
void InitBlas() { openblas_set_num_threads(1); }

constexpr int kHeads = 16, kKvHeads = 4, kHd = 256;

constexpr int64_t kOldQueryBlock = 32;  // tokens per work item
constexpr int64_t kOldKeyBlock = 256;   // cached positions per tile

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

// The former CausalAttention, verbatim (sgemm per query block and key tile).
void OpenBlasAttention(ComputeContext& ctx, const float* q, int64_t n_tokens, int n_head,
                       const KvView& kv, int64_t pos0, float* out) {
  const int hd = kv.head_dim;
  const int group = n_head / kv.n_head_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t n_qblocks = (n_tokens + kOldQueryBlock - 1) / kOldQueryBlock;
  const int64_t n_items = n_qblocks * kv.n_head_kv;

  ctx.pool().ParallelFor(n_items, 1, [&](int64_t begin, int64_t end, int thread) {
    for (int64_t item = begin; item < end; ++item) {
      const int g = static_cast<int>(item % kv.n_head_kv);
      const int64_t t0 = (item / kv.n_head_kv) * kOldQueryBlock;
      const int64_t nt = std::min(kOldQueryBlock, n_tokens - t0);
      // Rows of the stacked query matrix: (head in group, token), head-major, so the heads that
      // share this KV head are multiplied with each key tile at once.
      const int64_t rows = group * nt;
      float* qs = ctx.ThreadScratch(thread, 0, rows * hd);                // [rows, hd]
      float* acc = ctx.ThreadScratch(thread, 1, rows * hd);               // [rows, hd]
      float* scores = ctx.ThreadScratch(thread, 2, rows * kOldKeyBlock);  // [rows, kOldKeyBlock]
      float* ktile = ctx.ThreadScratch(thread, 3, kOldKeyBlock * hd);
      float* vtile = ctx.ThreadScratch(thread, 4, kOldKeyBlock * hd);
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
      for (int64_t k0 = 0; k0 <= last_visible; k0 += kOldKeyBlock) {
        const int64_t nk = std::min(kOldKeyBlock, last_visible + 1 - k0);
        LoadRows(kv, kv.k, g, k0, nk, ktile);
        LoadRows(kv, kv.v, g, k0, nk, vtile);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                    static_cast<int>(nk), hd, 1.0f, qs, hd, ktile, hd, 0.0f, scores,
                    static_cast<int>(kOldKeyBlock));
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = r % nt;
          const int64_t limit = pos0 + t0 + t - k0;  // last visible key index within the tile
          float* s = scores + r * kOldKeyBlock;
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
                    static_cast<int>(nk), 1.0f, scores, static_cast<int>(kOldKeyBlock), vtile, hd,
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

struct Setup {
  std::vector<uint16_t> k, v;
  std::vector<float> q, out;
  KvView kv;
};

Setup MakeSetup(int64_t n_ctx, int64_t n_tokens) {
  Setup s;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  s.k.resize(kKvHeads * n_ctx * kHd);
  s.v.resize(s.k.size());
  for (auto& x : s.k) x = Fp32ToFp16(normal(rng));
  for (auto& x : s.v) x = Fp32ToFp16(normal(rng));
  s.q.resize(n_tokens * kHeads * kHd);
  for (float& x : s.q) x = normal(rng);
  s.out.resize(s.q.size());
  s.kv.k = s.k.data();
  s.kv.v = s.v.data();
  s.kv.f16 = true;
  s.kv.capacity = n_ctx;
  s.kv.n_head_kv = kKvHeads;
  s.kv.head_dim = kHd;
  return s;
}

template <bool kOld>
void BM_Prefill(benchmark::State& state) {
  InitBlas();
  const int64_t n = state.range(0);
  Setup s = MakeSetup(n, n);
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (auto _ : state) {
    if (kOld) {
      OpenBlasAttention(ctx, s.q.data(), n, kHeads, s.kv, 0, s.out.data());
    } else {
      CausalAttention(ctx, s.q.data(), n, kHeads, s.kv, 0, s.out.data());
    }
    benchmark::DoNotOptimize(s.out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <bool kOld>
void BM_Decode(benchmark::State& state) {
  InitBlas();
  const int64_t n = state.range(0);
  Setup s = MakeSetup(n + 1, 1);
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (auto _ : state) {
    if (kOld) {
      OpenBlasAttention(ctx, s.q.data(), 1, kHeads, s.kv, n, s.out.data());
    } else {
      CausalAttention(ctx, s.q.data(), 1, kHeads, s.kv, n, s.out.data());
    }
    benchmark::DoNotOptimize(s.out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void Register() {
  const std::string level(IsaName(ActiveIsa()));
  for (bool old : {false, true}) {
    const std::string name = old ? "openblas" : "attention/" + level;
    benchmark::RegisterBenchmark((name + "/prefill").c_str(),
                                 old ? BM_Prefill<true> : BM_Prefill<false>)
        ->ArgName("tokens")
        ->Arg(64)
        ->Arg(512)
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((name + "/decode").c_str(),
                                 old ? BM_Decode<true> : BM_Decode<false>)
        ->ArgName("context")
        ->Arg(512)
        ->Arg(4096)
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace qwen::ops

int main(int argc, char** argv) {
  qwen::ops::Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

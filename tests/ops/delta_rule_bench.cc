// Cost of the gated delta rule of one Qwen3.5-4B delta-net layer (32 value heads, 16 key heads,
// d = 128), one thread, per call of n tokens:
//   delta_rule/<isa>/tokens:<n>   VecKernels::delta_rule, token by token (what the model runs)
//   chunked/tokens:<n>            the chunked WY form the model used for prompts before (kept
//                                 here only, as the yardstick): 64-token chunks, OpenBLAS sgemm
// Times are per layer; a 512-token prompt of the 4B model runs 24 such layers. Rates are per
// second of the benchmark thread's CPU time (the machine may be shared). The chunked form's
// sgemm picks its own kernels: run with OPENBLAS_CORETYPE=Haswell to see it on AVX2 kernels.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "inference/common/cpu_features.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/compute.h"
#include "inference/ops/delta_net.h"
#include "inference/ops/matmul.h"
#include "inference/ops/vec.h"

extern "C" void openblas_set_num_threads(int);

namespace qwen::ops {
namespace {

// The former OpenBLAS versions run single-threaded, as the engine ran them inside its pool.
void InitBlas() { openblas_set_num_threads(1); }

constexpr int kNk = 16, kNv = 32, kD = 128;

int KeyHead(const DeltaRuleArgs& a, int j) { return a.v_tiled ? j % a.n_k : j / (a.n_v / a.n_k); }

// The former GatedDeltaRuleChunked, verbatim. Within a chunk of L tokens, with G_t the inclusive
// cumulative sum of g from the chunk start and S0 the state before the chunk:
//   S_t   = e^{G_t} S0 + sum_{s<=t} e^{G_t - G_s} k_s delta_sᵀ
//   delta = (I + A)^{-1} (B V - B Γ K S0),  A[t][s] = beta_t e^{G_t - G_s} (k_t·k_s) for s < t
//   O     = Γ Q S0 + (M ∘ Q Kᵀ) Δ,          M[t][s] = e^{G_t - G_s} for s <= t
//   S_L   = e^{G_L} S0 + Kᵀ diag(e^{G_L - G_s}) Δ
void GatedDeltaRuleChunked(ComputeContext& ctx, const DeltaRuleArgs& a, int chunk) {
  const int d = a.d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  ctx.pool().ParallelFor(a.n_v, 1, [&](int64_t j0, int64_t j1, int thread) {
    const int64_t L = chunk;
    float* Kc = ctx.ThreadScratch(thread, 0, 3 * L * d);  // [L, d] keys, queries, values
    float* Qc = Kc + L * d;
    float* Vc = Qc + L * d;
    float* W = ctx.ThreadScratch(thread, 1, 2 * L * d);  // [L, d] then Δ
    float* U = W + L * d;
    float* KK = ctx.ThreadScratch(thread, 2, 2 * L * L);  // [L, L] A, then Q Kᵀ masked
    float* QK = KK + L * L;
    float* G = ctx.ThreadScratch(thread, 3, 2 * L);
    float* beta = G + L;
    float* O = ctx.ThreadScratch(thread, 4, L * d);
    for (int64_t j = j0; j < j1; ++j) {
      const int i = KeyHead(a, static_cast<int>(j));
      float* S = a.state + j * d * d;
      for (int64_t c0 = 0; c0 < a.n_tokens; c0 += L) {
        const int64_t n = std::min<int64_t>(L, a.n_tokens - c0);
        float cum = 0;
        for (int64_t t = 0; t < n; ++t) {
          const int64_t row = c0 + t;
          std::memcpy(Kc + t * d, a.k + row * a.row_stride + i * d, d * sizeof(float));
          std::memcpy(Qc + t * d, a.q + row * a.row_stride + i * d, d * sizeof(float));
          std::memcpy(Vc + t * d, a.v + row * a.row_stride + j * d, d * sizeof(float));
          cum += a.g[row * a.n_v + j];
          G[t] = cum;
          beta[t] = a.beta[row * a.n_v + j];
        }
        const int ni = static_cast<int>(n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, ni, d, 1.0f, Kc, d, Kc, d, 0.0f,
                    KK, ni);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, ni, d, 1.0f, Qc, d, Kc, d, 0.0f,
                    QK, ni);
        for (int64_t t = 0; t < n; ++t) {
          const float eg = std::exp(G[t]);
          for (int c = 0; c < d; ++c) {
            U[t * d + c] = beta[t] * Vc[t * d + c];
            W[t * d + c] = beta[t] * eg * Kc[t * d + c];
          }
        }
        for (int64_t t = 1; t < n; ++t) {
          for (int64_t s = 0; s < t; ++s) {
            const float coef = beta[t] * std::exp(G[t] - G[s]) * KK[t * n + s];
            if (coef == 0.0f) continue;
            const float* Us = U + s * d;
            const float* Ws = W + s * d;
            float* Ut = U + t * d;
            float* Wt = W + t * d;
            for (int c = 0; c < d; ++c) {
              Ut[c] -= coef * Us[c];
              Wt[c] -= coef * Ws[c];
            }
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, d, d, -1.0f, W, d, S, d, 1.0f, U,
                    d);
        float* Delta = U;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, d, d, 1.0f, Qc, d, S, d, 0.0f, O,
                    d);
        for (int64_t t = 0; t < n; ++t) {
          const float eg = std::exp(G[t]);
          for (int c = 0; c < d; ++c) O[t * d + c] *= eg;
          for (int64_t s = 0; s < n; ++s) {
            QK[t * n + s] = s <= t ? QK[t * n + s] * std::exp(G[t] - G[s]) : 0.0f;
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, d, ni, 1.0f, QK, ni, Delta, d,
                    1.0f, O, d);
        for (int64_t t = 0; t < n; ++t) {
          float* o = a.out + ((c0 + t) * a.n_v + j) * d;
          for (int c = 0; c < d; ++c) o[c] = O[t * d + c] * scale;
        }
        const float g_last = G[n - 1];
        for (int64_t s = 0; s < n; ++s) {
          const float w = std::exp(g_last - G[s]);
          for (int c = 0; c < d; ++c) Delta[s * d + c] *= w;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, ni, 1.0f, Kc, d, Delta, d,
                    std::exp(g_last), S, d);
      }
    }
  });
}

struct Layer {
  std::vector<float> qkv, g, beta, state, out;
  DeltaRuleArgs args;
};

Layer MakeLayer(int64_t n) {
  Layer l;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const int64_t width = int64_t{2 * kNk + kNv} * kD;
  l.qkv.resize(n * width);
  for (float& x : l.qkv) x = normal(rng);
  for (int64_t t = 0; t < n; ++t) {  // unit q and k heads
    for (int h = 0; h < 2 * kNk; ++h) {
      float* row = l.qkv.data() + t * width + h * kD;
      double ss = 0;
      for (int i = 0; i < kD; ++i) ss += double(row[i]) * row[i];
      for (int i = 0; i < kD; ++i) row[i] = static_cast<float>(row[i] / std::sqrt(ss));
    }
  }
  l.g.resize(n * kNv);
  l.beta.resize(n * kNv);
  for (float& x : l.g) x = -unit(rng);
  for (float& x : l.beta) x = unit(rng);
  l.state.assign(int64_t{kNv} * kD * kD, 0.0f);
  for (float& x : l.state) x = 0.05f * normal(rng);
  l.out.resize(n * kNv * kD);
  DeltaRuleArgs& a = l.args;
  a.q = l.qkv.data();
  a.k = a.q + kNk * kD;
  a.v = a.q + 2 * kNk * kD;
  a.row_stride = width;
  a.g = l.g.data();
  a.beta = l.beta.data();
  a.n_tokens = n;
  a.n_k = kNk;
  a.n_v = kNv;
  a.d = kD;
  a.v_tiled = true;
  a.state = l.state.data();
  a.out = l.out.data();
  return l;
}

// Time per iteration is per layer; items are tokens.
void Report(benchmark::State& state, int64_t n) { state.SetItemsProcessed(state.iterations() * n); }

void BM_DeltaRule(benchmark::State& state, Isa isa) {
  if (static_cast<int>(BestIsa()) < static_cast<int>(isa)) {
    state.SkipWithError("this CPU lacks the level");
    return;
  }
  const int64_t n = state.range(0);
  Layer l = MakeLayer(n);
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  const VecKernels& vec = VecKernelsFor(isa);
  for (auto _ : state) {
    GatedDeltaRuleRecurrent(ctx, vec, l.args);
    benchmark::DoNotOptimize(l.out.data());
    benchmark::ClobberMemory();
  }
  Report(state, n);
}

void BM_Chunked(benchmark::State& state) {
  InitBlas();
  const int64_t n = state.range(0);
  Layer l = MakeLayer(n);
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (auto _ : state) {
    GatedDeltaRuleChunked(ctx, l.args, 64);
    benchmark::DoNotOptimize(l.out.data());
    benchmark::ClobberMemory();
  }
  Report(state, n);
}

void Register() {
  for (Isa isa : AllIsas()) {
    if (isa == Isa::kScalar) continue;
#if defined(__x86_64__)
    if (isa == Isa::kAvx512Gfni) continue;  // the AVX-512 vector ops
#endif
    benchmark::RegisterBenchmark(("delta_rule/" + std::string(IsaName(isa))).c_str(), BM_DeltaRule,
                                 isa)
        ->ArgName("tokens")
        ->Arg(1)
        ->Arg(64)
        ->Arg(512)
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("delta_rule/scalar", BM_DeltaRule, Isa::kScalar)
      ->ArgName("tokens")
      ->Arg(1)
      ->Arg(64)
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("chunked", BM_Chunked)
      ->ArgName("tokens")
      ->Arg(1)
      ->Arg(64)
      ->Arg(512)
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMillisecond);
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

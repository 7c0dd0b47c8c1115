#include "inference/ops/delta_net.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "inference/ops/basic.h"
#include "inference/ops/vec.h"

namespace qwen::ops {
namespace {

int KeyHead(const DeltaRuleArgs& a, int j) { return a.v_tiled ? j % a.n_k : j / (a.n_v / a.n_k); }

}  // namespace

void CausalConv1dSilu(ComputeContext& ctx, const float* x, int64_t n_tokens, int64_t channels,
                      const float* w, int kernel, float* state, float* out) {
  const int hist = kernel - 1;
  // Channels are independent: split them over the threads in cache-friendly spans.
  ctx.pool().ParallelFor(channels, 512, [&](int64_t c0, int64_t c1, int) {
    const int64_t span = c1 - c0;
    for (int64_t t = 0; t < n_tokens; ++t) {
      float* o = out + t * channels + c0;
      for (int64_t c = 0; c < span; ++c) o[c] = 0.0f;
      for (int j = 0; j < kernel; ++j) {
        // Window position j is input row t - hist + j: from the state when negative.
        const int64_t src = t - hist + j;
        const float* in = src < 0 ? state + (hist + src) * channels + c0 : x + src * channels + c0;
        const float* wj = w + j * channels + c0;
        for (int64_t c = 0; c < span; ++c) o[c] += wj[c] * in[c];
      }
      Vec().silu(o, span);
    }
    // New state: the last `hist` rows of (state ++ x).
    for (int r = 0; r < hist; ++r) {
      const int64_t src = n_tokens - hist + r;  // row index into x, negative means old state
      float* dst = state + r * channels + c0;
      const float* from = src < 0 ? state + (hist + src) * channels + c0 : x + src * channels + c0;
      if (from != dst) std::memmove(dst, from, span * sizeof(float));
    }
  });
}

void GatedDeltaRuleRecurrent(ComputeContext& ctx, const DeltaRuleArgs& a) {
  const int d = a.d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const VecKernels& vec = Vec();
  ctx.pool().ParallelFor(a.n_v, 1, [&](int64_t j0, int64_t j1, int) {
    for (int64_t j = j0; j < j1; ++j) {
      const int i = KeyHead(a, static_cast<int>(j));
      float* S = a.state + j * d * d;  // S[key][value]
      for (int64_t t = 0; t < a.n_tokens; ++t) {
        vec.delta_step(S, a.k + t * a.row_stride + i * d, a.q + t * a.row_stride + i * d,
                       a.v + t * a.row_stride + j * d, std::exp(a.g[t * a.n_v + j]),
                       a.beta[t * a.n_v + j], scale, d, a.out + (t * a.n_v + j) * d);
      }
    }
  });
}

// Chunked form. Within a chunk of L tokens, with G_t the inclusive cumulative sum of g from the
// chunk start and S0 the state before the chunk:
//   S_t   = e^{G_t} S0 + sum_{s<=t} e^{G_t - G_s} k_s delta_sᵀ
//   delta = (I + A)^{-1} (B V - B Γ K S0),  A[t][s] = beta_t e^{G_t - G_s} (k_t·k_s) for s < t
//   O     = Γ Q S0 + (M ∘ Q Kᵀ) Δ,          M[t][s] = e^{G_t - G_s} for s <= t
//   S_L   = e^{G_L} S0 + Kᵀ diag(e^{G_L - G_s}) Δ
// Every exponent is a difference G_t - G_s <= 0, so nothing overflows however strong the decay.
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
        // KK = K Kᵀ, QK = Q Kᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, ni, d, 1.0f, Kc, d, Kc, d, 0.0f,
                    KK, ni);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, ni, d, 1.0f, Qc, d, Kc, d, 0.0f,
                    QK, ni);
        // Right-hand sides: U = B V, W = B Γ K.
        for (int64_t t = 0; t < n; ++t) {
          const float eg = std::exp(G[t]);
          for (int c = 0; c < d; ++c) {
            U[t * d + c] = beta[t] * Vc[t * d + c];
            W[t * d + c] = beta[t] * eg * Kc[t * d + c];
          }
        }
        // Forward substitution with the unit lower-triangular (I + A).
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
        // Δ = U - W S0, stored in U.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, d, d, -1.0f, W, d, S, d, 1.0f, U,
                    d);
        float* Delta = U;
        // O = Γ Q S0 + (M ∘ Q Kᵀ) Δ
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
        // S = e^{G_last} S + Kᵀ diag(e^{G_last - G_s}) Δ
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

}  // namespace qwen::ops

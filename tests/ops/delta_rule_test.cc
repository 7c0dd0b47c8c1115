// The gated delta rule over a layer's heads: token by token, the same bits however the tokens
// are split between calls and however many threads share the heads, and the reference formula.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/basic.h"
#include "inference/ops/delta_net.h"

namespace qwen::ops {
namespace {

struct Inputs {
  int n_k, n_v, d;
  int64_t n;
  std::vector<float> qkv;  // [n, (2 n_k + n_v) d]
  std::vector<float> g, beta;
  std::vector<float> state;
};

Inputs Random(int n_k, int n_v, int d, int64_t n, float decay_scale, uint32_t seed) {
  Inputs in;
  in.n_k = n_k;
  in.n_v = n_v;
  in.d = d;
  in.n = n;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const int64_t width = int64_t{2 * n_k + n_v} * d;
  in.qkv.resize(n * width);
  for (float& x : in.qkv) x = normal(rng);
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (int64_t t = 0; t < n; ++t) L2Norm(ctx, in.qkv.data() + t * width, 2 * n_k, d, 1e-6f);
  in.g.resize(n * n_v);
  in.beta.resize(n * n_v);
  for (float& x : in.g) x = -decay_scale * unit(rng);
  for (float& x : in.beta) x = unit(rng);
  in.state.resize(int64_t{n_v} * d * d);
  for (float& x : in.state) x = 0.1f * normal(rng);
  return in;
}

// Tokens [t0, t0 + n) of the inputs.
DeltaRuleArgs Args(Inputs& in, std::vector<float>& state, std::vector<float>& out, bool tiled,
                   int64_t t0 = 0, int64_t n = -1) {
  if (n < 0) n = in.n;
  const int64_t width = int64_t{2 * in.n_k + in.n_v} * in.d;
  out.resize(in.n * in.n_v * in.d);
  DeltaRuleArgs a;
  a.q = in.qkv.data() + t0 * width;
  a.k = a.q + int64_t{in.n_k} * in.d;
  a.v = a.q + int64_t{2 * in.n_k} * in.d;
  a.row_stride = width;
  a.g = in.g.data() + t0 * in.n_v;
  a.beta = in.beta.data() + t0 * in.n_v;
  a.n_tokens = n;
  a.n_k = in.n_k;
  a.n_v = in.n_v;
  a.d = in.d;
  a.v_tiled = tiled;
  a.state = state.data();
  a.out = out.data() + t0 * in.n_v * in.d;
  return a;
}

double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Case {
  int n_k, n_v, d;
  int64_t n;
  float decay;
  bool tiled;
};

class DeltaRule : public ::testing::TestWithParam<Case> {};

// A prompt at once, in pieces of 1, 7 and 64 tokens, and on one or two threads: the same bits.
TEST_P(DeltaRule, SplittingTheTokensChangesNoBit) {
  const Case c = GetParam();
  Inputs in = Random(c.n_k, c.n_v, c.d, c.n, c.decay, 42 + static_cast<uint32_t>(c.n));
  ThreadPool pool2(2), pool1(1);
  ComputeContext ctx2(&pool2, MathMode::kFast), ctx1(&pool1, MathMode::kFast);
  std::vector<float> s_whole = in.state, o_whole;
  GatedDeltaRuleRecurrent(ctx2, Args(in, s_whole, o_whole, c.tiled));
  for (int64_t piece : {int64_t{1}, int64_t{7}, int64_t{64}}) {
    for (ComputeContext* ctx : {&ctx1, &ctx2}) {
      std::vector<float> s = in.state, o;
      for (int64_t t0 = 0; t0 < in.n; t0 += piece) {
        GatedDeltaRuleRecurrent(*ctx, Args(in, s, o, c.tiled, t0, std::min(piece, in.n - t0)));
      }
      ASSERT_EQ(0, std::memcmp(o.data(), o_whole.data(), o.size() * sizeof(float)))
          << "pieces of " << piece << ", " << ctx->n_threads() << " threads";
      ASSERT_EQ(0, std::memcmp(s.data(), s_whole.data(), s.size() * sizeof(float)))
          << "pieces of " << piece;
    }
  }
}

// Against a float64 transcription of the recurrence.
TEST_P(DeltaRule, MatchesTheFormula) {
  const Case c = GetParam();
  Inputs in = Random(c.n_k, c.n_v, c.d, c.n, c.decay, 7 + static_cast<uint32_t>(c.n));
  ThreadPool pool(2);
  ComputeContext ctx(&pool, MathMode::kFast);
  std::vector<float> s = in.state, o;
  GatedDeltaRuleRecurrent(ctx, Args(in, s, o, c.tiled));
  const int d = c.d, nv = c.n_v, nk = c.n_k;
  const int64_t width = int64_t{2 * nk + nv} * d;
  std::vector<double> S(in.state.begin(), in.state.end());
  std::vector<float> want(o.size());
  for (int64_t t = 0; t < in.n; ++t) {
    for (int j = 0; j < nv; ++j) {
      const int i = c.tiled ? j % nk : j / (nv / nk);
      const float* q = in.qkv.data() + t * width + i * d;
      const float* k = in.qkv.data() + t * width + (nk + i) * d;
      const float* v = in.qkv.data() + t * width + (2 * nk + j) * d;
      double* Sj = S.data() + int64_t{j} * d * d;
      const double a = std::exp(double(in.g[t * nv + j]));
      for (int e = 0; e < d * d; ++e) Sj[e] *= a;
      for (int col = 0; col < d; ++col) {
        double kv = 0;
        for (int r = 0; r < d; ++r) kv += Sj[r * d + col] * k[r];
        const double delta = (v[col] - kv) * in.beta[t * nv + j];
        for (int r = 0; r < d; ++r) Sj[r * d + col] += k[r] * delta;
      }
      for (int col = 0; col < d; ++col) {
        double acc = 0;
        for (int r = 0; r < d; ++r) acc += Sj[r * d + col] * q[r];
        want[(t * nv + j) * d + col] = static_cast<float>(acc / std::sqrt(double(d)));
      }
    }
  }
  EXPECT_LT(RelErr(o, want), 1e-5);
  std::vector<float> s_want(S.begin(), S.end());
  EXPECT_LT(RelErr(s, s_want), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DeltaRule,
    ::testing::Values(Case{2, 4, 128, 1, 1.0f, true},     // a single token
                      Case{2, 4, 128, 130, 1.0f, true},   // past a 128-token group
                      Case{2, 4, 128, 130, 1.0f, false},  // grouped head mapping
                      Case{1, 3, 32, 100, 8.0f, true},    // strong decay
                      Case{4, 8, 64, 70, 0.01f, true},    // almost no decay
                      Case{1, 2, 37, 75, 2.0f, true}));   // a width no vector divides

// The mapping of value heads to key heads matters: tiled and grouped differ when n_k != n_v.
TEST(DeltaRuleHeads, HeadMappingChangesTheResult) {
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  Inputs in = Random(2, 4, 32, 10, 1.0f, 7);
  std::vector<float> s1 = in.state, s2 = in.state, o1, o2;
  GatedDeltaRuleRecurrent(ctx, Args(in, s1, o1, true));
  GatedDeltaRuleRecurrent(ctx, Args(in, s2, o2, false));
  EXPECT_GT(RelErr(o1, o2), 0.1);
}

}  // namespace
}  // namespace qwen::ops

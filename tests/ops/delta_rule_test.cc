// The chunked gated delta rule equals the token-by-token recurrence.
#include <cmath>
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

DeltaRuleArgs Args(Inputs& in, std::vector<float>& state, std::vector<float>& out, bool tiled) {
  const int64_t width = int64_t{2 * in.n_k + in.n_v} * in.d;
  out.assign(in.n * in.n_v * in.d, 0.0f);
  DeltaRuleArgs a;
  a.q = in.qkv.data();
  a.k = in.qkv.data() + int64_t{in.n_k} * in.d;
  a.v = in.qkv.data() + int64_t{2 * in.n_k} * in.d;
  a.row_stride = width;
  a.g = in.g.data();
  a.beta = in.beta.data();
  a.n_tokens = in.n;
  a.n_k = in.n_k;
  a.n_v = in.n_v;
  a.d = in.d;
  a.v_tiled = tiled;
  a.state = state.data();
  a.out = out.data();
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
  int chunk;
  float decay;
  bool tiled;
};

class DeltaRule : public ::testing::TestWithParam<Case> {};

TEST_P(DeltaRule, ChunkedEqualsRecurrent) {
  const Case c = GetParam();
  ThreadPool pool(2);
  ComputeContext ctx(&pool, MathMode::kFast);
  Inputs in = Random(c.n_k, c.n_v, c.d, c.n, c.decay, 42 + c.n);
  std::vector<float> s_rec = in.state, s_chunk = in.state, o_rec, o_chunk;
  GatedDeltaRuleRecurrent(ctx, Args(in, s_rec, o_rec, c.tiled));
  GatedDeltaRuleChunked(ctx, Args(in, s_chunk, o_chunk, c.tiled), c.chunk);
  EXPECT_LT(RelErr(o_chunk, o_rec), 1e-4);
  EXPECT_LT(RelErr(s_chunk, s_rec), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DeltaRule,
    ::testing::Values(Case{2, 4, 128, 1, 64, 1.0f, true},     // a single token
                      Case{2, 4, 128, 64, 64, 1.0f, true},    // exactly one chunk
                      Case{2, 4, 128, 200, 64, 1.0f, true},   // partial last chunk
                      Case{2, 4, 128, 200, 64, 1.0f, false},  // grouped head mapping
                      Case{1, 3, 32, 130, 16, 8.0f, true},    // strong decay, small chunks
                      Case{4, 8, 64, 300, 32, 0.01f, true},   // almost no decay
                      Case{2, 4, 128, 129, 7, 2.0f, true}));  // odd chunk size

// The mapping of value heads to key heads matters: tiled and grouped differ when n_k != n_v.
TEST(DeltaRule, HeadMappingChangesTheResult) {
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  Inputs in = Random(2, 4, 32, 10, 1.0f, 7);
  std::vector<float> s1 = in.state, s2 = in.state, o1, o2;
  GatedDeltaRuleRecurrent(ctx, Args(in, s1, o1, true));
  GatedDeltaRuleRecurrent(ctx, Args(in, s2, o2, false));
  EXPECT_GT(RelErr(o1, o2), 0.1);
}

// The recurrence against a direct transcription of the reference formula.
TEST(DeltaRule, RecurrentMatchesTheFormula) {
  ThreadPool pool(1);
  ComputeContext ctx(&pool, MathMode::kFast);
  Inputs in = Random(1, 2, 8, 5, 1.0f, 3);
  std::vector<float> s = in.state, o;
  std::vector<double> S(in.state.begin(), in.state.end());
  GatedDeltaRuleRecurrent(ctx, Args(in, s, o, true));
  const int d = 8, nv = 2;
  const int64_t width = (2 + nv) * d;
  for (int64_t t = 0; t < in.n; ++t) {
    for (int j = 0; j < nv; ++j) {
      const float* q = in.qkv.data() + t * width;
      const float* k = q + d;
      const float* v = q + 2 * d + j * d;
      double* Sj = S.data() + j * d * d;
      const double a = std::exp(double(in.g[t * nv + j]));
      for (int i = 0; i < d * d; ++i) Sj[i] *= a;
      for (int c = 0; c < d; ++c) {
        double kv = 0;
        for (int r = 0; r < d; ++r) kv += Sj[r * d + c] * k[r];
        const double delta = (v[c] - kv) * in.beta[t * nv + j];
        for (int r = 0; r < d; ++r) Sj[r * d + c] += k[r] * delta;
      }
      for (int c = 0; c < d; ++c) {
        double acc = 0;
        for (int r = 0; r < d; ++r) acc += Sj[r * d + c] * q[r];
        EXPECT_NEAR(o[(t * nv + j) * d + c], acc / std::sqrt(double(d)), 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace qwen::ops

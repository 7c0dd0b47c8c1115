// Causal attention over the KV cache: a query's output depends on its own q and the cache up to
// its position only, the same bits whatever else the call holds, however positions are split
// between calls, on any number of threads and at every kernel level; and it is attention.
#include "inference/ops/attention.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/fp16.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/vec.h"
#include "tests/common/isa_levels.h"

namespace qwen::ops {
namespace {

using ::qwen::testing::RunAtIsa;
using ::qwen::testing::SupportedIsas;
using ::qwen::testing::WriteChildOutput;

struct Shape {
  int n_head, n_head_kv, hd;
  int64_t n;  // positions
  bool f16;
};

std::string Name(const Shape& s) {
  return absl::StrCat("h", s.n_head, "kv", s.n_head_kv, "d", s.hd, "n", s.n, s.f16 ? "f16" : "f32");
}

// A filled cache and the queries of every position.
class Cache {
 public:
  explicit Cache(const Shape& s) : s_(s) {
    std::mt19937 rng(s.hd * 131 + s.n_head);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t kv_width = int64_t{s.n_head_kv} * s.hd;
    k_.resize(s.n * kv_width);
    v_.resize(s.n * kv_width);
    q_.resize(s.n * int64_t{s.n_head} * s.hd);
    // Scores of a few units (large enough that the running maximum moves between tiles).
    for (float& x : k_) x = normal(rng);
    for (float& x : v_) x = normal(rng);
    for (float& x : q_) x = 2.0f * normal(rng);
    const size_t elem = s.f16 ? 2 : 4;
    kbuf_.resize(s.n * kv_width * elem);
    vbuf_.resize(s.n * kv_width * elem);
    view_.k = kbuf_.data();
    view_.v = vbuf_.data();
    view_.f16 = s.f16;
    view_.capacity = s.n;
    view_.n_head_kv = s.n_head_kv;
    view_.head_dim = s.hd;
    // Stored in uneven pieces, as prompt chunks and decode steps store them.
    for (int64_t p = 0; p < s.n; p += 23) {
      const int64_t m = std::min<int64_t>(23, s.n - p);
      KvStore(view_, k_.data() + p * kv_width, v_.data() + p * kv_width, p, m);
    }
  }

  // Outputs of positions [pos0, pos0 + n) computed in one call.
  void Run(ComputeContext& ctx, int64_t pos0, int64_t n, float* out) const {
    const int64_t qw = int64_t{s_.n_head} * s_.hd;
    CausalAttention(ctx, q_.data() + pos0 * qw, n, s_.n_head, view_, pos0, out + pos0 * qw);
  }

  // Every position's output, the positions split into calls at `cuts`.
  std::vector<float> RunSplit(ComputeContext& ctx, const std::vector<int64_t>& cuts) const {
    std::vector<float> out(q_.size(), 0.0f);
    int64_t p = 0;
    for (int64_t c : cuts) {
      if (c <= p || c >= s_.n) continue;  // cuts past the end do not apply to short shapes
      Run(ctx, p, c - p, out.data());
      p = c;
    }
    if (p < s_.n) Run(ctx, p, s_.n - p, out.data());
    return out;
  }

  // Float64 attention of every position, on the values as stored (F16-rounded when f16).
  std::vector<double> Reference() const {
    const Shape& s = s_;
    const int group = s.n_head / s.n_head_kv;
    std::vector<double> out(q_.size());
    auto stored = [&](const std::vector<uint8_t>& buf, int g, int64_t p, int i) -> double {
      const size_t idx = (static_cast<size_t>(g) * s.n + p) * s.hd + i;
      if (s.f16) return Fp16ToFp32(reinterpret_cast<const uint16_t*>(buf.data())[idx]);
      return reinterpret_cast<const float*>(buf.data())[idx];
    };
    for (int64_t t = 0; t < s.n; ++t) {
      for (int h = 0; h < s.n_head; ++h) {
        const int g = h / group;
        const float* q = q_.data() + (t * s.n_head + h) * s.hd;
        std::vector<double> w(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < s.hd; ++i) dot += q[i] * stored(kbuf_, g, j, i);
          w[j] = dot / std::sqrt(double(s.hd));
          mx = std::max(mx, w[j]);
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int i = 0; i < s.hd; ++i) {
          double acc = 0;
          for (int64_t j = 0; j <= t; ++j) acc += w[j] * stored(vbuf_, g, j, i);
          out[(t * s.n_head + h) * s.hd + i] = acc / sum;
        }
      }
    }
    return out;
  }

 private:
  Shape s_;
  std::vector<float> k_, v_, q_;
  std::vector<uint8_t> kbuf_, vbuf_;
  KvView view_;
};

class Attention : public ::testing::TestWithParam<Shape> {};

// One call for all positions, one call per position (decode), calls cut at odd places, on one
// and two threads: the same bits for every query.
TEST_P(Attention, QueryDependsOnlyOnItsPosition) {
  const Shape s = GetParam();
  Cache cache(s);
  ThreadPool pool1(1), pool2(2);
  ComputeContext ctx1(&pool1, MathMode::kFast), ctx2(&pool2, MathMode::kFast);
  const std::vector<float> whole = cache.RunSplit(ctx2, {});
  std::vector<int64_t> each;
  for (int64_t p = 1; p < s.n; ++p) each.push_back(p);
  const std::vector<std::vector<int64_t>> splits = {
      each, {1, 2, 3}, {7, 64, 65, 100}, {63, 64, 127, 128, 129}, {s.n / 2}};
  for (ComputeContext* ctx : {&ctx1, &ctx2}) {
    for (const auto& cuts : splits) {
      const std::vector<float> got = cache.RunSplit(*ctx, cuts);
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t w = int64_t{s.n_head} * s.hd;
        ASSERT_EQ(0, std::memcmp(got.data() + t * w, whole.data() + t * w, w * sizeof(float)))
            << "position " << t << ", " << cuts.size() << " cuts, " << ctx->n_threads()
            << " threads";
      }
    }
  }
}

TEST_P(Attention, MatchesFloat64Attention) {
  const Shape s = GetParam();
  Cache cache(s);
  ThreadPool pool(2);
  ComputeContext ctx(&pool, MathMode::kFast);
  const std::vector<float> got = cache.RunSplit(ctx, {});
  const std::vector<double> want = cache.Reference();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  EXPECT_LT(worst, 2e-5);
}

// The child of SameBitsAtEveryLevel: every shape's outputs at this process's level.
TEST(AttentionLevels, DISABLED_WriteOutputs) {
  ThreadPool pool(2);
  ComputeContext ctx(&pool, MathMode::kFast);
  for (const Shape& s : {Shape{8, 2, 256, 150, true}, Shape{3, 3, 40, 70, false}}) {
    const std::vector<float> out = Cache(s).RunSplit(ctx, {5, 6, 90});
    WriteChildOutput(
        std::string(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float)));
  }
}

TEST(AttentionLevels, SameBitsAtEveryLevel) {
  if (qwen::testing::ChildOutputPath() != nullptr) GTEST_SKIP() << "in a child";
  const std::string scalar = RunAtIsa(Isa::kScalar, "AttentionLevels.DISABLED_WriteOutputs");
  ASSERT_FALSE(scalar.empty());
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    EXPECT_TRUE(RunAtIsa(isa, "AttentionLevels.DISABLED_WriteOutputs") == scalar)
        << IsaName(isa) << " differs from scalar";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Attention,
                         ::testing::Values(Shape{8, 2, 256, 150, true},  // Qwen3.5's layout
                                           Shape{8, 2, 256, 150, false},
                                           Shape{2, 1, 256, 70, true},  // the tiny model's
                                           Shape{3, 3, 40, 140, true},  // no SIMD-wide head
                                           Shape{4, 1, 17, 66, false}),
                         [](const auto& info) { return Name(info.param); });

}  // namespace
}  // namespace qwen::ops

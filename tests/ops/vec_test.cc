// Every SIMD level of the vector kernels against the scalar reference.
#include "inference/ops/vec.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace qwen::ops {
namespace {

std::vector<float> Random(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void ExpectClose(const std::vector<float>& a, const std::vector<float>& b, float rel,
                 const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], b[i], rel * std::fabs(b[i]) + 1e-30f) << what << " at " << i;
  }
}

class VecLevels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(BestIsa()) < static_cast<int>(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << IsaName(GetParam());
    }
  }
  const VecKernels& simd() { return VecKernelsFor(GetParam()); }
  const VecKernels& ref() { return VecKernelsFor(Isa::kScalar); }
};

TEST_P(VecLevels, TableIsThatLevel) { EXPECT_EQ(simd().isa, GetParam()); }

TEST_P(VecLevels, Activations) {
  // Lengths around the vector widths, and inputs from tiny to saturating.
  for (int64_t n : {1, 7, 8, 15, 16, 17, 100, 4099}) {
    for (float scale : {0.01f, 1.0f, 30.0f}) {
      const auto g = Random(n, scale, 1 + n);
      const auto u = Random(n, 1.0f, 2 + n);
      std::vector<float> a(n), b(n);
      simd().silu_mul(g.data(), u.data(), a.data(), n);
      ref().silu_mul(g.data(), u.data(), b.data(), n);
      ExpectClose(a, b, 2e-6f, "silu_mul");
      a = g;
      b = g;
      simd().silu(a.data(), n);
      ref().silu(b.data(), n);
      ExpectClose(a, b, 2e-6f, "silu");
      a = u;
      b = u;
      simd().sigmoid_mul(g.data(), a.data(), n);
      ref().sigmoid_mul(g.data(), b.data(), n);
      ExpectClose(a, b, 2e-6f, "sigmoid_mul");
      a = g;
      b = g;
      const float max = *std::max_element(g.begin(), g.end());
      const float sa = simd().exp_sub_sum(a.data(), max, n);
      const float sb = ref().exp_sub_sum(b.data(), max, n);
      ExpectClose(a, b, 2e-6f, "exp_sub_sum values");
      EXPECT_NEAR(sa, sb, 1e-5f * sb);
    }
  }
}

TEST_P(VecLevels, ExtremeInputsStayFinite) {
  std::vector<float> x = {-1e30f, -200.0f, -88.0f, -50.0f, 0.0f, 50.0f, 88.0f, 200.0f, 1e30f};
  std::vector<float> a = x;
  simd().silu(a.data(), static_cast<int64_t>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_FALSE(std::isnan(a[i])) << x[i];
    if (x[i] >= 50.0f) {
      EXPECT_FLOAT_EQ(a[i], x[i]);
    }
    // exp is clamped at 88.7, so silu of a huge negative input is tiny rather than exactly 0.
    if (x[i] <= -88.0f) {
      EXPECT_NEAR(a[i], 0.0f, 1e-8f);
    }
  }
}

TEST_P(VecLevels, NormsAndScales) {
  for (int64_t n : {3, 16, 256, 2560, 9216}) {
    const auto x = Random(n, 3.0f, 9 + n);
    const auto w = Random(n, 1.0f, 10 + n);
    EXPECT_NEAR(simd().sum_squares(x.data(), n), ref().sum_squares(x.data(), n),
                1e-6 * ref().sum_squares(x.data(), n));
    std::vector<float> a(n), b(n);
    simd().scale_mul(x.data(), 0.37f, w.data(), a.data(), n);
    ref().scale_mul(x.data(), 0.37f, w.data(), b.data(), n);
    ExpectClose(a, b, 1e-6f, "scale_mul");
    simd().scale_mul(x.data(), 0.37f, nullptr, a.data(), n);
    ref().scale_mul(x.data(), 0.37f, nullptr, b.data(), n);
    ExpectClose(a, b, 1e-6f, "scale_mul without weight");
  }
}

TEST_P(VecLevels, DeltaStep) {
  for (int d : {16, 32, 48, 64, 128, 256}) {
    auto S1 = Random(int64_t{d} * d, 0.2f, d);
    auto S2 = S1;
    const auto k = Random(d, 0.1f, 1000 + d);
    const auto q = Random(d, 0.1f, 2000 + d);
    const auto v = Random(d, 1.0f, 3000 + d);
    std::vector<float> o1(d), o2(d);
    for (int step = 0; step < 3; ++step) {
      simd().delta_step(S1.data(), k.data(), q.data(), v.data(), 0.9f, 0.6f, 0.088f, d, o1.data());
      ref().delta_step(S2.data(), k.data(), q.data(), v.data(), 0.9f, 0.6f, 0.088f, d, o2.data());
      for (int c = 0; c < d; ++c) ASSERT_NEAR(o1[c], o2[c], 1e-5f + 1e-4f * std::fabs(o2[c]));
    }
    for (size_t i = 0; i < S1.size(); ++i)
      ASSERT_NEAR(S1[i], S2[i], 1e-5f + 1e-4f * std::fabs(S2[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, VecLevels,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

}  // namespace
}  // namespace qwen::ops

// The vector kernels: every SIMD level gives the scalar definition's bits, for every length and
// alignment; the scalar definition follows the canonical orders of vec.h and is accurate.
#include "inference/ops/vec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/fp16.h"
#include "inference/ops/vec_math.h"

namespace qwen::ops {
namespace {

std::vector<float> Random(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

uint64_t Bits(double f) {
  uint64_t b;
  std::memcpy(&b, &f, 8);
  return b;
}

// Bit-for-bit equality of n floats (any two NaNs count as equal).
::testing::AssertionResult SameBits(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (Bits(a[i]) != Bits(b[i])) {
      return ::testing::AssertionFailure()
             << "element " << i << " of " << n << ": " << a[i] << " (0x" << std::hex << Bits(a[i])
             << ") vs " << std::dec << b[i] << " (0x" << std::hex << Bits(b[i]) << ")";
    }
  }
  return ::testing::AssertionSuccess();
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

// Inputs of every size from tiny to saturating (|x| up to ~100, past Exp's clamps), some exact
// zeros and infinities.
std::vector<float> Mixed(int64_t n, uint32_t seed) {
  std::vector<float> v = Random(n, 1.0f, seed);
  std::mt19937 rng(seed * 7 + 1);
  std::uniform_int_distribution<int> kind(0, 9);
  for (float& x : v) {
    switch (kind(rng)) {
      case 0:
        x *= 1e-3f;
        break;
      case 1:
        x *= 30.0f;
        break;
      case 2:
        x *= 100.0f;
        break;
      case 3:
        x = 0.0f;
        break;
      default:
        break;
    }
  }
  if (n > 5) v[5] = std::numeric_limits<float>::infinity();
  if (n > 9) v[9] = -std::numeric_limits<float>::infinity();
  return v;
}

// Every length 1..70 at odd offsets into the buffers, so that no element's position in a vector
// is special.
TEST_P(VecLevels, ElementwiseOpsEqualScalarBitForBit) {
  for (int64_t n = 1; n <= 70; ++n) {
    for (int64_t off : {0, 1, 3, 7}) {
      const auto g = Mixed(n + off, 1 + n);
      const auto u = Random(n + off, 2.0f, 2 + n);
      std::vector<float> a(n + off + 16, 42.0f), b(n + off + 16, 42.0f);
      simd().silu_mul(g.data() + off, u.data() + off, a.data() + off, n);
      ref().silu_mul(g.data() + off, u.data() + off, b.data() + off, n);
      ASSERT_TRUE(SameBits(a.data(), b.data(), a.size())) << "silu_mul n=" << n << " off=" << off;
      std::copy(g.begin(), g.end(), a.begin());
      std::copy(g.begin(), g.end(), b.begin());
      simd().silu(a.data() + off, n);
      ref().silu(b.data() + off, n);
      ASSERT_TRUE(SameBits(a.data(), b.data(), a.size())) << "silu n=" << n << " off=" << off;
      std::copy(u.begin(), u.end(), a.begin());
      std::copy(u.begin(), u.end(), b.begin());
      simd().sigmoid_mul(g.data() + off, a.data() + off, n);
      ref().sigmoid_mul(g.data() + off, b.data() + off, n);
      ASSERT_TRUE(SameBits(a.data(), b.data(), a.size()))
          << "sigmoid_mul n=" << n << " off=" << off;
      for (const float* w : {u.data() + off, static_cast<const float*>(nullptr)}) {
        simd().scale_mul(g.data() + off, 0.37f, w, a.data() + off, n);
        ref().scale_mul(g.data() + off, 0.37f, w, b.data() + off, n);
        ASSERT_TRUE(SameBits(a.data(), b.data(), a.size())) << "scale_mul n=" << n;
      }
    }
  }
}

TEST_P(VecLevels, ReductionsEqualScalarBitForBit) {
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n <= 70; ++n) lengths.push_back(n);
  for (int64_t n : {127, 128, 129, 256, 1023, 1024, 1025, 2047, 2560, 4099, 9216}) {
    lengths.push_back(n);
  }
  for (int64_t n : lengths) {
    for (int64_t off : {0, 1, 5}) {
      const auto x = Random(n + off, 3.0f, 9 + n);
      const auto y = Random(n + off, 0.5f, 10 + n);
      const double sa = simd().sum_squares(x.data() + off, n);
      const double sb = ref().sum_squares(x.data() + off, n);
      ASSERT_EQ(Bits(sa), Bits(sb))
          << "sum_squares n=" << n << " off=" << off << ": " << sa << " vs " << sb;
      const float da = simd().dot(x.data() + off, y.data() + off, n);
      const float db = ref().dot(x.data() + off, y.data() + off, n);
      ASSERT_EQ(Bits(da), Bits(db)) << "dot n=" << n << " off=" << off;
      // Softmax-like inputs: scores below a maximum, some far below (Exp underflows to tiny).
      auto a = Random(n + off, 4.0f, 11 + n);
      for (int64_t i = 0; i < n + off; i += 7) a[i] -= 90.0f;
      auto b = a;
      const float max = n > 0 ? *std::max_element(a.begin() + off, a.end()) : 0.0f;
      const float ea = simd().exp_sub_sum(a.data() + off, max, n);
      const float eb = ref().exp_sub_sum(b.data() + off, max, n);
      ASSERT_EQ(Bits(ea), Bits(eb)) << "exp_sub_sum n=" << n << " off=" << off;
      ASSERT_TRUE(SameBits(a.data(), b.data(), a.size())) << "exp_sub_sum values n=" << n;
    }
  }
}

// A product that underflows to -0 in a lane must not become +0 at a level that pads the last
// vector with zeros: the partial sums keep their signs.
TEST_P(VecLevels, SignedZeroPartialsSurviveTails) {
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<float> a(n, -1e-30f), b(n, 1e-30f);
    const float da = simd().dot(a.data(), b.data(), n);
    const float db = ref().dot(a.data(), b.data(), n);
    ASSERT_EQ(Bits(da), Bits(db)) << n;
    // Every lane holds -0 once it has a product (a lane without one is +0).
    if (n % 16 == 0) {
      EXPECT_EQ(Bits(db), Bits(-0.0f)) << n;
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
    // Exp is clamped at 88, so silu of a huge negative input is tiny rather than exactly 0.
    if (x[i] <= -88.0f) {
      EXPECT_NEAR(a[i], 0.0f, 1e-8f);
    }
  }
  // A NaN stays NaN (and does not become a finite value through the clamps).
  float nan = std::numeric_limits<float>::quiet_NaN();
  simd().silu(&nan, 1);
  EXPECT_TRUE(std::isnan(nan));
}

// ---- The gated delta rule ------------------------------------------------------------------

struct DeltaInputs {
  int d;
  int64_t n;
  int64_t in_stride, out_stride;
  std::vector<float> kqv;  // per token: k [d], q [d], v [d], padding
  std::vector<float> decay, beta;
  std::vector<float> state;
};

DeltaInputs MakeDelta(int d, int64_t n, uint32_t seed) {
  DeltaInputs in;
  in.d = d;
  in.n = n;
  in.in_stride = 3 * d + 5;  // rows of a wider buffer, as in the model
  in.out_stride = d + 3;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  in.kqv.resize(n * in.in_stride + 8);
  for (float& x : in.kqv) x = normal(rng);
  for (int64_t t = 0; t < n; ++t) {
    for (int part = 0; part < 2; ++part) {  // k and q are L2-normalised in the model
      float* row = in.kqv.data() + t * in.in_stride + part * d;
      double ss = 0;
      for (int i = 0; i < d; ++i) ss += double(row[i]) * row[i];
      for (int i = 0; i < d; ++i) row[i] = static_cast<float>(row[i] / std::sqrt(ss));
    }
  }
  in.decay.resize(n);
  in.beta.resize(n);
  for (float& x : in.decay) x = std::exp(-2.0f * unit(rng));
  for (float& x : in.beta) x = unit(rng);
  in.state.resize(int64_t{d} * d);
  for (float& x : in.state) x = 0.1f * normal(rng);
  return in;
}

VecKernels::DeltaTokens Tokens(const DeltaInputs& in, std::vector<float>& out, int64_t t0,
                               int64_t n) {
  VecKernels::DeltaTokens t;
  t.n_tokens = n;
  t.k = in.kqv.data() + t0 * in.in_stride;
  t.q = t.k + in.d;
  t.v = t.k + 2 * in.d;
  t.in_stride = in.in_stride;
  t.decay = in.decay.data() + t0;
  t.beta = in.beta.data() + t0;
  t.gate_stride = 1;
  t.out = out.data() + t0 * in.out_stride;
  t.out_stride = in.out_stride;
  return t;
}

// All tokens in one call, and the same tokens one call each (decode): the same bits, and the
// same as the scalar definition.
TEST_P(VecLevels, DeltaRuleEqualsScalarAndSingleSteps) {
  for (int d : {128, 37, 16, 20, 48, 64, 8, 3, 72, 150, 256}) {
    for (int64_t n : {1, 2, 5, 64, 65, 150}) {
      const DeltaInputs in = MakeDelta(d, n, 100 + d + static_cast<uint32_t>(n));
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      std::vector<float> s_multi = in.state, s_single = in.state, s_ref = in.state;
      std::vector<float> o_multi(n * in.out_stride, 7.0f), o_single = o_multi, o_ref = o_multi;
      simd().delta_rule(s_multi.data(), d, scale, Tokens(in, o_multi, 0, n));
      for (int64_t t = 0; t < n; ++t) {
        simd().delta_rule(s_single.data(), d, scale, Tokens(in, o_single, t, 1));
      }
      ref().delta_rule(s_ref.data(), d, scale, Tokens(in, o_ref, 0, n));
      ASSERT_TRUE(SameBits(o_multi.data(), o_single.data(), o_multi.size()))
          << "d=" << d << " n=" << n << ": one call vs token by token";
      ASSERT_TRUE(SameBits(s_multi.data(), s_single.data(), s_multi.size())) << "d=" << d;
      ASSERT_TRUE(SameBits(o_multi.data(), o_ref.data(), o_multi.size()))
          << "d=" << d << " n=" << n << ": against scalar";
      ASSERT_TRUE(SameBits(s_multi.data(), s_ref.data(), s_multi.size())) << "d=" << d;
      // Splitting the call anywhere changes nothing either.
      std::vector<float> s_split = in.state, o_split(o_multi.size(), 7.0f);
      const int64_t cut = n / 3 + 1;
      simd().delta_rule(s_split.data(), d, scale, Tokens(in, o_split, 0, std::min(cut, n)));
      if (cut < n) simd().delta_rule(s_split.data(), d, scale, Tokens(in, o_split, cut, n - cut));
      ASSERT_TRUE(SameBits(o_multi.data(), o_split.data(), o_multi.size())) << "d=" << d;
    }
  }
}

// The definition is the delta rule: against a float64 transcription of
//   S = S decay; delta = (v - Sᵀk) beta; S = S + k deltaᵀ; o = Sᵀq scale.
TEST_P(VecLevels, DeltaRuleMatchesTheFormula) {
  for (int d : {128, 37}) {
    const int64_t n = 40;
    const DeltaInputs in = MakeDelta(d, n, 7 + d);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> s = in.state, o(n * in.out_stride);
    simd().delta_rule(s.data(), d, scale, Tokens(in, o, 0, n));
    std::vector<double> S(in.state.begin(), in.state.end());
    double max_err = 0, max_ref = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float* k = in.kqv.data() + t * in.in_stride;
      const float* q = k + d;
      const float* v = k + 2 * d;
      for (double& x : S) x *= in.decay[t];
      for (int c = 0; c < d; ++c) {
        double kv = 0;
        for (int r = 0; r < d; ++r) kv += S[r * d + c] * k[r];
        const double delta = (v[c] - kv) * in.beta[t];
        for (int r = 0; r < d; ++r) S[r * d + c] += k[r] * delta;
      }
      for (int c = 0; c < d; ++c) {
        double acc = 0;
        for (int r = 0; r < d; ++r) acc += S[r * d + c] * q[r];
        acc *= scale;
        max_err = std::max(max_err, std::fabs(o[t * in.out_stride + c] - acc));
        max_ref = std::max(max_ref, std::fabs(acc));
      }
    }
    EXPECT_LT(max_err, 1e-5 * std::max(1.0, max_ref)) << "d=" << d;
  }
}

// ---- Attention kernels ---------------------------------------------------------------------

std::vector<uint16_t> ToHalf(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = Fp32ToFp16(x[i]);
  return h;
}

TEST_P(VecLevels, AttentionKernelsEqualScalarBitForBit) {
  for (int hd : {256, 128, 40, 17}) {
    for (int rows : {1, 2, 3, 4, 5, 8, 9}) {
      for (int64_t keys : {1, 3, 16, 17, 64}) {
        const int64_t q_stride = hd + 3, k_stride = hd + 5, s_stride = 70, acc_stride = hd + 1;
        const auto q = Random(rows * q_stride, 1.0f, hd + rows);
        const auto kf = Random(keys * k_stride, 1.0f, 1000 + hd + keys);
        const auto vf = Random(keys * k_stride, 1.0f, 2000 + hd + keys);
        const auto kh = ToHalf(kf);
        const auto vh = ToHalf(vf);
        for (bool f16 : {false, true}) {
          const void* k = f16 ? static_cast<const void*>(kh.data()) : kf.data();
          const void* v = f16 ? static_cast<const void*>(vh.data()) : vf.data();
          std::vector<float> sa(rows * s_stride, 3.0f), sb = sa;
          simd().attn_scores(q.data(), q_stride, rows, k, f16, k_stride, keys, hd, sa.data(),
                             s_stride);
          ref().attn_scores(q.data(), q_stride, rows, k, f16, k_stride, keys, hd, sb.data(),
                            s_stride);
          ASSERT_TRUE(SameBits(sa.data(), sb.data(), sa.size()))
              << "scores hd=" << hd << " rows=" << rows << " keys=" << keys << " f16=" << f16;
          // Each row sees its own number of keys (a causal diagonal).
          std::vector<int64_t> seen(rows);
          for (int r = 0; r < rows; ++r) seen[r] = std::max<int64_t>(0, keys - (rows - 1 - r));
          auto p = Random(rows * s_stride, 0.3f, 5 + rows);
          // Some rows rescaled first (a softmax correction), others not.
          std::vector<float> rescale(rows, 1.0f);
          for (int r = 0; r < rows; r += 2) rescale[r] = 0.5f + 0.1f * r;
          std::vector<float> aa = Random(rows * acc_stride, 1.0f, 6 + hd), ab = aa;
          VecKernels::AttnValues x;
          x.p = p.data();
          x.p_stride = s_stride;
          x.n_keys = seen.data();
          x.rescale = rescale.data();
          x.n_rows = rows;
          x.v = v;
          x.v_f16 = f16;
          x.v_stride = k_stride;
          x.hd = hd;
          x.acc = aa.data();
          x.acc_stride = acc_stride;
          simd().attn_accumulate(x);
          x.acc = ab.data();
          ref().attn_accumulate(x);
          ASSERT_TRUE(SameBits(aa.data(), ab.data(), aa.size()))
              << "accumulate hd=" << hd << " rows=" << rows << " keys=" << keys << " f16=" << f16;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, VecLevels,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

// ---- The scalar definition itself ----------------------------------------------------------

// Exp against the float64 exponential over its whole range.
TEST(VecDefinition, ExpIsAccurate) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(internal::ExpRef(x) - want) / want);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(internal::ExpRef(0.0f), 1.0f);
  EXPECT_GT(internal::ExpRef(-1000.0f), 0.0f);  // clamped, not zero
  EXPECT_TRUE(std::isfinite(internal::ExpRef(1000.0f)));
}

// The 16-lane order, transcribed independently: the lanes as sixteen separate fma chains and
// the tree as pairwise sums written out.
TEST(VecDefinition, Dot16IsTheDocumentedOrder) {
  for (int64_t n : {1, 15, 16, 33, 100, 256}) {
    const auto a = Random(n, 1.0f, 1 + n);
    const auto b = Random(n, 1.0f, 2 + n);
    float lane[16];
    for (int l = 0; l < 16; ++l) {
      float acc = 0.0f;
      for (int64_t i = l; i < n; i += 16) acc = std::fma(a[i], b[i], acc);
      lane[l] = acc;
    }
    float e[8], f[4], g[2];
    for (int l = 0; l < 8; ++l) e[l] = lane[l] + lane[l + 8];
    for (int l = 0; l < 4; ++l) f[l] = e[l] + e[l + 4];
    for (int l = 0; l < 2; ++l) g[l] = f[l] + f[l + 2];
    const float want = g[0] + g[1];
    EXPECT_EQ(Bits(VecKernelsFor(Isa::kScalar).dot(a.data(), b.data(), n)), Bits(want)) << n;
  }
}

}  // namespace
}  // namespace qwen::ops

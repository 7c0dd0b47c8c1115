// The per-position ops of the forward pass give a row the same bits however many rows the call
// has, where the row falls, and how the work is split over threads; the convolution gives a
// token the same bits whether its sequence comes at once or token by token.
#include "inference/ops/basic.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "inference/ops/delta_net.h"

namespace qwen::ops {
namespace {

std::vector<float> Random(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

class BasicOps : public ::testing::Test {
 protected:
  ThreadPool pool1_{1}, pool2_{2};
  ComputeContext ctx1_{&pool1_, MathMode::kFast}, ctx2_{&pool2_, MathMode::kFast};
};

// Rows normalised together (large enough to be split over both threads) and one at a time.
TEST_F(BasicOps, NormsOfARowDoNotDependOnTheOtherRows) {
  for (int64_t width : {256, 2560, 37}) {
    const int64_t rows = 70000 / width + 3;
    const auto x = Random(rows * width, 2.0f, static_cast<uint32_t>(width));
    const auto w = Random(width, 1.0f, 7);
    std::vector<float> together(x.size()), alone(x.size());
    RmsNorm(ctx2_, x.data(), w.data(), rows, width, 1e-6f, together.data());
    for (int64_t r = 0; r < rows; ++r) {
      RmsNorm(ctx1_, x.data() + r * width, w.data(), 1, width, 1e-6f, alone.data() + r * width);
    }
    EXPECT_TRUE(SameBits(together.data(), alone.data(), x.size())) << "RmsNorm width " << width;
    std::vector<float> l2_together = x, l2_alone = x;
    L2Norm(ctx2_, l2_together.data(), rows, width, 1e-6f);
    for (int64_t r = 0; r < rows; ++r) L2Norm(ctx1_, l2_alone.data() + r * width, 1, width, 1e-6f);
    EXPECT_TRUE(SameBits(l2_together.data(), l2_alone.data(), x.size())) << "L2Norm " << width;
  }
}

// The gates split a flattened range over the threads at arbitrary points: every element gets
// the same bits as in any other split.
TEST_F(BasicOps, GatesDoNotDependOnHowTheRangeIsSplit) {
  const int64_t n = 100003;  // above the size that goes parallel, odd
  const auto gate = Random(n, 3.0f, 1);
  const auto up = Random(n, 1.0f, 2);
  std::vector<float> whole(n), pieces(n);
  SwiGlu(ctx2_, gate.data(), up.data(), n, whole.data());
  for (int64_t p = 0; p < n; p += 4097) {
    const int64_t m = std::min<int64_t>(4097, n - p);
    SwiGlu(ctx1_, gate.data() + p, up.data() + p, m, pieces.data() + p);
  }
  EXPECT_TRUE(SameBits(whole.data(), pieces.data(), n)) << "SwiGlu";
  std::vector<float> a = up, b = up;
  SigmoidGate(ctx2_, gate.data(), a.data(), n);
  for (int64_t p = 0; p < n; p += 333) {
    SigmoidGate(ctx1_, gate.data() + p, b.data() + p, std::min<int64_t>(333, n - p));
  }
  EXPECT_TRUE(SameBits(a.data(), b.data(), n)) << "SigmoidGate";
  a = up;
  b = up;
  SiluGate(ctx2_, gate.data(), a.data(), n);
  for (int64_t p = 0; p < n; p += 61) {
    SiluGate(ctx1_, gate.data() + p, b.data() + p, std::min<int64_t>(61, n - p));
  }
  EXPECT_TRUE(SameBits(a.data(), b.data(), n)) << "SiluGate";
}

// The causal convolution of a sequence at once, in uneven pieces and token by token (its state
// carrying the history), on one and two threads.
TEST_F(BasicOps, ConvolutionOfATokenDoesNotDependOnItsChunk) {
  const int64_t channels = 1500, n = 40;
  const int kernel = 4;
  const auto x = Random(n * channels, 1.0f, 3);
  const auto w = Random(kernel * channels, 0.5f, 4);
  const auto state0 = Random((kernel - 1) * channels, 1.0f, 5);
  std::vector<float> state = state0, whole(n * channels);
  CausalConv1dSilu(ctx2_, x.data(), n, channels, w.data(), kernel, state.data(), whole.data());
  for (int64_t piece : {1, 3, 17}) {
    for (ComputeContext* ctx : {&ctx1_, &ctx2_}) {
      std::vector<float> s = state0, out(n * channels);
      for (int64_t t = 0; t < n; t += piece) {
        const int64_t m = std::min(piece, n - t);
        CausalConv1dSilu(*ctx, x.data() + t * channels, m, channels, w.data(), kernel, s.data(),
                         out.data() + t * channels);
      }
      EXPECT_TRUE(SameBits(out.data(), whole.data(), out.size())) << "pieces of " << piece;
      EXPECT_TRUE(SameBits(s.data(), state.data(), s.size())) << "state, pieces of " << piece;
    }
  }
}

// Rotary embedding of a token depends on its position only, not on the tokens beside it.
TEST_F(BasicOps, RopeOfATokenDependsOnItsPositionOnly) {
  const int heads = 4, hd = 256, n = 9;
  const auto x = Random(n * heads * hd, 1.0f, 6);
  std::vector<int32_t> pos(n);
  for (int t = 0; t < n; ++t) pos[t] = 1000 + 7 * t;
  std::vector<float> whole = x, single = x;
  RopeNeox(whole.data(), n, heads, hd, 64, pos.data(), 1e7f);
  for (int t = 0; t < n; ++t) {
    RopeNeox(single.data() + t * heads * hd, 1, heads, hd, 64, &pos[t], 1e7f);
  }
  EXPECT_TRUE(SameBits(whole.data(), single.data(), whole.size()));
}

}  // namespace
}  // namespace qwen::ops

#include "inference/ops/basic.h"

#include <vector>

#include "inference/common/fp16.h"
#include "inference/ops/vec.h"

namespace qwen::ops {
namespace {

// Below this many elements an op runs on the calling thread: a parallel section costs about a
// microsecond, more than the work of a decode step's small vectors.
constexpr int64_t kParallelMin = 1 << 15;

// Runs fn(begin, end) over [0, n) in pieces of at least `grain`, in parallel when large.
template <typename Fn>
void Split(ComputeContext& ctx, int64_t n, int64_t grain, int64_t work, Fn fn) {
  if (work < kParallelMin || ctx.n_threads() == 1) {
    fn(0, n);
    return;
  }
  ctx.pool().ParallelFor(n, grain, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// Rotates the first 2 * half dimensions of each of one token's heads (NEOX pairing: i with
// i + half) by the token's angles. Shared by RopeNeox and RopeMulti, so a token whose M-RoPE
// streams are equal gets the same bits from both.
void RotateHeads(float* x, int n_heads, int head_dim, int half, const float* cos_t,
                 const float* sin_t) {
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * static_cast<int64_t>(head_dim);
    for (int i = 0; i < half; ++i) {
      const float a = v[i];
      const float b = v[i + half];
      v[i] = a * cos_t[i] - b * sin_t[i];
      v[i + half] = a * sin_t[i] + b * cos_t[i];
    }
  }
}

}  // namespace

void RmsNorm(ComputeContext& ctx, const float* x, const float* w, int64_t n_rows, int64_t width,
             float eps, float* out) {
  const VecKernels& v = Vec();
  Split(ctx, n_rows, 1, n_rows * width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const double ss = v.sum_squares(x + r * width, width);
      const float scale = static_cast<float>(1.0 / std::sqrt(ss / width + eps));
      v.scale_mul(x + r * width, scale, w, out + r * width, width);
    }
  });
}

void L2Norm(ComputeContext& ctx, float* x, int64_t n_rows, int64_t width, float eps) {
  const VecKernels& v = Vec();
  Split(ctx, n_rows, 1, n_rows * width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float norm = static_cast<float>(std::sqrt(v.sum_squares(x + r * width, width)));
      v.scale_mul(x + r * width, 1.0f / (norm > eps ? norm : eps), nullptr, x + r * width, width);
    }
  });
}

void SwiGlu(ComputeContext& ctx, const float* gate, const float* up, int64_t n, float* out) {
  Split(ctx, n, 4096, n,
        [&](int64_t b, int64_t e) { Vec().silu_mul(gate + b, up + b, out + b, e - b); });
}

void SigmoidGate(ComputeContext& ctx, const float* gate, float* x, int64_t n) {
  Split(ctx, n, 4096, n, [&](int64_t b, int64_t e) { Vec().sigmoid_mul(gate + b, x + b, e - b); });
}

void SiluGate(ComputeContext& ctx, const float* gate, float* x, int64_t n) {
  Split(ctx, n, 4096, n,
        [&](int64_t b, int64_t e) { Vec().silu_mul(gate + b, x + b, x + b, e - b); });
}

void AddInPlace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void RopeNeox(float* x, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
              float base) {
  const int half = n_rot / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i)
    inv_freq[i] = std::pow(static_cast<double>(base), -2.0 * i / n_rot);
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos[t]) * inv_freq[i];
      cos_t[i] = static_cast<float>(std::cos(angle));
      sin_t[i] = static_cast<float>(std::sin(angle));
    }
    RotateHeads(x + t * n_heads * static_cast<int64_t>(head_dim), n_heads, head_dim, half,
                cos_t.data(), sin_t.data());
  }
}

void RopeMulti(float* x, int64_t n_tokens, int n_heads, int head_dim, int n_rot, const int32_t* pos,
               float base, const int sections[4]) {
  const int half = n_rot / 2;
  const int sect_dims = sections[0] + sections[1] + sections[2] + sections[3];
  std::vector<double> inv_freq(half);
  std::vector<int> stream(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(base), -2.0 * i / n_rot);
    const int s = sect_dims > 0 ? i % sect_dims : i;
    if (s % 3 == 1 && s < 3 * sections[1]) {
      stream[i] = 1;
    } else if (s % 3 == 2 && s < 3 * sections[2]) {
      stream[i] = 2;
    } else if (s % 3 == 0 && s < 3 * sections[0]) {
      stream[i] = 0;
    } else {
      stream[i] = 3;
    }
  }
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int i = 0; i < half; ++i) {
      // Same expression as RopeNeox, so equal streams give bit-identical results.
      const double angle = static_cast<double>(pos[t * 4 + stream[i]]) * inv_freq[i];
      cos_t[i] = static_cast<float>(std::cos(angle));
      sin_t[i] = static_cast<float>(std::sin(angle));
    }
    RotateHeads(x + t * n_heads * static_cast<int64_t>(head_dim), n_heads, head_dim, half,
                cos_t.data(), sin_t.data());
  }
}

void FloatToHalf(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Fp32ToFp16(x[i]);
}

}  // namespace qwen::ops

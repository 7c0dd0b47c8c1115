#include "inference/ops/basic.h"

#include <vector>

#include "inference/common/fp16.h"

namespace qwen::ops {

void RmsNorm(const float* x, const float* w, int64_t n_rows, int64_t width, float eps, float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * width;
    float* yr = out + r * width;
    double sum = 0;  // double: widths up to 9216 and activations in the hundreds
    for (int64_t i = 0; i < width; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(sum / width + eps));
    if (w != nullptr) {
      for (int64_t i = 0; i < width; ++i) yr[i] = xr[i] * scale * w[i];
    } else {
      for (int64_t i = 0; i < width; ++i) yr[i] = xr[i] * scale;
    }
  }
}

void L2Norm(float* x, int64_t n_rows, int64_t width, float eps) {
  for (int64_t r = 0; r < n_rows; ++r) {
    float* xr = x + r * width;
    double sum = 0;
    for (int64_t i = 0; i < width; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float norm = static_cast<float>(std::sqrt(sum));
    const float scale = 1.0f / (norm > eps ? norm : eps);
    for (int64_t i = 0; i < width; ++i) xr[i] *= scale;
  }
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Silu(gate[i]) * up[i];
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
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * static_cast<int64_t>(head_dim);
      for (int i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = a * sin_t[i] + b * cos_t[i];
      }
    }
  }
}

void FloatToHalf(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Fp32ToFp16(x[i]);
}

}  // namespace qwen::ops

// The scalar definitions of the vector kernels' arithmetic (see vec.h): Exp, Sigmoid and the
// 16-lane reductions, for the scalar level, for code outside the kernels that must round as
// they do (attention's softmax corrections), and for the SIMD levels' scalar remainders.
// Internal to inference/ops.
#ifndef QWEN_INFERENCE_OPS_VEC_MATH_H_
#define QWEN_INFERENCE_OPS_VEC_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace qwen::ops::internal {

// The clamp and constants of Exp, shared by every level.
inline constexpr float kExpLo = -87.3f;  // n >= -126: 2^n is a normal float
inline constexpr float kExpHi = 88.0f;   // n <= 127
inline constexpr float kLog2e = 1.44269504089f;
inline constexpr float kLn2Hi = 0.693145751953125f;
inline constexpr float kLn2Lo = 1.428606765330187e-06f;

// Exp as vec.h defines it. The SIMD versions clamp with max(lo, x) then min(hi, x) with the
// constant first, which keeps a NaN; so does this.
inline float ExpRef(float x) {
  if (std::isnan(x)) return x;
  x = kExpLo > x ? kExpLo : x;
  x = kExpHi < x ? kExpHi : x;
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  float p = 1.0f / 720;
  p = std::fma(p, r, 1.0f / 120);
  p = std::fma(p, r, 1.0f / 24);
  p = std::fma(p, r, 1.0f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float SigmoidRef(float x) { return 1.0f / (1.0f + ExpRef(0.0f - x)); }

// The tree that ends every Reduce16.
inline float Tree16(float p[16]) {
  for (int l = 0; l < 8; ++l) p[l] = p[l] + p[l + 8];
  for (int l = 0; l < 4; ++l) p[l] = p[l] + p[l + 4];
  for (int l = 0; l < 2; ++l) p[l] = p[l] + p[l + 2];
  return p[0] + p[1];
}

// Dot16(a, b, n).
inline float Dot16Ref(const float* a, const float* b, int64_t n) {
  float p[16] = {};
  for (int64_t i = 0; i < n; ++i) p[i % 16] = std::fma(a[i], b[i], p[i % 16]);
  return Tree16(p);
}

}  // namespace qwen::ops::internal

#endif  // QWEN_INFERENCE_OPS_VEC_MATH_H_

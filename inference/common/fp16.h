// Scalar IEEE half and bfloat16 conversions: exact on the way up, round-to-nearest-even on the
// way down. SIMD kernels use F16C / AVX-512 instructions; these are their reference.
#ifndef QWEN_INFERENCE_COMMON_FP16_H_
#define QWEN_INFERENCE_COMMON_FP16_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace qwen {

inline float Fp32FromBits(uint32_t w) {
  float f;
  std::memcpy(&f, &w, sizeof(f));
  return f;
}

inline uint32_t Fp32ToBits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, sizeof(w));
  return w;
}

// Exact for every half value: normals, subnormals, zeros, infinities and NaN.
inline float Fp16ToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return Fp32FromBits(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    // Subnormal (or zero): mant * 2^-24, exactly representable in float.
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  return Fp32FromBits(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Round to nearest even; values at or above 65520 become infinity; NaN stays NaN.
inline uint16_t Fp32ToFp16(float f) {
  const uint32_t w = Fp32ToBits(f);
  const uint32_t sign = (w >> 16) & 0x8000u;
  const uint32_t abs = w & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {
    // Below the smallest normal half: count units of 2^-24. rint rounds half to even, and a
    // result of 1024 is exactly the encoding of the smallest normal.
    const uint32_t m = static_cast<uint32_t>(std::rint(Fp32FromBits(abs) * 0x1p24f));
    return static_cast<uint16_t>(sign | m);
  }
  const uint32_t exp = (abs >> 23) - 112u;
  const uint32_t mant = abs & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return static_cast<uint16_t>(sign | h);
}

inline float Bf16ToFp32(uint16_t h) { return Fp32FromBits(static_cast<uint32_t>(h) << 16); }

inline uint16_t Fp32ToBf16(float f) {
  const uint32_t w = Fp32ToBits(f);
  if ((w & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((w >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((w >> 16) & 1u);
  return static_cast<uint16_t>((w + rounding) >> 16);
}

}  // namespace qwen

#endif  // QWEN_INFERENCE_COMMON_FP16_H_

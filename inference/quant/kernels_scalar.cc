// The scalar reference kernels: written for clarity, one weight at a time. They define the bits
// every SIMD level must produce (kernels.h). Dequantization follows ggml's float expressions
// operation for operation (so that its results match ggml's to the last bit); dot products sum
// each block's integer products exactly and fold each block into a float accumulator with
// fused multiply-adds, in block order.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "inference/common/fp16.h"
#include "inference/quant/kernels.h"
#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {
namespace {

constexpr int kQK = 32;    // values per block of the legacy types
constexpr int kQKK = 256;  // values per k-quant super-block

float F16(uint16_t h) { return Fp16ToFp32(h); }

// Position of value i of a Q8_K block in its qs array (see BlockQ8_K in kernels_internal.h).
int Q8KSlot(int i) {
  const int s = i / 16, k = (i % 16) / 4, b = i % 4;
  return 64 * k + 4 * s + b;
}

// ---- Weight value decoding: the integer q of weight i of a block, and its sub-block scales ----

int Q4_0Quant(const BlockQ4_0& b, int i) {
  return i < 16 ? (b.qs[i] & 0xF) : (b.qs[i - 16] >> 4);
}

int Q5Quant(const uint8_t* qs, const uint8_t* qh, int i) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  const int low = i < 16 ? (qs[i] & 0xF) : (qs[i - 16] >> 4);
  return low | static_cast<int>(((h >> i) & 1u) << 4);
}

// Q3_K's 6-bit scale of sub-block s (0..63; the weight uses scale - 32).
int Q3KScale(const BlockQ3_K& b, int s) {
  const int low = s < 8 ? (b.scales[s] & 0xF) : (b.scales[s - 8] >> 4);
  const int high = (b.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
  return low | (high << 4);
}

// Q3_K's q in [-4, 3] of weight i.
int Q3KQuant(const BlockQ3_K& b, int i) {
  const int h = i / 128, g = (i % 128) / 32, l = i % 32;
  const int low = (b.qs[32 * h + l] >> (2 * g)) & 3;
  const bool high = (b.hmask[l] >> (4 * h + g)) & 1;
  return low - (high ? 0 : 4);
}

int Q2KQuant(const BlockQ2_K& b, int i) {
  const int h = i / 128, g = (i % 128) / 32, l = i % 32;
  return (b.qs[32 * h + l] >> (2 * g)) & 3;
}

// Q4_K and Q5_K pack 8 6-bit scales and 8 6-bit mins in 12 bytes: the first four of each whole
// in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); the last four split into a low nibble
// in bytes 8-11 (scale low, min high) and 2 high bits in the top of bytes 0-3 (scales) and 4-7
// (mins).
void K4ScaleMin(const uint8_t* q, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

int Q4KQuant(const BlockQ4_K& b, int i) {
  const int c = i / 64, l = i % 32;
  return (i % 64) < 32 ? (b.qs[32 * c + l] & 0xF) : (b.qs[32 * c + l] >> 4);
}

int Q5KQuant(const BlockQ5_K& b, int i) {
  const int c = i / 64, l = i % 32, upper = (i % 64) / 32;
  const int low = upper ? (b.qs[32 * c + l] >> 4) : (b.qs[32 * c + l] & 0xF);
  const int high = (b.qh[l] >> (2 * c + upper)) & 1;
  return low | (high << 4);
}

// Q6_K's q in [-32, 31] of weight i.
int Q6KQuant(const BlockQ6_K& b, int i) {
  const int h = i / 128, g = (i % 128) / 32, l = i % 32;
  const uint8_t lbyte = b.ql[64 * h + 32 * (g % 2) + l];
  const int low = g < 2 ? (lbyte & 0xF) : (lbyte >> 4);
  const int high = (b.qh[32 * h + l] >> (2 * g)) & 3;
  return (low | (high << 4)) - 32;
}

// ---- Dequantization ----

void DequantF32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, n * sizeof(float));
}

void DequantF16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(h[i]);
}

void DequantBF16(const void* src, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(h[i]);
}

void DequantQ4_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float d = F16(blocks[ib].d);
    for (int i = 0; i < kQK; ++i) dst[ib * kQK + i] = (Q4_0Quant(blocks[ib], i) - 8) * d;
  }
}

void DequantQ4_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_1*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const BlockQ4_1& b = blocks[ib];
    const float d = F16(b.d), m = F16(b.m);
    for (int i = 0; i < kQK; ++i) {
      const int q = i < 16 ? (b.qs[i] & 0xF) : (b.qs[i - 16] >> 4);
      dst[ib * kQK + i] = q * d + m;
    }
  }
}

void DequantQ5_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const BlockQ5_0& b = blocks[ib];
    const float d = F16(b.d);
    for (int i = 0; i < kQK; ++i) dst[ib * kQK + i] = (Q5Quant(b.qs, b.qh, i) - 16) * d;
  }
}

void DequantQ5_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_1*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const BlockQ5_1& b = blocks[ib];
    const float d = F16(b.d), m = F16(b.m);
    for (int i = 0; i < kQK; ++i) dst[ib * kQK + i] = Q5Quant(b.qs, b.qh, i) * d + m;
  }
}

void DequantQ8_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float d = F16(blocks[ib].d);
    for (int i = 0; i < kQK; ++i) dst[ib * kQK + i] = blocks[ib].qs[i] * d;
  }
}

void DequantQ2_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ2_K*>(src);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ2_K& b = blocks[ib];
    const float d = F16(b.d), dmin = F16(b.dmin);
    for (int i = 0; i < kQKK; ++i) {
      const uint8_t sc = b.scales[i / 16];
      const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
      dst[ib * kQKK + i] = dl * Q2KQuant(b, i) - ml;
    }
  }
}

void DequantQ3_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ3_K*>(src);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ3_K& b = blocks[ib];
    const float d = F16(b.d);
    for (int i = 0; i < kQKK; ++i) {
      const float dl = d * (Q3KScale(b, i / 16) - 32);
      dst[ib * kQKK + i] = dl * Q3KQuant(b, i);
    }
  }
}

void DequantQ4_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_K*>(src);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ4_K& b = blocks[ib];
    const float d = F16(b.d), dmin = F16(b.dmin);
    for (int i = 0; i < kQKK; ++i) {
      int sc, mn;
      K4ScaleMin(b.scales, i / 32, &sc, &mn);
      const float d1 = d * sc, m1 = dmin * mn;
      dst[ib * kQKK + i] = d1 * Q4KQuant(b, i) - m1;
    }
  }
}

void DequantQ5_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_K*>(src);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ5_K& b = blocks[ib];
    const float d = F16(b.d), dmin = F16(b.dmin);
    for (int i = 0; i < kQKK; ++i) {
      int sc, mn;
      K4ScaleMin(b.scales, i / 32, &sc, &mn);
      const float d1 = d * sc, m1 = dmin * mn;
      dst[ib * kQKK + i] = d1 * Q5KQuant(b, i) - m1;
    }
  }
}

void DequantQ6_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ6_K*>(src);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ6_K& b = blocks[ib];
    const float d = F16(b.d);
    for (int i = 0; i < kQKK; ++i) dst[ib * kQKK + i] = d * b.scales[i / 16] * Q6KQuant(b, i);
  }
}

// ---- Activation quantization ----
//
// Every block is scaled so that its largest magnitude maps to 127: d = amax / 127, and each value
// becomes nearbyint(x / d) (round half to even, the SSE/AVX conversion's default), computed as
// x * (1 / d) clamped to [-127, 127]. Q8_0 and Q8_1 round d to half precision first and quantize
// with the rounded d, so that the stored scale is exactly the one the values were divided by.

void CopyFloats(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, n * sizeof(float)); }

int8_t RoundClamped(float v) {
  if (v > 127.0f) v = 127.0f;
  if (v < -127.0f) v = -127.0f;
  return static_cast<int8_t>(std::nearbyint(v));
}

float AbsMax(const float* x, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
}

// Fills qs with the 32 values of one block; returns the half-precision scale.
uint16_t QuantizeBlock32(const float* x, int8_t* qs) {
  const uint16_t d16 = Fp32ToFp16(AbsMax(x, kQK) / 127.0f);
  const float d = Fp16ToFp32(d16);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQK; ++i) qs[i] = RoundClamped(x[i] * id);
  return d16;
}

void QuantizeQ8_0(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t ib = 0; ib < n / kQK; ++ib) out[ib].d = QuantizeBlock32(x + ib * kQK, out[ib].qs);
}

void QuantizeQ8_1(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_1*>(dst);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    out[ib].d = QuantizeBlock32(x + ib * kQK, out[ib].qs);
    int sum = 0;
    for (int i = 0; i < kQK; ++i) sum += out[ib].qs[i];
    out[ib].s = Fp32ToFp16(Fp16ToFp32(out[ib].d) * static_cast<float>(sum));
  }
}

void QuantizeQ8_K(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_K*>(dst);
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const float* xb = x + ib * kQKK;
    BlockQ8_K& b = out[ib];
    const float d = AbsMax(xb, kQKK) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b.d = d;
    for (int s = 0; s < 16; ++s) {
      int sum = 0;
      for (int i = 16 * s; i < 16 * s + 16; ++i) {
        const int8_t q = RoundClamped(xb[i] * id);
        b.qs[Q8KSlot(i)] = q;
        sum += q;
      }
      b.bsums[s] = static_cast<int16_t>(sum);
    }
    FinishQ8K(&b);
  }
}

// ---- Dot products ----
//
// These define what every level computes (kernels.h): float weights as one fused multiply-add
// chain in index order; quantized weights as exact integers per block, folded into the result
// with one or two fused multiply-adds per block, blocks in order.

template <typename Load>
float FloatChain(Load w, const float* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc = std::fma(w(i), x[i], acc);
  return acc;
}

float DotF32(const void* w, const void* a, int64_t n) {
  const auto* wf = static_cast<const float*>(w);
  return FloatChain([&](int64_t i) { return wf[i]; }, static_cast<const float*>(a), n);
}

float DotF16(const void* w, const void* a, int64_t n) {
  const auto* wh = static_cast<const uint16_t*>(w);
  return FloatChain([&](int64_t i) { return Fp16ToFp32(wh[i]); }, static_cast<const float*>(a),
                    n);
}

float DotBF16(const void* w, const void* a, int64_t n) {
  const auto* wh = static_cast<const uint16_t*>(w);
  return FloatChain([&](int64_t i) { return Bf16ToFp32(wh[i]); }, static_cast<const float*>(a),
                    n);
}

// One block's contribution: acc + S d da (one rounding).
float Fold(float acc, int32_t s, float d, float da) {
  return std::fma(static_cast<float>(s), d * da, acc);
}

// Q8_0 activations against signed 32-weight blocks: S = sum q_i a_i.
template <typename Block, typename QuantFn>
float DotLegacySigned(const void* w, const void* a, int64_t n, QuantFn q) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* ab = static_cast<const BlockQ8_0*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    int32_t s = 0;
    for (int i = 0; i < kQK; ++i) s += q(wb[ib], i) * ab[ib].qs[i];
    acc = Fold(acc, s, F16(wb[ib].d), F16(ab[ib].d));
  }
  return acc;
}

float DotQ4_0(const void* w, const void* a, int64_t n) {
  return DotLegacySigned<BlockQ4_0>(
      w, a, n, [](const BlockQ4_0& b, int i) { return Q4_0Quant(b, i) - 8; });
}

float DotQ5_0(const void* w, const void* a, int64_t n) {
  return DotLegacySigned<BlockQ5_0>(
      w, a, n, [](const BlockQ5_0& b, int i) { return Q5Quant(b.qs, b.qh, i) - 16; });
}

float DotQ8_0(const void* w, const void* a, int64_t n) {
  return DotLegacySigned<BlockQ8_0W>(w, a, n,
                                     [](const BlockQ8_0W& b, int i) { return int{b.qs[i]}; });
}

// Q4_1 and Q5_1: sum (d q + m) a = d da sum(q qa) + m (da sum(qa)), the last factor being the
// activation block's precomputed s: acc = fma(S, d da, acc), then acc = fma(m, s, acc).
template <typename Block, typename QuantFn>
float DotLegacyMin(const void* w, const void* a, int64_t n, QuantFn q) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* ab = static_cast<const BlockQ8_1*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    int32_t s = 0;
    for (int i = 0; i < kQK; ++i) s += q(wb[ib], i) * ab[ib].qs[i];
    acc = Fold(acc, s, F16(wb[ib].d), F16(ab[ib].d));
    acc = std::fma(F16(wb[ib].m), F16(ab[ib].s), acc);
  }
  return acc;
}

float DotQ4_1(const void* w, const void* a, int64_t n) {
  return DotLegacyMin<BlockQ4_1>(w, a, n, [](const BlockQ4_1& b, int i) {
    return i < 16 ? (b.qs[i] & 0xF) : (b.qs[i - 16] >> 4);
  });
}

float DotQ5_1(const void* w, const void* a, int64_t n) {
  return DotLegacyMin<BlockQ5_1>(
      w, a, n, [](const BlockQ5_1& b, int i) { return Q5Quant(b.qs, b.qh, i); });
}

// Integer product of weights q(i) with Q8_K values over [lo, hi).
template <typename QuantFn>
int32_t RangeDot(QuantFn q, const BlockQ8_K& a, int lo, int hi) {
  int32_t isum = 0;
  for (int i = lo; i < hi; ++i) isum += q(i) * a.qs[Q8KSlot(i)];
  return isum;
}

// The k-quants. Per block, with sub-block scales sc and minimums mn (integers):
//   S = sum_s sc_s sum_{i in s} q_i a_i,   M = sum_s mn_s (sum of the activations of s),
//   acc = fma(float(S), d da, acc);  acc = fma(float(M), -dmin da, acc)  (types with minimums).
float DotQ2_K(const void* w, const void* a, int64_t n) {
  const auto* wb = static_cast<const BlockQ2_K*>(w);
  const auto* ab = static_cast<const BlockQ8_K*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ2_K& b = wb[ib];
    int32_t s = 0, m = 0;
    for (int sb = 0; sb < 16; ++sb) {
      s += (b.scales[sb] & 0xF) *
           RangeDot([&](int i) { return Q2KQuant(b, i); }, ab[ib], 16 * sb, 16 * sb + 16);
      m += (b.scales[sb] >> 4) * ab[ib].bsums[sb];
    }
    acc = Fold(acc, s, F16(b.d), ab[ib].d);
    acc = Fold(acc, m, -F16(b.dmin), ab[ib].d);
  }
  return acc;
}

float DotQ3_K(const void* w, const void* a, int64_t n) {
  const auto* wb = static_cast<const BlockQ3_K*>(w);
  const auto* ab = static_cast<const BlockQ8_K*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ3_K& b = wb[ib];
    int32_t s = 0;
    for (int sb = 0; sb < 16; ++sb) {
      s += (Q3KScale(b, sb) - 32) *
           RangeDot([&](int i) { return Q3KQuant(b, i); }, ab[ib], 16 * sb, 16 * sb + 16);
    }
    acc = Fold(acc, s, F16(b.d), ab[ib].d);
  }
  return acc;
}

template <typename Block, typename QuantFn>
float DotK4(const void* w, const void* a, int64_t n, QuantFn q) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* ab = static_cast<const BlockQ8_K*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const Block& b = wb[ib];
    int32_t s = 0, m = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      K4ScaleMin(b.scales, j, &sc, &mn);
      s += sc * RangeDot([&](int i) { return q(b, i); }, ab[ib], 32 * j, 32 * j + 32);
      m += mn * (ab[ib].bsums[2 * j] + ab[ib].bsums[2 * j + 1]);
    }
    acc = Fold(acc, s, F16(b.d), ab[ib].d);
    acc = Fold(acc, m, -F16(b.dmin), ab[ib].d);
  }
  return acc;
}

float DotQ4_K(const void* w, const void* a, int64_t n) {
  return DotK4<BlockQ4_K>(w, a, n, Q4KQuant);
}

float DotQ5_K(const void* w, const void* a, int64_t n) {
  return DotK4<BlockQ5_K>(w, a, n, Q5KQuant);
}

float DotQ6_K(const void* w, const void* a, int64_t n) {
  const auto* wb = static_cast<const BlockQ6_K*>(w);
  const auto* ab = static_cast<const BlockQ8_K*>(a);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n / kQKK; ++ib) {
    const BlockQ6_K& b = wb[ib];
    int32_t s = 0;
    for (int sb = 0; sb < 16; ++sb) {
      s += b.scales[sb] *
           RangeDot([&](int i) { return Q6KQuant(b, i); }, ab[ib], 16 * sb, 16 * sb + 16);
    }
    acc = Fold(acc, s, F16(b.d), ab[ib].d);
  }
  return acc;
}

template <float (*Dot)(const void*, const void*, int64_t)>
void TileOfDots(const void* w, size_t w_stride, int64_t n_rows, const void* a, size_t a_stride,
                int64_t n_cols, float* y, size_t y_stride, int64_t n) {
  const auto* wp = static_cast<const uint8_t*>(w);
  const auto* ap = static_cast<const uint8_t*>(a);
  for (int64_t c = 0; c < n_cols; ++c) {
    for (int64_t r = 0; r < n_rows; ++r) {
      y[c * y_stride + r] = Dot(wp + r * w_stride, ap + c * a_stride, n);
    }
  }
}

template <float (*Dot)(const void*, const void*, int64_t)>
void Set(KernelTable* t, GgmlType type, void (*deq)(const void*, float*, int64_t),
         void (*quant)(const float*, void*, int64_t)) {
  const auto i = static_cast<uint32_t>(type);
  t->dequantize[i] = deq;
  t->quantize_activation[i] = quant;
  t->dot_tile[i] = TileOfDots<Dot>;
}

}  // namespace

void DequantizeActivationScalar(GgmlType activation_type, const void* a, float* dst,
                                int64_t n) {
  switch (activation_type) {
    case GgmlType::kQ8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(a);
      for (int64_t i = 0; i < n; ++i) dst[i] = b[i / kQK].qs[i % kQK] * F16(b[i / kQK].d);
      return;
    }
    case GgmlType::kQ8_1: {
      const auto* b = static_cast<const BlockQ8_1*>(a);
      for (int64_t i = 0; i < n; ++i) dst[i] = b[i / kQK].qs[i % kQK] * F16(b[i / kQK].d);
      return;
    }
    case GgmlType::kQ8_K: {
      const auto* b = static_cast<const BlockQ8_K*>(a);
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = b[i / kQKK].qs[Q8KSlot(static_cast<int>(i % kQKK))] * b[i / kQKK].d;
      }
      return;
    }
    default:
      std::memcpy(dst, a, n * sizeof(float));
  }
}

void FillScalarKernels(KernelTable* t) {
  Set<DotF32>(t, GgmlType::kF32, DequantF32, CopyFloats);
  Set<DotF16>(t, GgmlType::kF16, DequantF16, CopyFloats);
  Set<DotBF16>(t, GgmlType::kBF16, DequantBF16, CopyFloats);
  Set<DotQ4_0>(t, GgmlType::kQ4_0, DequantQ4_0, QuantizeQ8_0);
  Set<DotQ4_1>(t, GgmlType::kQ4_1, DequantQ4_1, QuantizeQ8_1);
  Set<DotQ5_0>(t, GgmlType::kQ5_0, DequantQ5_0, QuantizeQ8_0);
  Set<DotQ5_1>(t, GgmlType::kQ5_1, DequantQ5_1, QuantizeQ8_1);
  Set<DotQ8_0>(t, GgmlType::kQ8_0, DequantQ8_0, QuantizeQ8_0);
  Set<DotQ2_K>(t, GgmlType::kQ2_K, DequantQ2_K, QuantizeQ8_K);
  Set<DotQ3_K>(t, GgmlType::kQ3_K, DequantQ3_K, QuantizeQ8_K);
  Set<DotQ4_K>(t, GgmlType::kQ4_K, DequantQ4_K, QuantizeQ8_K);
  Set<DotQ5_K>(t, GgmlType::kQ5_K, DequantQ5_K, QuantizeQ8_K);
  Set<DotQ6_K>(t, GgmlType::kQ6_K, DequantQ6_K, QuantizeQ8_K);
}

}  // namespace qwen::quant::internal

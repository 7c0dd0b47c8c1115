// Builds one KernelTable per instruction-set level and hands out the right one.
#include "inference/quant/kernels.h"

#include "inference/quant/kernels_internal.h"

namespace qwen::quant {
namespace {

// Each level starts from the level below it, so an entry a level does not speed up falls back
// to the best one beneath.
KernelTable MakeTable(Isa isa) {
  KernelTable t;
  internal::FillScalarKernels(&t);
#if defined(__aarch64__)
  if (static_cast<int>(isa) >= static_cast<int>(Isa::kNeon)) internal::FillNeonKernels(&t);
  if (static_cast<int>(isa) >= static_cast<int>(Isa::kNeonDot)) internal::FillNeonDotKernels(&t);
#else
  if (static_cast<int>(isa) >= static_cast<int>(Isa::kAvx2)) internal::FillAvx2Kernels(&t);
  if (static_cast<int>(isa) >= static_cast<int>(Isa::kAvx512)) {
    // AVX-512 has its own packed layout: none of AVX2's may remain in its table.
    t.packed_format = nullptr;
    for (auto& f : t.pack16) f = nullptr;
    for (auto& f : t.dot_tile_packed) f = nullptr;
    internal::FillAvx512Kernels(&t);
    internal::FillAvx512GemmKernels(&t, isa == Isa::kAvx512Gfni);
  }
#endif
  t.isa = isa;
  return t;
}

}  // namespace

GgmlType ActivationType(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return GgmlType::kQ8_0;
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      return GgmlType::kQ8_1;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return GgmlType::kQ8_K;
    default:
      return GgmlType::kF32;
  }
}

size_t ActivationRowBytes(GgmlType weight_type, int64_t n) {
  switch (ActivationType(weight_type)) {
    case GgmlType::kQ8_0:
      return static_cast<size_t>(n / 32) * sizeof(BlockQ8_0);
    case GgmlType::kQ8_1:
      return static_cast<size_t>(n / 32) * sizeof(BlockQ8_1);
    case GgmlType::kQ8_K:
      return static_cast<size_t>(n / 256) * sizeof(BlockQ8_K);
    default:
      return static_cast<size_t>(n) * sizeof(float);
  }
}

const KernelTable& KernelsFor(Isa isa) {
  // The fill functions of a level are compiled for that level (even storing the pointers may use
  // its instructions), so a table is only built for a level the CPU has.
  const int best = static_cast<int>(BestIsa());
  const int want = static_cast<int>(isa) < best ? static_cast<int>(isa) : best;
  switch (static_cast<Isa>(want)) {
#if defined(__aarch64__)
    case Isa::kNeonDot: {
      static const KernelTable neondot = MakeTable(Isa::kNeonDot);
      return neondot;
    }
    case Isa::kNeon: {
      static const KernelTable neon = MakeTable(Isa::kNeon);
      return neon;
    }
#else
    case Isa::kAvx512Gfni: {
      static const KernelTable avx512gfni = MakeTable(Isa::kAvx512Gfni);
      return avx512gfni;
    }
    case Isa::kAvx512: {
      static const KernelTable avx512 = MakeTable(Isa::kAvx512);
      return avx512;
    }
    case Isa::kAvx2: {
      static const KernelTable avx2 = MakeTable(Isa::kAvx2);
      return avx2;
    }
#endif
    default: {
      static const KernelTable scalar = MakeTable(Isa::kScalar);
      return scalar;
    }
  }
}

const KernelTable& Kernels() {
  static const KernelTable& table = KernelsFor(ActiveIsa());
  return table;
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  Kernels().dequantize[static_cast<uint32_t>(type)](src, dst, n);
}

float Dot(const KernelTable& k, GgmlType type, const void* w, const void* a, int64_t n) {
  float y = 0.0f;
  k.dot_tile[static_cast<uint32_t>(type)](w, 0, 1, a, 0, 1, &y, 1, n);
  return y;
}

void DequantizeActivationRow(GgmlType weight_type, const void* a, float* dst, int64_t n) {
  internal::DequantizeActivationScalar(ActivationType(weight_type), a, dst, n);
}

}  // namespace qwen::quant

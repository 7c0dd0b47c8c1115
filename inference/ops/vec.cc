#include "inference/ops/vec.h"

#include <algorithm>

namespace qwen::ops {

const VecKernels& VecKernelsFor(Isa isa) {
  // Each level starts from the one below, so a level without a faster version of an entry
  // keeps the slower one. A level's file is entered only on a CPU that supports it: even its
  // table-filling code may use that level's instructions.
#if defined(__aarch64__)
  // The NEON levels have no vector-op kernels of their own yet: they use the scalar definitions
  // (the same bits by construction). Each table says its level.
  static const VecKernels* tables = [] {
    static VecKernels t[3];
    internal::FillScalar(t[0]);
    t[1] = t[0];
    t[1].isa = Isa::kNeon;
    t[2] = t[1];
    t[2].isa = Isa::kNeonDot;
    return t;
  }();
  const int level = std::min(static_cast<int>(isa), static_cast<int>(BestIsa()));
#else
  static const VecKernels* tables = [] {
    static VecKernels t[3];
    internal::FillScalar(t[0]);
    t[1] = t[0];
    if (BestIsa() >= Isa::kAvx2) internal::FillAvx2(t[1]);
    t[2] = t[1];
    if (BestIsa() >= Isa::kAvx512) internal::FillAvx512(t[2]);
    return t;
  }();
  // No vector op gains from GFNI: that level uses the AVX-512 table.
  const int level = std::min(
      {static_cast<int>(isa), static_cast<int>(BestIsa()), static_cast<int>(Isa::kAvx512)});
#endif
  return tables[level];
}

const VecKernels& Vec() {
  static const VecKernels& active = VecKernelsFor(ActiveIsa());
  return active;
}

}  // namespace qwen::ops

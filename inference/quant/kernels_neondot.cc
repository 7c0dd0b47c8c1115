// Advanced SIMD with the dot product instructions (FEAT_DotProd, ARMv8.2: Graviton 2 and later,
// Ampere Altra, Neoverse N1/V1/N2/V2): the products of kernels_neon.inc with SDOT. Compiled with
// +dotprod and only ever called after run-time dispatch found the CPU has it. Only
// FillNeonDotKernels is visible outside.
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {
namespace {

#define QWEN_NEON_DOTPROD 1
#include "inference/quant/kernels_neon.inc"
#undef QWEN_NEON_DOTPROD

}  // namespace

void FillNeonDotKernels(KernelTable* t) { FillNeonProducts(t); }

}  // namespace qwen::quant::internal

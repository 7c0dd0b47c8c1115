// ARMv8.0 Advanced SIMD kernels (every aarch64 CPU): the products of kernels_neon.inc with the
// integer dot products built from widening multiplies. Only FillNeonKernels is visible outside.
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

#define QWEN_NEON_DOTPROD 0
#include "inference/quant/kernels_neon.inc"
#undef QWEN_NEON_DOTPROD

}  // namespace

void FillNeonKernels(KernelTable* t) { FillNeonProducts(t); }

}  // namespace qwen::quant::internal

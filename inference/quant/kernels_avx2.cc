#include "inference/quant/kernels_internal.h"

namespace qwen::quant::internal {

void FillAvx2Kernels(KernelTable* t) {}

}  // namespace qwen::quant::internal

// Which SIMD instruction sets this CPU (and OS) offers, and which kernel level to use.
#ifndef QWEN_INFERENCE_COMMON_CPU_FEATURES_H_
#define QWEN_INFERENCE_COMMON_CPU_FEATURES_H_

#include <string>

#include "absl/strings/string_view.h"

namespace qwen {

// Kernel levels, each a superset of the one before. Kernels are compiled once per level and the
// best level the CPU supports is chosen at run time, so one binary runs on any x86-64.
enum class Isa {
  kScalar = 0,  // portable C++, the reference every SIMD path is tested against
  kAvx2 = 1,    // AVX2 + FMA + F16C (Haswell, Zen 1 and later)
  kAvx512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI (Cascade Lake, Ice Lake, Zen 4 and later)
  // kAvx512 + GFNI (Ice Lake, Zen 4 and later; not Cascade Lake): single-column Q3_K products
  // on packed weights move the high bit of each weight with one vgf2p8affineqb instead of a
  // shift and a mask. Same results, same packed layout.
  kAvx512Gfni = 3,
};

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool gfni = false;
  bool avx512bf16 = false;
  bool avxvnni = false;
};

// Features of the running CPU, read once. Thread-safe.
const CpuFeatures& GetCpuFeatures();

// The best level the CPU supports.
Isa BestIsa();

// The level kernels use: BestIsa(), lowered by the environment variable QWEN_ISA
// (scalar | avx2 | avx512 | avx512gfni) when it is set. A request above what the CPU supports is
// clamped.
Isa ActiveIsa();

absl::string_view IsaName(Isa isa);

// The CPU's model name (CPUID brand string, e.g. "AMD EPYC 7B13 64-Core Processor"), or
// "unknown".
std::string CpuModelName();

// Human-readable feature list, e.g. "avx2 fma f16c avx512f ... avx512vnni".
std::string CpuFeatureString();

}  // namespace qwen

#endif  // QWEN_INFERENCE_COMMON_CPU_FEATURES_H_

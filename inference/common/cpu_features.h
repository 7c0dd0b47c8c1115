// Which SIMD instruction sets this CPU (and OS) offers, and which kernel level to use.
#ifndef QWEN_INFERENCE_COMMON_CPU_FEATURES_H_
#define QWEN_INFERENCE_COMMON_CPU_FEATURES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace qwen {

// Kernel levels of the architecture the program is built for, each a superset of the one before
// (so levels compare by their numbers). Kernels are compiled once per level and the best level
// the CPU supports is chosen at run time, so one binary runs on any x86-64, or on any ARMv8-A
// (aarch64) CPU. Every level makes the same promises (inference/quant/kernels.h, ops/vec.h).
enum class Isa {
  kScalar = 0,  // portable C++, the reference every SIMD path is tested against
#if defined(__aarch64__)
  kNeon = 1,     // Advanced SIMD, ARMv8.0 baseline (Cortex-A57/A72, Graviton 1)
  kNeonDot = 2,  // + SDOT/UDOT (FEAT_DotProd, ARMv8.2: Graviton 2+, Ampere Altra, Axion, Cobalt)
  kMaxIsa = kNeonDot,
#else
  kAvx2 = 1,    // AVX2 + FMA + F16C (Haswell, Zen 1 and later)
  kAvx512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI (Cascade Lake, Ice Lake, Zen 4 and later)
  // kAvx512 + GFNI (Ice Lake, Zen 4 and later; not Cascade Lake): single-column Q3_K products
  // on packed weights move the high bit of each weight with one vgf2p8affineqb instead of a
  // shift and a mask. Same results, same packed layout.
  kAvx512Gfni = 3,
  kMaxIsa = kAvx512Gfni,
#endif
};

// Every level of this architecture, lowest (scalar) first, whether or not this CPU has it.
std::vector<Isa> AllIsas();

// Sets *isa to this architecture's level named `name` (IsaName's spelling) and returns true;
// returns false, leaving *isa as it was, for any other name.
bool ParseIsa(absl::string_view name, Isa* isa);

// Feature bits read from CPUID (x86-64) or the kernel's HWCAP words (aarch64). The fields of the
// other architecture stay false.
struct CpuFeatures {
  // aarch64
  bool asimd = false;    // Advanced SIMD (always present on Linux aarch64)
  bool asimddp = false;  // SDOT/UDOT
  bool i8mm = false;     // SMMLA (ARMv8.6; no kernel level uses it yet)
  bool sve = false;      // (no kernel level uses it)
  // x86-64
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

// The level kernels use: BestIsa(), lowered by the environment variable QWEN_ISA when it is set
// (x86-64: scalar | avx2 | avx512 | avx512gfni; aarch64: scalar | neon | neondot). A request
// above what the CPU supports is clamped; a name this architecture lacks is ignored.
Isa ActiveIsa();

absl::string_view IsaName(Isa isa);

// The CPU's model name (x86-64: the CPUID brand string, e.g. "AMD EPYC 7B13 64-Core
// Processor"; aarch64: implementer and part from MIDR_EL1, e.g. "ARM Neoverse-N1"), or
// "unknown".
std::string CpuModelName();

// Human-readable feature list, e.g. "avx2 fma f16c avx512f ... avx512vnni" or
// "asimd asimddp i8mm".
std::string CpuFeatureString();

}  // namespace qwen

#endif  // QWEN_INFERENCE_COMMON_CPU_FEATURES_H_

#include "inference/common/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#elif defined(__x86_64__)
#include <cpuid.h>
#else
#error "qwen-serve builds for x86-64 and aarch64"
#endif

namespace qwen {
namespace {

#if defined(__aarch64__)

// The kernel's HWCAP words say what EL0 may use (and under qemu-user, what the emulated CPU has).
CpuFeatures Detect() {
  CpuFeatures f;
  const unsigned long hw = getauxval(AT_HWCAP);
  const unsigned long hw2 = getauxval(AT_HWCAP2);
  f.asimd = (hw & HWCAP_ASIMD) != 0;
  f.asimddp = (hw & HWCAP_ASIMDDP) != 0;
  f.sve = (hw & HWCAP_SVE) != 0;
#ifdef HWCAP2_I8MM
  f.i8mm = (hw2 & HWCAP2_I8MM) != 0;
#else
  f.i8mm = (hw2 & (1UL << 13)) != 0;
#endif
  return f;
}

Isa ComputeBest(const CpuFeatures& f) {
  if (f.asimd && f.asimddp) return Isa::kNeonDot;
  if (f.asimd) return Isa::kNeon;
  return Isa::kScalar;
}

#else  // x86-64

uint64_t ReadXcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool fma = (c >> 12) & 1;
  const bool f16c = (c >> 29) & 1;
  const bool avx = (c >> 28) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = ReadXcr0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool zmm_os = (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_os) return f;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.fma = fma;
  f.f16c = f16c;
  f.avx2 = (b >> 5) & 1;
  if (zmm_os) {
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512vnni = (c >> 11) & 1;
    f.gfni = (c >> 8) & 1;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f.avx512bf16 = (a1 >> 5) & 1;
    f.avxvnni = (a1 >> 4) & 1;
  }
  return f;
}

Isa ComputeBest(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.avx2 && f.fma &&
      f.f16c) {
    return f.gfni ? Isa::kAvx512Gfni : Isa::kAvx512;
  }
  if (f.avx2 && f.fma && f.f16c) return Isa::kAvx2;
  return Isa::kScalar;
}

#endif

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

Isa BestIsa() {
  static const Isa best = ComputeBest(GetCpuFeatures());
  return best;
}

Isa ActiveIsa() {
  static const Isa active = [] {
    Isa best = BestIsa();
    const char* env = std::getenv("QWEN_ISA");
    if (env == nullptr) return best;
    Isa want = best;
    if (!ParseIsa(env, &want)) want = best;
    return static_cast<int>(want) < static_cast<int>(best) ? want : best;
  }();
  return active;
}

std::vector<Isa> AllIsas() {
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(Isa::kMaxIsa); ++i) out.push_back(static_cast<Isa>(i));
  return out;
}

bool ParseIsa(absl::string_view name, Isa* isa) {
  for (Isa i : AllIsas()) {
    if (IsaName(i) == name) {
      *isa = i;
      return true;
    }
  }
  return false;
}

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
#if defined(__aarch64__)
    case Isa::kNeon:
      return "neon";
    case Isa::kNeonDot:
      return "neondot";
#else
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Gfni:
      return "avx512gfni";
#endif
  }
  return "unknown";
}

#if defined(__aarch64__)
// Names of the cores a server is likely to have, by MIDR implementer and part number.
std::string ArmCoreName(unsigned implementer, unsigned part) {
  struct Core {
    unsigned implementer, part;
    const char* name;
  };
  static constexpr Core kCores[] = {
      {0x41, 0xd03, "ARM Cortex-A53"},    {0x41, 0xd07, "ARM Cortex-A57"},
      {0x41, 0xd08, "ARM Cortex-A72"},    {0x41, 0xd0b, "ARM Cortex-A76"},
      {0x41, 0xd0c, "ARM Neoverse-N1"},   {0x41, 0xd40, "ARM Neoverse-V1"},
      {0x41, 0xd49, "ARM Neoverse-N2"},   {0x41, 0xd4f, "ARM Neoverse-V2"},
      {0x41, 0xd84, "ARM Neoverse-V3"},   {0x41, 0xd8e, "ARM Neoverse-N3"},
      {0xc0, 0xac3, "Ampere AmpereOne"},  {0x61, 0x022, "Apple M1"},
  };
  for (const Core& c : kCores) {
    if (c.implementer == implementer && c.part == part) return c.name;
  }
  return absl::StrFormat("implementer 0x%02x part 0x%03x", implementer, part);
}

std::string CpuModelName() {
  // /proc/cpuinfo's "CPU implementer" and "CPU part" of the first core (the kernel's copy of
  // MIDR_EL1). Under qemu-user the file is the host's, which has neither: "unknown".
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  long implementer = -1, part = -1;
  while (std::getline(in, line) && (implementer < 0 || part < 0)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const long value = std::strtol(line.c_str() + colon + 1, nullptr, 0);
    if (key == "CPU implementer" && implementer < 0) implementer = value;
    if (key == "CPU part" && part < 0) part = value;
  }
  if (implementer < 0 || part < 0) return "unknown";
  return ArmCoreName(static_cast<unsigned>(implementer), static_cast<unsigned>(part));
}
#else
std::string CpuModelName() {
  // The brand string from CPUID leaves 0x80000002-4 (what /proc/cpuinfo's "model name" shows).
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0x80000000u, &eax, &ebx, &ecx, &edx) == 0 || eax < 0x80000004u) return "unknown";
  char brand[49] = {};
  for (unsigned int leaf = 0; leaf < 3; ++leaf) {
    __get_cpuid(0x80000002u + leaf, &eax, &ebx, &ecx, &edx);
    std::memcpy(brand + 16 * leaf, &eax, 4);
    std::memcpy(brand + 16 * leaf + 4, &ebx, 4);
    std::memcpy(brand + 16 * leaf + 8, &ecx, 4);
    std::memcpy(brand + 16 * leaf + 12, &edx, 4);
  }
  std::string name(brand);
  const size_t first = name.find_first_not_of(' ');
  const size_t last = name.find_last_not_of(' ');
  return first == std::string::npos ? "unknown" : name.substr(first, last - first + 1);
}
#endif

std::string CpuFeatureString() {
  const CpuFeatures& f = GetCpuFeatures();
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.asimd, "asimd");
  add(f.asimddp, "asimddp");
  add(f.i8mm, "i8mm");
  add(f.sve, "sve");
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512bf16, "avx512bf16");
  add(f.gfni, "gfni");
  add(f.avxvnni, "avxvnni");
  return s.empty() ? "none" : s;
}

}  // namespace qwen

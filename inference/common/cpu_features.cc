#include "inference/common/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace qwen {
namespace {

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
    std::string v(env);
    Isa want = best;
    if (v == "scalar") want = Isa::kScalar;
    if (v == "avx2") want = Isa::kAvx2;
    if (v == "avx512") want = Isa::kAvx512;
    if (v == "avx512gfni") want = Isa::kAvx512Gfni;
    return static_cast<int>(want) < static_cast<int>(best) ? want : best;
  }();
  return active;
}

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Gfni:
      return "avx512gfni";
  }
  return "unknown";
}

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

std::string CpuFeatureString() {
  const CpuFeatures& f = GetCpuFeatures();
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
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

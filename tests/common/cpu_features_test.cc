// Level detection and naming. Under qemu-user (scripts/cross-aarch64) the emulated CPU is known,
// and the script says which level detection must find (QWEN_EXPECT_BEST_ISA): a CPU without the
// dot product must fall back to plain NEON, one with it must use it.
#include "inference/common/cpu_features.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace qwen {
namespace {

TEST(CpuFeatures, BestIsaIsTheExpectedOneWhenTold) {
  const char* want = std::getenv("QWEN_EXPECT_BEST_ISA");
  if (want == nullptr || *want == '\0') GTEST_SKIP() << "QWEN_EXPECT_BEST_ISA is not set";
  EXPECT_EQ(std::string(IsaName(BestIsa())), want) << "features: " << CpuFeatureString();
}

TEST(CpuFeatures, LevelsAreNumberedInOrderAndNamedUniquely) {
  const auto all = AllIsas();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front(), Isa::kScalar);
  EXPECT_EQ(all.back(), Isa::kMaxIsa);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(static_cast<int>(all[i]), static_cast<int>(i));
    Isa parsed = Isa::kMaxIsa;
    ASSERT_TRUE(ParseIsa(IsaName(all[i]), &parsed)) << IsaName(all[i]);
    EXPECT_EQ(parsed, all[i]);
  }
  Isa unchanged = Isa::kScalar;
  EXPECT_FALSE(ParseIsa("sse9", &unchanged));
  EXPECT_EQ(unchanged, Isa::kScalar);
  EXPECT_LE(static_cast<int>(BestIsa()), static_cast<int>(Isa::kMaxIsa));
  EXPECT_LE(static_cast<int>(ActiveIsa()), static_cast<int>(BestIsa()));
}

TEST(CpuFeatures, FeatureStringNamesWhatTheBestLevelNeeds) {
  const std::string f = CpuFeatureString();
#if defined(__aarch64__)
  // Linux on aarch64 always has Advanced SIMD.
  EXPECT_NE(f.find("asimd"), std::string::npos) << f;
  EXPECT_GE(static_cast<int>(BestIsa()), static_cast<int>(Isa::kNeon));
  if (BestIsa() == Isa::kNeonDot) {
    EXPECT_NE(f.find("asimddp"), std::string::npos) << f;
  }
#else
  if (BestIsa() != Isa::kScalar) {
    EXPECT_NE(f.find("avx2"), std::string::npos) << f;
  }
#endif
  EXPECT_FALSE(CpuModelName().empty());
}

}  // namespace
}  // namespace qwen

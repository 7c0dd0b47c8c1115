// `qwen generate` gives the same logits, to the bit, on every CPU: the files in
// tests/data/reference/same-bits were written by an x86-64 build (AVX-512 level, 2026-12-07),
// and every build must reproduce them byte for byte, whatever its architecture and kernel level
// (docs/numerics.md, promise 1). Run natively by the default suite, and under qemu-user by the
// aarch64 cross build's tests (scripts/cross-aarch64), at NEON with and without the dot product.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace qwen::testing {
namespace {

std::string Qwen() { return EmulatorPrefix() + BinPath("qwen"); }

class SameBits : public ::testing::TestWithParam<const char*> {};

TEST_P(SameBits, GreedyTokensAndLogitsEqualTheX86Run) {
  const std::string name = GetParam();
  const std::string dump = ::testing::TempDir() + "/same-bits-" + name + ".f32";
  const CommandResult r = RunCommand(absl::StrCat(
      Qwen(), " generate --model ", DataPath("models/" + name + ".gguf"),
      " --tokens 1,2,3,4,5,6,7,8 --temperature 0 --max-tokens 8 --dump-logits ", dump,
      " 2>/dev/null"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, ReadFile(DataPath("reference/same-bits/" + name + ".tokens")));
  const std::string got = ReadFile(dump);
  const std::string want = ReadFile(DataPath("reference/same-bits/" + name + ".logits.f32"));
  ASSERT_EQ(got.size(), want.size());
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); i += 4) differing += got.compare(i, 4, want, i, 4) != 0;
  EXPECT_EQ(differing, 0u) << "of " << got.size() / 4 << " logits";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SameBits,
                         ::testing::Values("tiny-qwen35-f32", "tiny-qwen35-q8_0",
                                           "tiny-qwen35-q4_k_m", "tiny-qwen35-q3_k_m"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) {
                             if (c == '-' || c == '.') c = '_';
                           }
                           return s;
                         });

// `qwen inspect` prints the same on every architecture (the file's numbers, not the CPU's).
TEST(SameBits, InspectMatchesTheFixture) {
  const CommandResult r = RunCommand(absl::StrCat(
      "cd '", DataPath(""), "' && ", Qwen(), " inspect models/tiny-qwen35-mtp-q3_k_m.gguf 2>&1"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, ReadFile(DataPath("inspect/tiny-qwen35-mtp-q3_k_m.txt")));
}

}  // namespace
}  // namespace qwen::testing

// `qwen generate` gives the same logits, to the bit, on every CPU: the files in
// tests/data/reference/same-bits were written by an x86-64 build (AVX-512 level, 2026-12-07),
// and every build must reproduce them byte for byte, whatever its architecture and kernel level
// (docs/numerics.md, promise 1), at every level the CPU has (QWEN_ISA), the scalar reference
// included. Run natively by the default suite, and under qemu-user by the aarch64 cross build's
// tests (scripts/cross-aarch64): on `-cpu max` at scalar, NEON and NEON+dotprod, on a CPU
// without the dot product at scalar and NEON.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "tests/common/isa_levels.h"
#include "tests/common/test_util.h"

namespace qwen::testing {
namespace {

std::string Qwen() { return EmulatorPrefix() + BinPath("qwen"); }

class SameBits : public ::testing::TestWithParam<const char*> {};

TEST_P(SameBits, GreedyTokensAndLogitsEqualTheX86Run) {
  const std::string name = GetParam();
  const std::string want_tokens = ReadFile(DataPath("reference/same-bits/" + name + ".tokens"));
  const std::string want = ReadFile(DataPath("reference/same-bits/" + name + ".logits.f32"));
  ASSERT_FALSE(want_tokens.empty());
  ASSERT_FALSE(want.empty());
  for (const Isa isa : SupportedIsas()) {
    const std::string level(IsaName(isa));
    SCOPED_TRACE("QWEN_ISA=" + level);
    const std::string dump = ::testing::TempDir() + "/same-bits-" + name + "-" + level + ".f32";
    const CommandResult r = RunCommand(absl::StrCat(
        "QWEN_ISA=", level, " ", Qwen(), " generate --model ",
        DataPath("models/" + name + ".gguf"),
        " --tokens 1,2,3,4,5,6,7,8 --temperature 0 --max-tokens 8 --dump-logits ", dump,
        " 2>/dev/null"));
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out, want_tokens);
    const std::string got = ReadFile(dump);
    ASSERT_EQ(got.size(), want.size());
    size_t differing = 0;
    for (size_t i = 0; i < got.size(); i += 4) differing += got.compare(i, 4, want, i, 4) != 0;
    EXPECT_EQ(differing, 0u) << "of " << got.size() / 4 << " logits";
  }
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

// `qwen inspect` prints the same on every architecture (the file's numbers, not the CPU's): the
// texts in tests/data/inspect were written by the x86-64 build (cli_test checks them natively).
TEST(SameBits, InspectMatchesTheFixtures) {
  const struct {
    const char* file;
    const char* expected;
  } kCases[] = {
      {"models/tiny-qwen35-f32.gguf", "inspect/tiny-qwen35-f32.txt"},
      {"models/tiny-qwen35-mtp-q3_k_m.gguf", "inspect/tiny-qwen35-mtp-q3_k_m.txt"},
      {"models/tiny-qwen35-ollama-q3_k_m.gguf", "inspect/tiny-qwen35-ollama-q3_k_m.txt"},
      {"models/mmproj-tiny-qwen35-f16.gguf", "inspect/mmproj-tiny-qwen35-f16.txt"},
      {"tokenizer/qwen3-vocab-qwen35pre.gguf", "inspect/qwen3-vocab-qwen35pre.txt"}};
  for (const auto& c : kCases) {
    const CommandResult r = RunCommand(
        absl::StrCat("cd '", DataPath(""), "' && ", Qwen(), " inspect ", c.file, " 2>&1"));
    ASSERT_EQ(r.status, 0) << c.file << ": " << r.out;
    const std::string want = ReadFile(DataPath(c.expected));
    ASSERT_FALSE(want.empty()) << c.expected;
    EXPECT_EQ(r.out, want) << c.file;
  }
}

}  // namespace
}  // namespace qwen::testing

// Running a test at every kernel level the CPU has. The level is chosen once per process (the
// kernel tables read QWEN_ISA at their first use), so a test that compares levels runs its
// computation in child processes of the same test binary, one per level.
#ifndef QWEN_TESTS_COMMON_ISA_LEVELS_H_
#define QWEN_TESTS_COMMON_ISA_LEVELS_H_

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/cpu_features.h"
#include "tests/common/test_util.h"

namespace qwen::testing {

// Every level this CPU supports, lowest (scalar) first.
inline std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(BestIsa()); ++i) out.push_back(static_cast<Isa>(i));
  return out;
}

// In a child started by RunAtIsa: the file its tests write their results to; else null.
inline const char* ChildOutputPath() { return std::getenv("QWEN_TEST_CHILD_OUT"); }

// Appends `bytes` to the child's output file (no-op outside a child).
inline void WriteChildOutput(const std::string& bytes) {
  const char* path = ChildOutputPath();
  if (path == nullptr) return;
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs the tests of this executable that match `filter` (disabled ones included) in a child
// process with QWEN_ISA set to `isa`, and returns what they wrote with WriteChildOutput. A child
// that fails fails the calling test, with its output.
inline std::string RunAtIsa(Isa isa, const std::string& filter) {
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len <= 0) {
    ADD_FAILURE() << "cannot find this test's executable";
    return "";
  }
  exe[len] = '\0';
  char out_path[] = "/tmp/qwen-isa-child-XXXXXX";
  const int fd = mkstemp(out_path);
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return "";
  }
  close(fd);
  // The child runs exactly `filter`: a sharded parent's shard (GTEST_TOTAL_SHARDS, see
  // qwen_test's EMULATED_SHARDS) would otherwise leave it nothing to run in most shards.
  const CommandResult r = RunCommand(absl::StrCat(
      "env -u GTEST_TOTAL_SHARDS -u GTEST_SHARD_INDEX QWEN_ISA=", IsaName(isa), " QWEN_TEST_CHILD_OUT=", out_path, " ", EmulatorPrefix(), "'", exe,
      "' '--gtest_filter=", filter, "' --gtest_also_run_disabled_tests --gtest_brief=1 2>&1"));
  std::string bytes = ReadFile(out_path);
  unlink(out_path);
  if (r.status != 0) {
    ADD_FAILURE() << "at QWEN_ISA=" << IsaName(isa) << ", " << filter << " failed:\n" << r.out;
  }
  return bytes;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_COMMON_ISA_LEVELS_H_

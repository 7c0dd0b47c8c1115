// Helpers shared by the libFuzzer targets: fixture paths and a loud failure that libFuzzer
// records as a crash (abort) with the broken property in the log.
#ifndef QWEN_TESTS_FUZZ_FUZZ_UTIL_H_
#define QWEN_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"

namespace qwen::fuzz {

// tests/data: $QWEN_TEST_DATA when set (ctest sets it), else the source tree the target was
// built from.
inline std::string DataPath(const std::string& relative) {
  const char* env = std::getenv("QWEN_TEST_DATA");
  const std::string root = env != nullptr && *env != '\0' ? env : QWEN_SOURCE_DIR "/tests/data";
  return root + "/" + relative;
}

[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Aborts (a finding) when a fuzz entry point reports a broken property (INTERNAL).
inline void FailOnInternal(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInternal) Fail(std::string(status.ToString()));
}

inline std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s (set QWEN_TEST_DATA to tests/data)\n", path.c_str());
    std::exit(2);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace qwen::fuzz

#endif  // QWEN_TESTS_FUZZ_FUZZ_UTIL_H_

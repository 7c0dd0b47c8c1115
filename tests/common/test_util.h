// Helpers shared by the tests.
#ifndef QWEN_TESTS_COMMON_TEST_UTIL_H_
#define QWEN_TESTS_COMMON_TEST_UTIL_H_

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace qwen::testing {

// Path of a file under tests/data. ctest sets QWEN_TEST_DATA; run by hand from the repository
// root, the relative path works too.
inline std::string DataPath(absl::string_view rel) {
  const char* dir = std::getenv("QWEN_TEST_DATA");
  std::string base = dir != nullptr ? dir : "tests/data";
  return base + "/" + std::string(rel);
}

// Directory of the built programs (build/bin).
inline std::string BinPath(absl::string_view name) {
  const char* dir = std::getenv("QWEN_BIN_DIR");
  std::string base = dir != nullptr ? dir : "build/bin";
  return base + "/" + std::string(name);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_COMMON_TEST_UTIL_H_

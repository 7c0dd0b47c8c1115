// Helpers shared by the tests.
#ifndef QWEN_TESTS_COMMON_TEST_UTIL_H_
#define QWEN_TESTS_COMMON_TEST_UTIL_H_

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

// README.md followed by every docs/*.md (in name order): where the commands users copy against
// a server of their own are. docs/deploy.md is left out: its commands address a cluster (through
// a port-forward, with the release's tokens), and tests/deploy holds them. Run from the
// repository root, as ctest runs the tests.
inline std::string ReadUserDocs() {
  std::string out = ReadFile("README.md");
  std::vector<std::string> pages;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("docs", ec)) {
    if (e.path().extension() == ".md" && e.path().filename() != "deploy.md") {
      pages.push_back(e.path().string());
    }
  }
  std::sort(pages.begin(), pages.end());
  for (const std::string& p : pages) out += "\n" + ReadFile(p);
  return out;
}

struct CommandResult {
  int status = -1;  // exit code, or -1 if killed by a signal
  std::string out;  // standard output (and standard error when merged)
};

// Runs `shell_command` through /bin/sh and collects its output. For tests only: callers build
// the command from fixed strings.
inline CommandResult RunCommand(const std::string& shell_command) {
  CommandResult r;
  FILE* p = popen(shell_command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_COMMON_TEST_UTIL_H_

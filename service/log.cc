#include "service/log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace qwen::service {
namespace {

std::string& ProcessName() {
  static std::string* name = new std::string("qwen");
  return *name;
}

}  // namespace

void SetLogProcessName(absl::string_view name) { ProcessName() = std::string(name); }

void Log(LogLevel level, absl::string_view component, absl::string_view message) {
  const char tag = level == LogLevel::kInfo ? 'I' : level == LogLevel::kWarning ? 'W' : 'E';
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   absl::string_view(&tag, 1), " ", ProcessName(), "[", getpid(), "] ", component,
                   ": ", message, "\n");
  // One write per line: short writes to a pipe or file of this size are not interleaved.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace qwen::service

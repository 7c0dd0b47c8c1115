// The service's logging: one line per event on standard error.
//
// Every log call in service/ goes through Log(), so that the format can later become structured
// JSON (a separate issue) by changing this one function.
#ifndef QWEN_SERVICE_LOG_H_
#define QWEN_SERVICE_LOG_H_

#include "absl/strings/string_view.h"

namespace qwen::service {

enum class LogLevel { kInfo, kWarning, kError };

// Writes "<UTC time> <I|W|E> <process>[<pid>] <component>: <message>" as one write(2), so lines
// of the front end and its workers (which share the stream) never interleave mid-line.
// Thread-safe.
void Log(LogLevel level, absl::string_view component, absl::string_view message);

// Names this process in log lines ("qwen-serve", "qwen-worker-1"); call before other threads
// start.
void SetLogProcessName(absl::string_view name);

inline void LogInfo(absl::string_view component, absl::string_view message) {
  Log(LogLevel::kInfo, component, message);
}
inline void LogWarning(absl::string_view component, absl::string_view message) {
  Log(LogLevel::kWarning, component, message);
}
inline void LogError(absl::string_view component, absl::string_view message) {
  Log(LogLevel::kError, component, message);
}

}  // namespace qwen::service

#endif  // QWEN_SERVICE_LOG_H_

// The service's logging: one line per event on standard error, JSON by default.
//
// Every log call in service/ goes through Log(). A line is, in the JSON format (the default),
//   {"ts":"2025-01-31T12:00:00.123Z","level":"info","process":"qwen-serve","pid":123,
//    "component":"pool","msg":"worker 1 is up after 1.2s","worker":1,...}
// with the process-wide context fields (a worker's "worker" index) and then the call's own
// fields; in the text format (for people) it is
//   2025-01-31T12:00:00.123Z I qwen-serve[123] pool: worker 1 is up after 1.2s worker=1 ...
// Lines below the configured level are dropped.
#ifndef QWEN_SERVICE_LOG_H_
#define QWEN_SERVICE_LOG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace qwen::service {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kJson, kText };

// A line's own fields: a JSON object (null: none), e.g. {{"worker", 1}, {"pid", 1234}}.
using LogFields = nlohmann::ordered_json;

// "debug" | "info" | "warning" | "error" (also "warn"); INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
// "json" | "text"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
const char* LogLevelName(LogLevel level);
const char* LogFormatName(LogFormat format);

// Process-wide settings. Thread-safe (atomics), but meant to be set once at start-up; a worker
// process is started with its front end's settings.
void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
LogLevel GetLogLevel();
LogFormat GetLogFormat();
bool LogEnabled(LogLevel level);

// Names this process in log lines ("qwen-serve", "qwen-worker-1"); call before other threads
// start.
void SetLogProcessName(absl::string_view name);
// A field every line of this process carries (a worker's index); call before other threads
// start.
void SetLogContextField(const std::string& key, const nlohmann::ordered_json& value);

// The line Log() writes (with its newline), for tests. Pure apart from the process settings.
std::string FormatLogLine(LogLevel level, absl::string_view component, absl::string_view message,
                          const LogFields& fields, absl::Time time);

// Writes one line as one write(2), so that lines of the front end and its workers (which share
// the stream) never interleave mid-line. Invalid UTF-8 in strings becomes U+FFFD. Thread-safe.
void Log(LogLevel level, absl::string_view component, absl::string_view message,
         const LogFields& fields = LogFields());

inline void LogDebug(absl::string_view component, absl::string_view message,
                     const LogFields& fields = LogFields()) {
  Log(LogLevel::kDebug, component, message, fields);
}
inline void LogInfo(absl::string_view component, absl::string_view message,
                    const LogFields& fields = LogFields()) {
  Log(LogLevel::kInfo, component, message, fields);
}
inline void LogWarning(absl::string_view component, absl::string_view message,
                       const LogFields& fields = LogFields()) {
  Log(LogLevel::kWarning, component, message, fields);
}
inline void LogError(absl::string_view component, absl::string_view message,
                     const LogFields& fields = LogFields()) {
  Log(LogLevel::kError, component, message, fields);
}

}  // namespace qwen::service

#endif  // QWEN_SERVICE_LOG_H_

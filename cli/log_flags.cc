#include "cli/log_flags.h"

#include "absl/flags/flag.h"
#include "service/log.h"

ABSL_FLAG(std::string, log_level, "info",
          "Least severe log lines written: debug, info, warning or error (debug adds the "
          "workers' per-request lines and health checks).");
ABSL_FLAG(std::string, log_format, "json",
          "Log line format on standard error: json (one object per line: ts, level, process, "
          "pid, component, msg and fields) or text (for people).");

namespace qwen::cli {

absl::Status ApplyLogFlags() {
  absl::StatusOr<service::LogLevel> level = service::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return level.status();
  absl::StatusOr<service::LogFormat> format =
      service::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) return format.status();
  service::SetLogLevel(*level);
  service::SetLogFormat(*format);
  return absl::OkStatus();
}

}  // namespace qwen::cli

#include "service/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace qwen::service {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kJson)};

std::string& ProcessName() {
  static std::string* name = new std::string("qwen");
  return *name;
}

nlohmann::ordered_json& ContextFields() {
  static nlohmann::ordered_json* fields =
      new nlohmann::ordered_json(nlohmann::ordered_json::object());
  return *fields;
}

std::string Dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// key=value for the text format: strings as they are unless they need quoting.
void AppendTextFields(const nlohmann::ordered_json& fields, std::string* out) {
  if (!fields.is_object()) return;
  for (const auto& [key, value] : fields.items()) {
    absl::StrAppend(out, " ", key, "=");
    if (value.is_string()) {
      const std::string& s = value.get_ref<const std::string&>();
      const bool plain = !s.empty() && s.find_first_of(" \"=\n\t") == std::string::npos;
      absl::StrAppend(out, plain ? s : Dump(value));
    } else {
      absl::StrAppend(out, Dump(value));
    }
  }
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "debug") return LogLevel::kDebug;
  if (n == "info") return LogLevel::kInfo;
  if (n == "warning" || n == "warn") return LogLevel::kWarning;
  if (n == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_level: \"", name, "\" is not one of debug, info, warning, error"));
}

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "json") return LogFormat::kJson;
  if (n == "text") return LogFormat::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format: \"", name, "\" is not one of json, text"));
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

const char* LogFormatName(LogFormat format) { return format == LogFormat::kText ? "text" : "json"; }

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }
LogFormat GetLogFormat() { return static_cast<LogFormat>(g_format.load()); }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void SetLogProcessName(absl::string_view name) { ProcessName() = std::string(name); }

void SetLogContextField(const std::string& key, const nlohmann::ordered_json& value) {
  ContextFields()[key] = value;
}

std::string FormatLogLine(LogLevel level, absl::string_view component, absl::string_view message,
                          const LogFields& fields, absl::Time time) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  if (GetLogFormat() == LogFormat::kText) {
    static constexpr char kTags[] = {'D', 'I', 'W', 'E'};
    const char tag = kTags[static_cast<int>(level)];
    std::string line = absl::StrCat(ts, " ", absl::string_view(&tag, 1), " ", ProcessName(), "[",
                                    getpid(), "] ", component, ": ", message);
    AppendTextFields(ContextFields(), &line);
    AppendTextFields(fields, &line);
    line.push_back('\n');
    return line;
  }
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["ts"] = ts;
  j["level"] = LogLevelName(level);
  j["process"] = ProcessName();
  j["pid"] = getpid();
  for (const auto& [key, value] : ContextFields().items()) j[key] = value;
  j["component"] = std::string(component);
  j["msg"] = std::string(message);
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) j[key] = value;
  }
  std::string line = Dump(j);
  line.push_back('\n');
  return line;
}

void Log(LogLevel level, absl::string_view component, absl::string_view message,
         const LogFields& fields) {
  if (!LogEnabled(level)) return;
  const std::string line = FormatLogLine(level, component, message, fields, absl::Now());
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

#include "service/request_log.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace qwen::service {
namespace {

// Milliseconds with microsecond resolution (enough, and short lines).
double Ms(absl::Duration d) { return std::round(absl::ToDoubleMicroseconds(d)) / 1000.0; }

}  // namespace

std::string StatusCodeName(absl::StatusCode code) {
  // absl's names are gRPC's: "OK", "CANCELLED", "INVALID_ARGUMENT", ...
  return absl::StatusCodeToString(code);
}

LogLevel RequestLogLevel(absl::StatusCode code) {
  switch (code) {
    // Anyone who reaches the port can make these without a token: a line per call would let
    // them flood the log. The auth interceptor logs refusals at most once a second, and
    // qwen_requests_total counts every one.
    case absl::StatusCode::kUnauthenticated:
      return LogLevel::kDebug;
    case absl::StatusCode::kOk:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
      return LogLevel::kInfo;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
      return LogLevel::kWarning;
    default:
      return LogLevel::kError;
  }
}

LogFields RequestLogFields(const RequestSummary& r) {
  LogFields f = LogFields::object();
  f["request_id"] = r.request_id;
  f["method"] = r.method;
  f["peer"] = r.peer;
  f["status"] = StatusCodeName(r.status.code());
  if (!r.status.ok()) f["error"] = std::string(r.status.message());
  f["duration_ms"] = Ms(r.duration);
  if (r.generate) {
    f["prompt_tokens"] = r.prompt_tokens;
    f["generated_tokens"] = r.generated_tokens;
    f["cached_tokens"] = r.cached_tokens;
    if (r.drafted_tokens > 0) {
      f["drafted_tokens"] = r.drafted_tokens;
      f["accepted_tokens"] = r.accepted_tokens;
    }
    if (r.queue_wait) f["queue_wait_ms"] = Ms(*r.queue_wait);
    if (r.time_to_first_token) f["time_to_first_token_ms"] = Ms(*r.time_to_first_token);
    if (!r.finish_reason.empty()) f["finish_reason"] = r.finish_reason;
    if (r.tokens_per_second > 0) f["tokens_per_second"] = std::round(r.tokens_per_second * 10) / 10;
    f["worker"] = r.worker;
    f["attempts"] = r.attempts;
  }
  return f;
}

void LogRequest(const RequestSummary& r) {
  const LogLevel level = RequestLogLevel(r.status.code());
  if (!LogEnabled(level)) return;
  Log(level, "request", absl::StrCat(r.method, " ", StatusCodeName(r.status.code())),
      RequestLogFields(r));
}

}  // namespace qwen::service

// The record of one finished RPC, and the one log line it becomes.
#ifndef QWEN_SERVICE_REQUEST_LOG_H_
#define QWEN_SERVICE_REQUEST_LOG_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/log.h"

namespace qwen::service {

// What the front end knows about a call when it ends. Plain data.
struct RequestSummary {
  std::string method;       // "Generate", "Tokenize", ... (qwen.v1.Qwen), or "pkg.Service/Method"
  std::string request_id;   // the client's or the server's ("req-<n>")
  std::string peer;         // gRPC's peer string ("ipv4:127.0.0.1:51234")
  absl::Status status;      // how the call ended
  absl::Duration duration;  // arrival -> status decided

  // Generate only.
  bool generate = false;
  int worker = -1;   // the worker of the last attempt; -1: none was reached
  int attempts = 0;  // workers tried (more than 1 after a worker failure)
  int prompt_tokens = 0;
  int generated_tokens = 0;
  int cached_tokens = 0;
  int drafted_tokens = 0;                             // speculative decoding: drafts verified
  int accepted_tokens = 0;                            // and accepted
  std::optional<absl::Duration> queue_wait;           // set once the request reached a worker
  std::optional<absl::Duration> time_to_first_token;  // set once a token was generated
  std::string finish_reason;  // "eos", "length", ...; empty when the stream had no completion
  double tokens_per_second = 0;
};

// The gRPC name of a status code ("OK", "INVALID_ARGUMENT", ...).
std::string StatusCodeName(absl::StatusCode code);

// The level of a request's line: info for successes and the client's own doing (bad argument,
// cancel, deadline), warning for refusals under load and unavailability, error for server
// faults (INTERNAL, UNKNOWN, DATA_LOSS, ...).
LogLevel RequestLogLevel(absl::StatusCode code);

// The fields of a request's line: request_id, method, peer, status, [error], duration_ms, and
// for Generate: prompt_tokens, generated_tokens, cached_tokens, [queue_wait_ms],
// [time_to_first_token_ms], [finish_reason], [tokens_per_second], worker, attempts.
LogFields RequestLogFields(const RequestSummary& r);

// Writes the line: component "request", msg "<method> <STATUS>". Thread-safe.
void LogRequest(const RequestSummary& r);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REQUEST_LOG_H_

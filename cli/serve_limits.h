// `qwen serve` flags for security (TLS, mTLS, bearer tokens), explicit request limits and fault
// handling, kept apart from cli/serve.cc.
#ifndef QWEN_CLI_SERVE_LIMITS_H_
#define QWEN_CLI_SERVE_LIMITS_H_

#include "absl/status/status.h"
#include "service/front_end.h"

namespace qwen::cli {

// Copies the flags of cli/serve_limits.cc into `options`. INVALID_ARGUMENT naming the flag for
// a value out of range.
absl::Status ApplyServeLimitFlags(service::FrontEndOptions* options);

// Copies the flags of cli/serve_probes.cc (--health_port, --credentials_reload_interval) into
// `options`; ValidateFrontEndOptions checks them.
void ApplyServeProbeFlags(service::FrontEndOptions* options);

// Copies the flags of cli/serve_http.cc (--http_port, --served_model_name) into `options`;
// ValidateFrontEndOptions checks them.
void ApplyServeHttpFlags(service::FrontEndOptions* options);

}  // namespace qwen::cli

#endif  // QWEN_CLI_SERVE_LIMITS_H_

// --log_level and --log_format, shared by `qwen serve` and `qwen worker` (which the front end
// starts with its own settings).
#ifndef QWEN_CLI_LOG_FLAGS_H_
#define QWEN_CLI_LOG_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"

ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);

namespace qwen::cli {

// Sets the service's log level and format from the flags. INVALID_ARGUMENT for an unknown value.
absl::Status ApplyLogFlags();

}  // namespace qwen::cli

#endif  // QWEN_CLI_LOG_FLAGS_H_

// --metrics_port of `qwen serve`.
#ifndef QWEN_CLI_METRICS_FLAGS_H_
#define QWEN_CLI_METRICS_FLAGS_H_

#include <cstdint>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(int32_t, metrics_port);

#endif  // QWEN_CLI_METRICS_FLAGS_H_

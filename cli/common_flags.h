// Flags that several subcommands share (a flag can be defined only once per program).
#ifndef QWEN_CLI_COMMON_FLAGS_H_
#define QWEN_CLI_COMMON_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, threads);

#endif  // QWEN_CLI_COMMON_FLAGS_H_

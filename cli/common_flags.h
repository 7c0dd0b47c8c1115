// Flags shared by several subcommands, defined once in common_flags.cc (a flag name can be
// defined only once per program), and small helpers of the subcommands.
#ifndef QWEN_CLI_COMMON_FLAGS_H_
#define QWEN_CLI_COMMON_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, tokens);

namespace qwen::cli {

// All of standard input.
std::string ReadStdin();

}  // namespace qwen::cli

#endif  // QWEN_CLI_COMMON_FLAGS_H_

// Flags shared by several subcommands, defined once in common_flags.cc (a flag name can be
// defined only once per binary).
#ifndef QWEN_CLI_COMMON_FLAGS_H_
#define QWEN_CLI_COMMON_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, tokens);

namespace qwen::cli {

// Abseil spells negated booleans --noflag and flag names with underscores; accept the dashed
// spellings people type (--no-special, --show-special) by rewriting "--a-b" to "--a_b".
std::vector<char*> NormalizeDashedFlags(int argc, char** argv, std::vector<std::string>* storage);

// All of standard input.
std::string ReadStdin();

}  // namespace qwen::cli

#endif  // QWEN_CLI_COMMON_FLAGS_H_

// Command-line parsing shared by the subcommands.
#ifndef QWEN_CLI_FLAGS_UTIL_H_
#define QWEN_CLI_FLAGS_UTIL_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace qwen::cli {

// Parses Abseil flags for subcommand `command` and returns the positional arguments (without
// argv[0]). `--help` shows only the flags defined in cli/<command>*.cc and cli/common_flags.cc.
std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv);

}  // namespace qwen::cli

#endif  // QWEN_CLI_FLAGS_UTIL_H_

// Command-line parsing shared by the subcommands.
#ifndef QWEN_CLI_FLAGS_UTIL_H_
#define QWEN_CLI_FLAGS_UTIL_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace qwen::cli {

// Parses Abseil flags for subcommand `command` and returns the positional arguments (without
// argv[0]). `--help` shows only the flags defined in cli/<command>*.cc, cli/common_flags.cc and
// the files cli/<name>.cc named in `flag_files` (flags shared by a few commands).
std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv, std::vector<std::string> flag_files = {});

}  // namespace qwen::cli

#endif  // QWEN_CLI_FLAGS_UTIL_H_

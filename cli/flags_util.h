// Command-line parsing shared by the subcommands.
#ifndef QWEN_CLI_FLAGS_UTIL_H_
#define QWEN_CLI_FLAGS_UTIL_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace qwen::cli {

// Parses Abseil flags for subcommand `command` and returns the positional arguments (without
// argv[0]). The command takes, and `--help` shows, exactly the flags defined in cli/<command>*.cc
// and in the files cli/<name>.cc named in `flag_files` (flags shared by a few commands, e.g.
// "model_flag", "engine_flags"). Every program is one binary with one flag registry, so a flag
// of another command (`qwen serve --temperature 0.5`) would otherwise be accepted and ignored:
// such a flag, like an unknown one, prints "qwen <command>: ..." naming it and exits with status
// 2 (this is the program, not a library: Abseil's parser exits the same way on a bad value).
std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv, std::vector<std::string> flag_files = {});

}  // namespace qwen::cli

#endif  // QWEN_CLI_FLAGS_UTIL_H_

#include "cli/flags_util.h"

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qwen::cli {

std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv) {
  static std::string command_file;
  command_file = absl::StrCat("cli/", command);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, command_file) || absl::StrContains(file, "cli/common_flags");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = [](absl::string_view file) {
    size_t at = file.find("cli/");
    return std::string(at == absl::string_view::npos ? file : file.substr(at));
  };
  config.version_string = [] { return std::string("qwen-serve 0.1.0\n"); };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(std::string(usage));
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> out;
  for (size_t i = 1; i < positional.size(); ++i) out.emplace_back(positional[i]);
  return out;
}

}  // namespace qwen::cli

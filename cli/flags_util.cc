#include "cli/flags_util.h"

#include <algorithm>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qwen::cli {

std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv, std::vector<std::string> flag_files) {
  static std::vector<std::string> files;
  files = {absl::StrCat("cli/", command), "cli/common_flags"};
  for (const std::string& f : flag_files) files.push_back(absl::StrCat("cli/", f));
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    for (const std::string& f : files) {
      if (absl::StrContains(file, f)) return true;
    }
    return false;
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = [](absl::string_view file) {
    size_t at = file.find("cli/");
    return std::string(at == absl::string_view::npos ? file : file.substr(at));
  };
  config.version_string = [] { return std::string("qwen-serve 0.1.0\n"); };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(std::string(usage));
  // Flags may be spelled with hyphens (--max-tokens) or underscores (--max_tokens): Abseil knows
  // only the second form, so names are rewritten before parsing.
  static std::vector<std::string> storage;
  storage.assign(argv, argv + argc);
  std::vector<char*> args;
  bool flags_done = false;
  for (std::string& a : storage) {
    if (a == "--") flags_done = true;
    if (!flags_done && a.size() > 2 && a[0] == '-' && a[1] == '-') {
      const size_t end = std::min(a.find('='), a.size());
      for (size_t i = 2; i < end; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    args.push_back(a.data());
  }
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  std::vector<std::string> out;
  for (size_t i = 1; i < positional.size(); ++i) out.emplace_back(positional[i]);
  return out;
}

}  // namespace qwen::cli

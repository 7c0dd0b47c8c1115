#include "cli/flags_util.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qwen::cli {
namespace {

bool InFiles(absl::string_view file, const std::vector<std::string>& files) {
  for (const std::string& f : files) {
    if (absl::StrContains(file, f)) return true;
  }
  return false;
}

// Abseil's own flags (--help, --flagfile, ...), which every command takes. Some are not in the
// registry at all (the help flags), so they are known by name.
bool IsAbseilFlag(absl::string_view name) {
  static const char* const kBuiltin[] = {"help",    "helpfull",  "helpshort",       "helppackage",
                                         "version", "flagfile",  "fromenv",         "tryfromenv",
                                         "undefok", "helpmatch", "only_check_args", "helpon"};
  if (std::find(std::begin(kBuiltin), std::end(kBuiltin), name) != std::end(kBuiltin)) return true;
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && absl::StrContains(flag->Filename(), "absl/flags");
}

// The first flag of `argv` (before "--") that `command` does not take, with the reason; empty when
// all belong to it. `files` as ParseFlags builds them ("cli/serve", ...).
std::string FlagNotTaken(absl::string_view command, const std::vector<std::string>& files, int argc,
                         char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view a = argv[i];
    if (a == "--") break;
    // Abseil takes -name as well as --name; a lone "-" is a positional argument.
    if (a.size() < 2 || a[0] != '-') continue;
    absl::string_view body = a.substr(a[1] == '-' ? 2 : 1);
    const size_t eq = body.find('=');
    std::string name(body.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    if (IsAbseilFlag(name)) continue;
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      // --noflag is how Abseil spells a false boolean.
      const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name.substr(2));
      if (f != nullptr && f->IsOfType<bool>()) {
        flag = f;
        negated = true;
      }
    }
    if (flag == nullptr) return absl::StrCat("unknown flag --", name);
    if (!InFiles(flag->Filename(), files)) {
      return absl::StrCat("--", negated ? name.substr(2) : name, " is not a flag of qwen ", command,
                          " (see qwen ", command, " --help)");
    }
    // "--name value": the value is the next argument, whatever it looks like.
    if (eq == absl::string_view::npos && !flag->IsOfType<bool>()) ++i;
  }
  return "";
}

}  // namespace

std::vector<std::string> ParseFlags(absl::string_view command, absl::string_view usage, int argc,
                                    char** argv, std::vector<std::string> flag_files) {
  static std::vector<std::string> files;
  files = {absl::StrCat("cli/", command)};
  for (const std::string& f : flag_files) files.push_back(absl::StrCat("cli/", f));
  if (const std::string bad = FlagNotTaken(command, files, argc, argv); !bad.empty()) {
    std::fprintf(stderr, "qwen %s: %s\n", std::string(command).c_str(), bad.c_str());
    std::exit(2);
  }
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) { return InFiles(file, files); };
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

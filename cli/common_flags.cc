#include "cli/common_flags.h"

#include <iostream>
#include <iterator>

#include "absl/flags/flag.h"

ABSL_FLAG(bool, json, false,
          "Print JSON instead of text (each command's description gives the shape).");
ABSL_FLAG(std::string, model, "", "Path of the GGUF model file.");
// Both generate (the prompt) and detokenize (the ids to decode) take token ids this way.
ABSL_FLAG(std::string, tokens, "",
          "Token ids separated by commas or spaces. generate: the prompt; detokenize: the ids to "
          "turn into text (default: standard input).");
ABSL_FLAG(int32_t, threads, 0, "Compute threads (0: one per CPU core the process may run on).");

namespace qwen::cli {

std::vector<char*> NormalizeDashedFlags(int argc, char** argv, std::vector<std::string>* storage) {
  storage->clear();
  storage->reserve(argc);
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const size_t eq = arg.find('=');
      for (size_t k = 2; k < arg.size() && k < eq; ++k) {
        if (arg[k] == '-') arg[k] = '_';
      }
    }
    storage->push_back(std::move(arg));
  }
  std::vector<char*> out;
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

std::string ReadStdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

}  // namespace qwen::cli

#include "cli/common_flags.h"

#include <iostream>
#include <iterator>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Path of the GGUF model file.");
ABSL_FLAG(bool, json, false,
          "Print JSON instead of text (each command's description gives the shape).");
ABSL_FLAG(int32_t, threads, 0, "Compute threads (0: one per CPU core the process may run on).");
ABSL_FLAG(std::string, tokens, "",
          "Token ids separated by commas or spaces, brackets allowed (generate: the prompt, which "
          "needs no tokenizer; detokenize: the ids to decode, default standard input).");

namespace qwen::cli {

std::string ReadStdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

}  // namespace qwen::cli

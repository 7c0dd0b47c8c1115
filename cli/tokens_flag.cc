// --tokens, for generate and detokenize (see model_flag.cc for why a file of its own).
#include "absl/flags/flag.h"
#include "cli/common_flags.h"

ABSL_FLAG(std::string, tokens, "",
          "Token ids separated by commas or spaces, brackets allowed (generate: the prompt, which "
          "needs no tokenizer; detokenize: the ids to decode, default standard input).");

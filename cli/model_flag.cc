// --model, for the commands that open a model file. Each flag shared by some commands lives in a
// file of its own so that a command takes exactly the flags it lists (see ParseFlags).
#include "absl/flags/flag.h"
#include "cli/common_flags.h"

ABSL_FLAG(std::string, model, "",
          "The GGUF model file: a path, or ollama:NAME[:TAG] (e.g. ollama:qwen3.5:4b) for a model "
          "pulled with Ollama, found read-only in $OLLAMA_MODELS or ~/.ollama/models.");

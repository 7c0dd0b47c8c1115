#include "cli/common_flags.h"

#include <iostream>
#include <iterator>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "inference/store/ollama_store.h"

ABSL_FLAG(std::string, model, "",
          "The GGUF model file: a path, or ollama:NAME[:TAG] (e.g. ollama:qwen3.5:4b) for a model "
          "pulled with Ollama, found read-only in $OLLAMA_MODELS or ~/.ollama/models.");
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

absl::StatusOr<ModelFiles> ResolveModel(absl::string_view model) {
  ModelFiles files;
  if (!store::IsOllamaReference(model)) {
    files.model_path = std::string(model);
    return files;
  }
  absl::StatusOr<store::OllamaModelFiles> ollama = store::ResolveOllamaModel(model);
  if (!ollama.ok()) return ollama.status();
  files.model_path = ollama->model_path;
  files.projector_path = ollama->projector_path;
  files.reference = std::string(model);
  files.display_name = std::string(model.substr(store::kOllamaPrefix.size()));
  return files;
}

absl::StatusOr<ModelFiles> ResolveModelFlag() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  absl::StatusOr<ModelFiles> files = ResolveModel(model);
  if (!files.ok()) {
    return absl::Status(files.status().code(),
                        absl::StrCat("--model ", model, ": ", files.status().message()));
  }
  return files;
}

}  // namespace qwen::cli

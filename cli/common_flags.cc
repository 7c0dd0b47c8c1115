#include "cli/common_flags.h"

#include <iostream>
#include <iterator>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "inference/store/ollama_store.h"

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

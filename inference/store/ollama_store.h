// Finds the model files Ollama keeps on disk, so that `--model ollama:qwen3.5:4b` serves the
// model a user already pulled without copying or converting it.
//
// Ollama's store (`$OLLAMA_MODELS`, else `~/.ollama/models`) holds a manifest per model and tag,
// `manifests/<host>/<namespace>/<name>/<tag>` (an OCI image manifest in JSON), whose layers name
// content-addressed blobs `blobs/sha256-<hex digest>`. The GGUF is the layer of media type
// `application/vnd.ollama.image.model`; a separate vision projector, when the model has one, is
// `application/vnd.ollama.image.projector`. Everything here only reads the store.
#ifndef QWEN_INFERENCE_STORE_OLLAMA_STORE_H_
#define QWEN_INFERENCE_STORE_OLLAMA_STORE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwen::store {

// The prefix that marks a model reference instead of a file path.
inline constexpr absl::string_view kOllamaPrefix = "ollama:";

// True when `model` is "ollama:..." rather than a path.
bool IsOllamaReference(absl::string_view model);

// A model name as Ollama spells it: [host/][namespace/]name[:tag].
struct OllamaName {
  std::string host = "registry.ollama.ai";
  std::string name_space = "library";
  std::string name;
  std::string tag = "latest";
  std::string ToString() const;  // host/namespace/name:tag
};

// Parses "qwen3.5:4b", "library/qwen3.5:4b", "hf.co/user/repo:Q4_K_M" or
// "registry.ollama.ai/library/qwen3.5:4b" (with or without the "ollama:" prefix). Each part may
// hold letters, digits and `._-` (the tag also `+`), so that a name cannot point outside the store.
absl::StatusOr<OllamaName> ParseOllamaName(absl::string_view text);

// `$OLLAMA_MODELS` when set, else `$HOME/.ollama/models`; empty when neither is known.
std::string DefaultOllamaModelsDir();

struct OllamaModelFiles {
  std::string model_path;      // the GGUF blob
  std::string projector_path;  // the vision projector blob, or empty
  std::string manifest_path;
  std::string model_digest;  // "sha256:<hex>"
  OllamaName name;
};

// Resolves a name to its blobs in the store at `models_dir` (empty: DefaultOllamaModelsDir()).
// NOT_FOUND, naming the path it looked at, when the store, the manifest or a blob is missing;
// INVALID_ARGUMENT for a malformed name or a manifest that is not JSON or has no model layer;
// FAILED_PRECONDITION when a blob's size differs from what the manifest records (a partial pull).
// Thread-safe (reads files only).
absl::StatusOr<OllamaModelFiles> ResolveOllamaModel(absl::string_view name,
                                                    absl::string_view models_dir = "");

}  // namespace qwen::store

#endif  // QWEN_INFERENCE_STORE_OLLAMA_STORE_H_

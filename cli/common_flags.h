// Flags shared by several subcommands, each defined once (a flag name can be defined only once
// per program) in a file of its own, cli/<name>_flag.cc, which a command names in ParseFlags to
// take it; and small helpers of the subcommands.
#ifndef QWEN_CLI_COMMON_FLAGS_H_
#define QWEN_CLI_COMMON_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, tokens);

namespace qwen::cli {

// All of standard input.
std::string ReadStdin();

// The files a --model value names.
struct ModelFiles {
  std::string model_path;      // the GGUF file to open
  std::string projector_path;  // a vision projector that comes with it (Ollama), or empty
  std::string reference;       // what the user wrote when it was not a path ("ollama:NAME:TAG")
  std::string display_name;    // the reference without its prefix ("qwen3.5:4b"), or empty
};

// `model` is a path, or "ollama:NAME[:TAG]" resolved read-only in Ollama's store
// ($OLLAMA_MODELS, else ~/.ollama/models). Errors say where they looked.
absl::StatusOr<ModelFiles> ResolveModel(absl::string_view model);
// ResolveModel(--model); INVALID_ARGUMENT "--model is required" when it is empty.
absl::StatusOr<ModelFiles> ResolveModelFlag();

}  // namespace qwen::cli

#endif  // QWEN_CLI_COMMON_FLAGS_H_

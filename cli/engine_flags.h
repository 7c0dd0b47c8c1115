// Flags of the commands that run the model (generate, serve, worker), defined once: in
// engine_flags.cc, and --mmproj and --packed_dir in files of their own (bench and synth take them
// without the rest).
#ifndef QWEN_CLI_ENGINE_FLAGS_H_
#define QWEN_CLI_ENGINE_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "cli/common_flags.h"
#include "inference/model/state.h"

ABSL_DECLARE_FLAG(int32_t, ctx_size);
ABSL_DECLARE_FLAG(std::string, kv_type);
ABSL_DECLARE_FLAG(int32_t, max_draft);
ABSL_DECLARE_FLAG(int64_t, mtp_draft_vocab);
ABSL_DECLARE_FLAG(std::string, mmproj);
ABSL_DECLARE_FLAG(std::string, packed_dir);
ABSL_DECLARE_FLAG(int64_t, image_min_pixels);
ABSL_DECLARE_FLAG(int64_t, image_max_pixels);

namespace qwen::cli {

// --kv_type, parsed (model::ParseKvType: the one parser, one default).
absl::StatusOr<model::KvType> KvTypeFlag();

// The vision tower's file: --mmproj when given; else the projector layer of an Ollama model; else
// the model file itself when it bundles a tower (Ollama's own files carry it as v.* tensors).
// Empty: no image input.
std::string VisionTowerPath(const ModelFiles& model);

}  // namespace qwen::cli

#endif  // QWEN_CLI_ENGINE_FLAGS_H_

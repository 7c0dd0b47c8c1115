#include "cli/engine_flags.h"

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "inference/engine/speculative_mode.h"
#include "inference/gguf/gguf_file.h"

ABSL_FLAG(int32_t, ctx_size, 4096,
          "Context size in tokens: of the sequence (generate), of each slot (serve, worker); a "
          "request's prompt plus max_tokens must fit in it.");
ABSL_FLAG(std::string, kv_type, "f16",
          "KV cache element type: f16 (the default: half the memory) or f32.");
ABSL_FLAG(int32_t, max_draft, 3,
          "Speculative decoding: the longest draft (prompt lookup or the model's MTP head) a "
          "sequence verifies per step, 0 to 8; 0 turns speculation off. Requests may ask for "
          "less (speculative.max_draft), never more. The output is the same either way.");
ABSL_FLAG(int64_t, mtp_draft_vocab, qwen::engine::kDefaultMtpDraftVocab,
          "Speculative decoding: the MTP head drafts among the token ids below this (Qwen's most "
          "frequent) and the special tokens, reading that share of the LM head per draft step "
          "instead of all of it; 0: the whole vocabulary. The output is the same either way; "
          "only how often drafts are right can change.");
ABSL_FLAG(int64_t, image_min_pixels, 8 * 32 * 32,
          "Images are resized (aspect kept, sides multiples of 32) to at least this many pixels; "
          "each 32x32 block is one image token.");
ABSL_FLAG(int64_t, image_max_pixels, 1024 * 32 * 32,
          "... and at most this many pixels (1024 image tokens by default).");

namespace qwen::cli {

absl::StatusOr<model::KvType> KvTypeFlag() {
  return model::ParseKvType(absl::GetFlag(FLAGS_kv_type));
}

std::string VisionTowerPath(const ModelFiles& model) {
  if (std::string flag = absl::GetFlag(FLAGS_mmproj); !flag.empty()) return flag;
  if (!model.projector_path.empty()) return model.projector_path;
  if (model.model_path.empty()) return "";
  // Opening maps the file and reads its header only; the model is opened again by its user.
  auto file = gguf::GgufFile::Open(model.model_path);
  if (file.ok() && (*file)->FindTensor("v.patch_embed.weight") != nullptr) return model.model_path;
  return "";
}

}  // namespace qwen::cli

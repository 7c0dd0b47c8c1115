// Full-size GGUF files with the real shapes and type mix of Qwen3.5 and random weights, so
// speed can be measured without downloading the model.
#ifndef QWEN_CLI_SYNTHETIC_MODEL_H_
#define QWEN_CLI_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace qwen::cli {

// Names the data built into the program (synth_data.h) in place of a file.
inline constexpr char kBuiltin[] = "builtin";

struct SynthOptions {
  std::string shape = "qwen3.5-4b";  // or "tiny" (the fixtures' shape, for tests)
  std::string type = "q3_k_m";       // q3_k_m, q4_k_m or q8_0
  // A tokenizer GGUF to copy the vocabulary from, kBuiltin for Qwen3's, or "" for byte tokens.
  std::string vocab_gguf = kBuiltin;
  // A Jinja template file to store, kBuiltin for Qwen3.5's, or "" for none.
  std::string chat_template_file = kBuiltin;
  uint64_t seed = 1;
  // Append one MTP block as llama.cpp stores it (nextn_predict_layers = 1, block_count counting
  // it, blk.<n_layer>.nextn.* beside a full-attention block), for speculative decoding.
  bool mtp = false;
};

// Writes the file. Weights are random but well-formed: random quant codes under scales that
// keep every product's output near unit variance, so the forward pass stays finite.
absl::Status WriteSyntheticModel(const SynthOptions& options, const std::string& path);

// Writes a random vision tower (llama.cpp clip mmproj, projector qwen3vl_merger) of the shape
// (qwen3.5-4b: 24 blocks of 1024, 16 heads, patch 16, 2x2 merge, projection 2560; or tiny) with
// `options.type` f16, bf16, f32 or q8_0 matrices.
absl::Status WriteSyntheticMmproj(const SynthOptions& options, const std::string& path);

}  // namespace qwen::cli

#endif  // QWEN_CLI_SYNTHETIC_MODEL_H_

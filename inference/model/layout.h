// Which convention a Qwen3.5 GGUF file follows, and the names that differ between them.
//
// Two conventions exist for the same weights: llama.cpp's (what its converter writes, and what
// Ollama's newer manifests carry) and the one of Ollama's own library files ("Gen-1", what
// `ollama pull qwen3.5:4b` leaves on disk). The trunk tensors are byte-identical; the files differ
// in metadata (per-layer head_count_kv, three rope sections, no nextn_predict_layers), one tensor
// name (`ssm_dt` for `ssm_dt.bias`), and where the MTP block (`mtp.*`) and the vision tower
// (`v.*`, bundled in the text file) live. See docs/ollama.md for the whole mapping.
#ifndef QWEN_INFERENCE_MODEL_LAYOUT_H_
#define QWEN_INFERENCE_MODEL_LAYOUT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/gguf/gguf_file.h"

namespace qwen::model {

enum class FileLayout {
  kLlamaCpp,  // llama.cpp's convention (also Ollama's newer llama.cpp-compatible files)
  kOllama,    // Ollama's own library files: bundled mtp.* and v.* tensors, Ollama's keys
};

// "llama.cpp" or "ollama".
absl::string_view LayoutName(FileLayout layout);

// Ollama's layout when the file has any of its marks, as Ollama's own migrator decides: one of
// the keys `<arch>.vision.block_count`, `<arch>.image_token_id`, `<arch>.ssm.v_head_reordered`,
// `<arch>.rope.mrope_interleaved`, or a tensor named `mtp.*` or `v.*`. Otherwise llama.cpp's.
FileLayout DetectLayout(const gguf::GgufFile& file);

// One sentence on what the file is, for errors about a file that cannot be served: its
// architecture, tensor count and layout, and what it looks like when it is something else
// (a vision projector, Qwen3-Next's fused delta-net layout, a vocabulary-only file).
std::string DescribeFile(const gguf::GgufFile& file);

// A bundled multi-token-prediction tensor, under llama.cpp's name whatever the layout.
struct MtpTensor {
  std::string name;                          // llama.cpp's: blk.<n_layer + k>.nextn.eh_proj.weight
  const gguf::TensorInfo* tensor = nullptr;  // as stored
  // Ollama's converter stores the three MTP norms outside the layer as the raw Hugging Face
  // weight; llama.cpp's holds it plus one (the convention of every other norm in both files).
  bool add_one = false;
};

// The MTP block's tensors (none when the file has no MTP block), for speculative decoding.
// `n_layer` is the trunk's block count. The engine does not run them yet.
absl::StatusOr<std::vector<MtpTensor>> FindMtpTensors(const gguf::GgufFile& file, int n_layer);

// How many MTP blocks the file bundles as `mtp.layers.<k>.*` (Ollama's layout).
int CountOllamaMtpBlocks(const gguf::GgufFile& file);

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_LAYOUT_H_

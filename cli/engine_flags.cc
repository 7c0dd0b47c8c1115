#include "cli/engine_flags.h"

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "inference/gguf/gguf_file.h"

ABSL_FLAG(int32_t, ctx_size, 4096,
          "Context size in tokens: of the sequence (generate), of each slot (serve, worker); a "
          "request's prompt plus max_tokens must fit in it.");
ABSL_FLAG(std::string, kv_type, "f16", "KV cache element type: f16 or f32.");
ABSL_FLAG(std::string, mmproj, "",
          "The vision tower's GGUF (an mmproj file made for the model): enables image input. "
          "Not needed for a model file that bundles its tower (Ollama's) or an ollama: model "
          "with a projector layer. Without any, requests with images are refused.");
namespace {
// $QWEN_PACKED_DIR lets a test suite keep its copies out of the machine's /dev/shm.
std::string DefaultPackedDir() {
  const char* env = std::getenv("QWEN_PACKED_DIR");
  return env != nullptr ? env : "/dev/shm";
}
}  // namespace

ABSL_FLAG(std::string, packed_dir, DefaultPackedDir(),
          "Directory for the packed copy of the weight matrices (the layout the AVX-512 kernels "
          "read fastest; the same size as the weights). It is written once by the first process "
          "that loads a model file and mapped by every other, so a tmpfs such as /dev/shm holds "
          "it in memory once for all workers. When it cannot be made (too little space, no "
          "AVX-512) the model computes from the file's own layout, slower, and says so. Empty: "
          "never make it. Default: $QWEN_PACKED_DIR if set, else /dev/shm.");
ABSL_FLAG(int64_t, image_min_pixels, 8 * 32 * 32,
          "Images are resized (aspect kept, sides multiples of 32) to at least this many pixels; "
          "each 32x32 block is one image token.");
ABSL_FLAG(int64_t, image_max_pixels, 1024 * 32 * 32,
          "... and at most this many pixels (1024 image tokens by default).");

namespace qwen::cli {

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

#include "cli/engine_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int32_t, ctx_size, 4096,
          "Context size in tokens: of the sequence (generate), of each slot (serve, worker); a "
          "request's prompt plus max_tokens must fit in it.");
ABSL_FLAG(std::string, kv_type, "f16", "KV cache element type: f16 or f32.");
ABSL_FLAG(std::string, mmproj, "",
          "The vision tower's GGUF (an mmproj file made for the model): enables image input. "
          "Without it, requests with images are refused.");
ABSL_FLAG(int64_t, image_min_pixels, 8 * 32 * 32,
          "Images are resized (aspect kept, sides multiples of 32) to at least this many pixels; "
          "each 32x32 block is one image token.");
ABSL_FLAG(int64_t, image_max_pixels, 1024 * 32 * 32,
          "... and at most this many pixels (1024 image tokens by default).");

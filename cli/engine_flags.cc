#include "cli/engine_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int32_t, ctx_size, 4096,
          "Context size in tokens: of the sequence (generate), of each slot (serve, worker); a "
          "request's prompt plus max_tokens must fit in it.");
ABSL_FLAG(std::string, kv_type, "f16", "KV cache element type: f16 or f32.");

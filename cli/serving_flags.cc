#include "cli/serving_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int32_t, slots, 4,
          "Sequences each worker runs at once (continuously batched); each slot holds a context "
          "of --ctx_size tokens.");
ABSL_FLAG(int32_t, step_tokens, 256,
          "Token budget of one engine step: the next token of every decoding sequence first, "
          "then chunks of waiting prompts, so long prompts do not stall running streams.");

#include "cli/serving_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int32_t, slots, 4,
          "Sequences each worker runs at once (continuously batched); each slot holds a context "
          "of --ctx_size tokens.");
ABSL_FLAG(int32_t, prefill_chunk, 256,
          "Prompt tokens a worker's engine step prefills on top of one token per decoding "
          "sequence: smaller keeps running streams' inter-token latency low while a long prompt "
          "is prefilled, larger prefills faster.");
ABSL_FLAG(bool, testing_allow_fault_injection, false,
          "Testing only: workers take SIGUSR1 (wedge the engine thread at its next token) and "
          "SIGUSR2 (allocate memory until the worker's memory limit is hit). Never enable in "
          "production.");

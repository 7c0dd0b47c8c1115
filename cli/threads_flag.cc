// --threads, for the commands that compute (see model_flag.cc for why a file of its own).
#include "absl/flags/flag.h"
#include "cli/common_flags.h"

ABSL_FLAG(int32_t, threads, 0, "Compute threads (0: one per CPU core the process may run on).");

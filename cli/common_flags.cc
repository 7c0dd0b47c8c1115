#include "cli/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Path of the GGUF model file.");
ABSL_FLAG(bool, json, false, "Print machine-readable JSON instead of text.");
ABSL_FLAG(int32_t, threads, 0, "Compute threads (0: one per CPU core the process may run on).");

// --json, for the commands that can print JSON (see model_flag.cc for why a file of its own).
#include "absl/flags/flag.h"
#include "cli/common_flags.h"

ABSL_FLAG(bool, json, false,
          "Print JSON instead of text (each command's description gives the shape).");

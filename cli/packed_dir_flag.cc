// --packed_dir, for the commands that load the model's weights (generate, bench, serve, worker).
// A file of its own for the reason in model_flag.cc.
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "cli/engine_flags.h"

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

// GGUF reader on arbitrary bytes: GgufFile::FromBuffer, then every metadata value and tensor info
// through the public accessors, then the readers that consume the metadata (gguf_walk.h).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/gguf_walk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qwen::fuzz::WalkGguf(data, size);
  return 0;
}

// What both GGUF fuzz targets do with a buffer: parse it, read every metadata value and tensor
// info through the public accessors, check that everything points inside the buffer, and hand
// the file to the readers that consume GGUF metadata (model config, tokenizer, chat template).
#ifndef QWEN_TESTS_FUZZ_GGUF_WALK_H_
#define QWEN_TESTS_FUZZ_GGUF_WALK_H_

#include <cstddef>
#include <cstdint>

namespace qwen::fuzz {

// Aborts (a finding) when a parsed file breaks a property of GgufFile's contract; crashes and
// sanitizer reports come from the code itself.
void WalkGguf(const uint8_t* data, size_t size);

}  // namespace qwen::fuzz

#endif  // QWEN_TESTS_FUZZ_GGUF_WALK_H_

// The output parser on arbitrary model output (chat::CheckOutputParser): the first byte picks the
// options (reasoning open, tool schema), the rest is the text. Fed whole, one byte at a time and
// in uneven chunks, the results must agree, and the streamed deltas must add up to the result.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "tests/fuzz/chat_fuzz_entry.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  qwen::fuzz::FailOnInternal(qwen::chat::CheckOutputParser(text));
  return 0;
}

// The chat renderer on arbitrary JSON requests with Qwen3.5's own template
// (tests/data/chat/qwen3.5-chat-template.jinja): never a crash, a hang or an INTERNAL error;
// invalid conversations are ordinary INVALID_ARGUMENT errors.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "inference/chat/fuzz_entry.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const std::string* source;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  source = new std::string(
      qwen::fuzz::ReadFileOrDie(qwen::fuzz::DataPath("chat/qwen3.5-chat-template.jinja")));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view request(reinterpret_cast<const char*>(data), size);
  qwen::fuzz::FailOnInternal(qwen::chat::RenderChatForFuzzing(*source, request).status());
  return 0;
}

// The chat renderer on arbitrary JSON requests with Qwen3.5's own template
// (tests/data/chat/qwen3.5-chat-template.jinja): never a crash, a hang or an INTERNAL error;
// invalid conversations are ordinary INVALID_ARGUMENT errors. The template is compiled once,
// with the limits RenderChatForFuzzing uses (tests/fuzz/chat_fuzz_entry.cc), and rendered per
// input.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "inference/chat/chat_template.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"

namespace {

const qwen::chat::ChatTemplate* chat_template;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const std::string source =
      qwen::fuzz::ReadFileOrDie(qwen::fuzz::DataPath("chat/qwen3.5-chat-template.jinja"));
  qwen::chat::ChatTemplateOptions options;
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_loop_iterations = 100000;
  auto t = qwen::chat::ChatTemplate::FromSource(source, options);
  if (!t.ok()) qwen::fuzz::Fail(t.status().ToString());
  chat_template = t->release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto request = nlohmann::ordered_json::parse(data, data + size, nullptr,
                                                     /*allow_exceptions=*/false);
  if (request.is_discarded()) return 0;
  qwen::fuzz::FailOnInternal(chat_template->Render(request).status());
  return 0;
}

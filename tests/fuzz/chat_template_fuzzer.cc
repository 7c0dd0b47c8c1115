// The Jinja interpreter on arbitrary templates, rendered with one fixed conversation that has a
// system prompt, tools, an assistant turn with reasoning and a tool call, a tool response and
// multimodal content: never a crash, a hang or an INTERNAL error (the renderer's limits bound
// output, loop iterations and nesting).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "tests/fuzz/chat_fuzz_entry.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr absl::string_view kRequest = R"json({
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image"}]},
    {"role": "assistant", "reasoning_content": "Need a tool.", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                     "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "content": "{\"t\": 21}"},
    {"role": "assistant", "content": "<think>\nok\n</think>\n\nIt is 21 C."},
    {"role": "user", "content": "Thanks"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"},
             "days": {"type": "integer"}}, "required": ["city"]}}}],
  "enable_thinking": true, "add_generation_prompt": true, "add_vision_id": true
})json";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view source(reinterpret_cast<const char*>(data), size);
  qwen::fuzz::FailOnInternal(qwen::chat::RenderChatForFuzzing(source, kRequest).status());
  return 0;
}

// Entry points for fuzzing the chat code: pure functions of their input bytes. They never crash
// or hang on any input; a property that does not hold comes back as an INTERNAL error, so a
// libFuzzer target only has to abort on that code.
#ifndef QWEN_TESTS_FUZZ_CHAT_FUZZ_ENTRY_H_
#define QWEN_TESTS_FUZZ_CHAT_FUZZ_ENTRY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwen::chat {

// Compiles `template_source` and renders it with `request_json` (any bytes; invalid JSON is an
// INVALID_ARGUMENT error) under limits small enough for fuzzing (1 MiB of output, 100,000 loop
// iterations). Errors are the ordinary ones of ChatTemplate; none is INTERNAL.
absl::StatusOr<std::string> RenderChatForFuzzing(absl::string_view template_source,
                                                 absl::string_view request_json);

// Parses `data` as model output with OutputParser and checks that feeding it whole, one byte at
// a time and in uneven chunks gives the same result, and that the deltas concatenate to the
// final reasoning and content. The first byte picks the options (reasoning open or not, with
// or without a tool schema); the rest is the text.
absl::Status CheckOutputParser(absl::string_view data);

}  // namespace qwen::chat

#endif  // QWEN_TESTS_FUZZ_CHAT_FUZZ_ENTRY_H_

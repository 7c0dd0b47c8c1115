// The data `qwen synth` writes into its files by default, built into the program so that it
// works from any directory and from an installed binary: the Qwen3 vocabulary (a tokenizer-only
// GGUF, 5.9 MB) and Qwen3.5's chat template, the fixtures tests/data/tokenizer/
// qwen3-vocab-qwen35pre.gguf and tests/data/chat/qwen3.5-chat-template.jinja as they were at
// build time.
#ifndef QWEN_CLI_SYNTH_DATA_H_
#define QWEN_CLI_SYNTH_DATA_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace qwen::cli {

absl::Span<const uint8_t> BuiltinVocabGguf();
absl::string_view BuiltinChatTemplate();

}  // namespace qwen::cli

#endif  // QWEN_CLI_SYNTH_DATA_H_

#include "cli/synth_data.h"

// The files are assembled in with .incbin (the paths come from CMake, which also makes this
// object depend on them): no multi-megabyte array literal for the compiler to parse.
#ifndef QWEN_SYNTH_VOCAB_FILE
#error "QWEN_SYNTH_VOCAB_FILE must name the vocabulary GGUF"
#endif
#ifndef QWEN_SYNTH_TEMPLATE_FILE
#error "QWEN_SYNTH_TEMPLATE_FILE must name the chat template"
#endif

__asm__(
    ".pushsection .rodata\n"
    ".balign 64\n"
    "qwen_synth_vocab_begin:\n"
    ".incbin \"" QWEN_SYNTH_VOCAB_FILE
    "\"\n"
    "qwen_synth_vocab_end:\n"
    ".balign 64\n"
    "qwen_synth_template_begin:\n"
    ".incbin \"" QWEN_SYNTH_TEMPLATE_FILE
    "\"\n"
    "qwen_synth_template_end:\n"
    ".popsection\n");

extern "C" {
extern const uint8_t qwen_synth_vocab_begin[] __asm__("qwen_synth_vocab_begin");
extern const uint8_t qwen_synth_vocab_end[] __asm__("qwen_synth_vocab_end");
extern const char qwen_synth_template_begin[] __asm__("qwen_synth_template_begin");
extern const char qwen_synth_template_end[] __asm__("qwen_synth_template_end");
}

namespace qwen::cli {

absl::Span<const uint8_t> BuiltinVocabGguf() {
  return absl::MakeConstSpan(qwen_synth_vocab_begin, qwen_synth_vocab_end);
}

absl::string_view BuiltinChatTemplate() {
  return absl::string_view(
      qwen_synth_template_begin,
      static_cast<size_t>(qwen_synth_template_end - qwen_synth_template_begin));
}

}  // namespace qwen::cli

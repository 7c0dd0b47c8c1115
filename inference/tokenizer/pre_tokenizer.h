// Splitting normalised text into the "words" that byte-level BPE encodes one at a time.
#ifndef QWEN_INFERENCE_TOKENIZER_PRE_TOKENIZER_H_
#define QWEN_INFERENCE_TOKENIZER_PRE_TOKENIZER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwen::tokenizer {

// A compiled pre-tokenizer regex, named as in the GGUF key tokenizer.ggml.pre ("qwen2",
// "qwen35"). The patterns are those of the Hugging Face tokenizer.json files, run by PCRE2 in
// UTF + UCP mode (JIT-compiled when available). `\s` is spelled out as the Unicode White_Space
// property, which is what the Hugging Face (Oniguruma) regex matches; PCRE2's own \s leaves out
// U+0085.
//
// Immutable and thread-safe after construction: Split() allocates its own match data.
class PreTokenizer {
 public:
  // INVALID_ARGUMENT for a name this code does not know: a silent fallback to another regex
  // would tokenize differently from the model's training.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(absl::string_view name);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  const std::string& name() const { return name_; }

  // Calls `fn` for each piece of `text`, in order; the pieces concatenate to `text`.
  // `text` must be well-formed UTF-8 (the tokenizer sanitises its input first).
  void Split(absl::string_view text, const std::function<void(absl::string_view)>& fn) const;

  // The known names, for error messages and help text.
  static const char* KnownNames();

 private:
  PreTokenizer() = default;
  std::string name_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace qwen::tokenizer

#endif  // QWEN_INFERENCE_TOKENIZER_PRE_TOKENIZER_H_

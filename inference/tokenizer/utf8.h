// UTF-8 helpers shared by the tokenizer and the chat code.
#ifndef QWEN_INFERENCE_TOKENIZER_UTF8_H_
#define QWEN_INFERENCE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace qwen::tokenizer {

// The Unicode replacement character U+FFFD, as UTF-8.
inline constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

// Length of the well-formed UTF-8 sequence starting at `s[0]`, or 0 when the bytes there are
// ill-formed. Returns -1 when `s` ends inside a sequence that could still become well-formed
// (a truncated but so far valid prefix). `s` must not be empty.
int Utf8SequenceLength(absl::string_view s);

// Appends the valid UTF-8 prefix of `bytes` to `out`, replacing each maximal ill-formed subpart
// with U+FFFD (the rule of Unicode §3.9 that Rust's from_utf8_lossy and WHATWG also follow).
// When `final` is false, a truncated sequence at the end is left unconsumed so that more bytes
// may complete it. Returns the number of bytes consumed.
size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out);

// `bytes` as well-formed UTF-8 (ill-formed parts replaced with U+FFFD).
std::string ToValidUtf8(absl::string_view bytes);

bool IsValidUtf8(absl::string_view bytes);

// Decodes the code point at `s[*pos]` of well-formed UTF-8 and advances `*pos`.
char32_t DecodeUtf8(absl::string_view s, size_t* pos);
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace qwen::tokenizer

#endif  // QWEN_INFERENCE_TOKENIZER_UTF8_H_

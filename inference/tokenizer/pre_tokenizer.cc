#include "inference/tokenizer/pre_tokenizer.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qwen::tokenizer {
namespace {

// Unicode White_Space, for use inside a character class.
#define QWEN_WS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

// Qwen2 / Qwen2.5 / Qwen3 tokenizer.json:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
constexpr char kQwen2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}"
    "| ?[^" QWEN_WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" QWEN_WS "]*[\\r\\n]+"
    "|[" QWEN_WS "]+(?![^" QWEN_WS "])"
    "|[" QWEN_WS "]+";

// Qwen3.5: as Qwen2 but combining marks (\p{M}) stay with the letters they follow.
constexpr char kQwen35[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+"
    "|\\p{N}"
    "| ?[^" QWEN_WS "\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
    "|[" QWEN_WS "]*[\\r\\n]+"
    "|[" QWEN_WS "]+(?![^" QWEN_WS "])"
    "|[" QWEN_WS "]+";

#undef QWEN_WS

const char* PatternFor(absl::string_view name) {
  if (name == "qwen2") return kQwen2;
  if (name == "qwen35") return kQwen35;
  return nullptr;
}

}  // namespace

const char* PreTokenizer::KnownNames() { return "qwen2, qwen35"; }

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(absl::string_view name) {
  const char* pattern = PatternFor(name);
  if (pattern == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported pre-tokenizer \"", name,
                                                   "\" (tokenizer.ggml.pre); supported: ",
                                                   KnownNames()));
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset,
                                   nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InternalError(absl::StrCat("pre-tokenizer regex \"", name, "\" at ", offset,
                                            ": ", reinterpret_cast<const char*>(message)));
  }
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->name_ = std::string(name);
  pre->code_ = code;
  pre->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return pre;
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void PreTokenizer::Split(absl::string_view text,
                         const std::function<void(absl::string_view)>& fn) const {
  if (text.empty()) return;
  auto* code = static_cast<pcre2_code*>(code_);
  // Match data is per call (and per thread): the compiled code is shared read-only.
  thread_local struct MatchData {
    pcre2_match_data* md = pcre2_match_data_create(4, nullptr);
    ~MatchData() { pcre2_match_data_free(md); }
  } tls;
  pcre2_match_data* md = tls.md;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  while (pos < n) {
    int rc = jit_ ? pcre2_jit_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr)
                  : pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    size_t start = n, end = n;
    if (rc > 0) {
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      start = ov[0];
      end = ov[1];
    }
    // The final alternative matches any whitespace and the others cover every non-space
    // character, so every position starts a match; a gap could only come from a PCRE2 failure
    // (e.g. a JIT stack limit), and is then kept as one piece rather than dropped.
    if (start > pos) fn(text.substr(pos, start - pos));
    if (end <= start) {
      if (start >= n) break;
      // Empty match: cannot happen with these patterns; step one character to stay safe.
      size_t step = 1;
      while (start + step < n && (static_cast<uint8_t>(text[start + step]) & 0xC0) == 0x80) ++step;
      fn(text.substr(start, step));
      pos = start + step;
      continue;
    }
    fn(text.substr(start, end - start));
    pos = end;
  }
}

}  // namespace qwen::tokenizer

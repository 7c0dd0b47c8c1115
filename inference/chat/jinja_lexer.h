// The Jinja lexer: template source to tokens (text, tag delimiters, names, literals, operators),
// with Jinja's whitespace control (trim_blocks, lstrip_blocks, - and + modifiers) applied to the
// text tokens. Internal to the interpreter (jinja.cc wires lexer, parser and evaluator).
#ifndef QWEN_INFERENCE_CHAT_JINJA_LEXER_H_
#define QWEN_INFERENCE_CHAT_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/chat/jinja.h"

namespace qwen::chat::jinja {

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  std::string text;
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0;
};

// FAILED_PRECONDITION "template syntax error (line N): ...", the parse errors' form.
absl::Status SyntaxError(int line, absl::string_view message);

// The tokens of `source`, ending with kEof. FAILED_PRECONDITION naming the line for a
// malformed tag, string or number.
absl::StatusOr<std::vector<Token>> Lex(absl::string_view source, const Options& options);

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_LEXER_H_

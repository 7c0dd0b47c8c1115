// The Jinja parser: tokens (jinja_lexer.h) to the syntax tree (jinja_ast.h). Internal to the
// interpreter.
#ifndef QWEN_INFERENCE_CHAT_JINJA_PARSER_H_
#define QWEN_INFERENCE_CHAT_JINJA_PARSER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/chat/jinja.h"
#include "inference/chat/jinja_ast.h"
#include "inference/chat/jinja_lexer.h"

namespace qwen::chat::jinja {

// The template's statements in order. FAILED_PRECONDITION naming the line for a syntax error or
// an unsupported construct; RESOURCE_EXHAUSTED past limits.max_parse_depth.
absl::StatusOr<std::unique_ptr<SequenceNode>> ParseTokens(std::vector<Token> tokens,
                                                          const Limits& limits);

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_PARSER_H_

// A small Jinja2 interpreter for chat templates: lexer, parser and tree-walking evaluator over
// jinja::Value. It covers what Qwen-family and similar Hugging Face chat templates use and fails
// with a clear error (naming the line) on anything else; it never guesses.
//
// Supported: {{ }}, {% %}, {# #} with whitespace control ({%- -%}, {%+) and the trim_blocks /
// lstrip_blocks behaviour Hugging Face renders chat templates with; if/elif/else, for (tuple
// targets, `if` filter, else, loop.index/index0/revindex/first/last/length/previtem/nextitem,
// loop.cycle), break/continue, set (names, tuples, namespace attributes, block set), macro (with
// default arguments), raw, generation; expressions with Python operators, slicing, literals,
// conditional expressions, filters, tests, string/dict methods; globals raise_exception,
// namespace, range, dict, strftime_now.
#ifndef QWEN_INFERENCE_CHAT_JINJA_H_
#define QWEN_INFERENCE_CHAT_JINJA_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/chat/jinja_value.h"

namespace qwen::chat::jinja {

// Bounds that keep a hostile template or input from exhausting memory, stack or time. Exceeding
// one gives RESOURCE_EXHAUSTED naming the limit.
struct Limits {
  size_t max_output_bytes = 64 << 20;
  int64_t max_loop_iterations = 1 << 20;  // over the whole render
  int max_call_depth = 100;               // nested macro calls
  int max_parse_depth = 200;              // nesting of blocks and expressions
  size_t max_template_bytes = 4 << 20;
};

struct Options {
  // Hugging Face's apply_chat_template compiles with trim_blocks and lstrip_blocks on.
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  Limits limits;
};

class Node;  // parsed template (jinja_ast.h)

// Error codes:
//   FAILED_PRECONDITION  syntax error or unsupported construct (from Parse)
//   INVALID_ARGUMENT     the template raised an exception (message verbatim, as
//                        raise_exception() gave it) or evaluation failed on the given data
//                        (message starts with "template error")
//   RESOURCE_EXHAUSTED   a limit was hit
//
// Immutable after Parse() and thread-safe: Render() keeps all state on its own stack.
class Template {
 public:
  static absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source,
                                                         const Options& options = Options());
  ~Template();

  // Renders with the variables of `context` (an object) plus the built-in globals.
  absl::StatusOr<std::string> Render(const Value& context) const;

 private:
  Template() = default;
  Options options_;
  std::unique_ptr<Node> root_;
};

// True for a status produced by the template's raise_exception().
bool IsRaisedByTemplate(const absl::Status& status);

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_H_

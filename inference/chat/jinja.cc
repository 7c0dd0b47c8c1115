// The interpreter's entry points: Template::Parse (lexer, then parser) and Render (the
// evaluator), the per-render Interpreter, and raise_exception's errors. The three stages live in
// jinja_lexer.cc, jinja_parser.cc and jinja_eval.cc.
#include "inference/chat/jinja.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/jinja_ast.h"
#include "inference/chat/jinja_internal.h"
#include "inference/chat/jinja_lexer.h"
#include "inference/chat/jinja_parser.h"
#include "inference/common/status_macros.h"

namespace qwen::chat::jinja {

namespace {
constexpr char kRaisedPayload[] = "type.qwen/jinja.raise_exception";
}  // namespace

absl::Status RaisedError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kRaisedPayload, absl::Cord("1"));
  return status;
}

bool IsRaisedByTemplate(const absl::Status& status) {
  return status.GetPayload(kRaisedPayload).has_value();
}

// ---------------------------------------------------------------------------------------------
// Interpreter

Interpreter::~Interpreter() {
  for (Value& ns : namespaces) ns.object().items.clear();
}

Value Interpreter::Lookup(const std::string& name) const {
  for (Scope* s = scope_; s != nullptr; s = s->parent) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  const auto& globals = Globals();
  auto it = globals.find(name);
  if (it != globals.end()) return it->second;
  return Value::Undefined(name);
}

absl::Status Interpreter::Charge(size_t bytes) {
  charged_ += bytes;
  if (charged_ > limits_.max_output_bytes * 8) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "template produced more than ", limits_.max_output_bytes * 8, " bytes of strings"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::CountIteration() {
  if (++iterations_ > limits_.max_loop_iterations) {
    return absl::ResourceExhaustedError(
        absl::StrCat("template ran more than ", limits_.max_loop_iterations, " loop iterations"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Append(std::string* out, absl::string_view text) {
  RETURN_IF_ERROR(Charge(text.size()));
  if (out->size() + text.size() > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("template output exceeds ", limits_.max_output_bytes, " bytes"));
  }
  out->append(text.data(), text.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Template

Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source,
                                                          const Options& options) {
  if (source.size() > options.limits.max_template_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("template larger than ",
                                                     options.limits.max_template_bytes, " bytes"));
  }
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source, options));
  ASSIGN_OR_RETURN(std::unique_ptr<SequenceNode> root,
                   ParseTokens(std::move(tokens), options.limits));
  std::unique_ptr<Template> t(new Template());
  t->options_ = options;
  t->root_ = std::move(root);
  return t;
}

absl::StatusOr<std::string> Template::Render(const Value& context) const {
  Interpreter in(options_.limits);
  Scope root;
  if (context.is_object()) {
    for (const auto& [k, v] : context.object().items) root.vars[k] = v;
  }
  in.set_root(&root);
  std::string out;
  RETURN_IF_ERROR(root_->Exec(in, &out));
  return out;
}

}  // namespace qwen::chat::jinja

// Internals of the Jinja interpreter shared by its stages (jinja_lexer.cc, jinja_parser.cc,
// jinja_eval.cc, wired by jinja.cc) and jinja_builtins.cc (filters, tests, methods, globals).
// Not a public API.
#ifndef QWEN_INFERENCE_CHAT_JINJA_INTERNAL_H_
#define QWEN_INFERENCE_CHAT_JINJA_INTERNAL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "inference/chat/jinja.h"
#include "inference/chat/jinja_value.h"

namespace qwen::chat::jinja {

// Deepest list/dict nesting a template may build or receive.
inline constexpr int kMaxValueDepth = 256;

struct Scope {
  absl::flat_hash_map<std::string, Value> vars;
  Scope* parent = nullptr;
};

enum class Flow { kNormal, kBreak, kContinue };

// Per-render state. Lives on the stack of Template::Render.
class Interpreter {
 public:
  explicit Interpreter(const Limits& limits) : limits_(limits) {}
  ~Interpreter();

  const Limits& limits() const { return limits_; }

  Value Lookup(const std::string& name) const;
  void Set(const std::string& name, Value value) { scope_->vars[name] = std::move(value); }
  Scope* scope() const { return scope_; }
  Scope* root() const { return root_; }
  void set_scope(Scope* scope) { scope_ = scope; }
  void set_root(Scope* root) {
    root_ = root;
    scope_ = root;
  }

  // Accounts for `bytes` of string data produced; fails once the total passes the budget that
  // bounds a render's work (a few times the output limit).
  absl::Status Charge(size_t bytes);
  absl::Status CountIteration();
  absl::Status Append(std::string* out, absl::string_view text);

  int call_depth = 0;
  Flow flow = Flow::kNormal;
  // Namespaces created by this render; emptied at the end so that reference cycles built by a
  // template (ns.self = ns) are freed.
  std::vector<Value> namespaces;

 private:
  const Limits& limits_;
  Scope* root_ = nullptr;
  Scope* scope_ = nullptr;
  int64_t iterations_ = 0;
  size_t charged_ = 0;
};

// Error helpers. Errors from evaluation carry the template line.
inline absl::Status EvalError(int line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("template error (line ", line, "): ", message));
}
absl::Status RaisedError(absl::string_view message);

// Builtins (jinja_builtins.cc).
absl::StatusOr<Value> ApplyFilter(Interpreter& in, const std::string& name, const Value& input,
                                  const CallArgs& args, int line);
absl::StatusOr<bool> ApplyTest(Interpreter& in, const std::string& name, const Value& input,
                               const CallArgs& args, int line);
bool HasTest(const std::string& name);
// A method of a string, list or dict (`s.startswith(x)`, `d.items()`); NOT_FOUND when `name`
// is not a method of that value's type.
absl::StatusOr<Value> CallMethod(Interpreter& in, const Value& self, const std::string& name,
                                 const CallArgs& args, int line);
// Globals visible in every template (raise_exception, namespace, range, dict, strftime_now).
const absl::flat_hash_map<std::string, Value>& Globals();

// Python-style helpers used by both files.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v, int line);
absl::StatusOr<bool> Contains(const Value& container, const Value& item, int line);
absl::StatusOr<int> Compare(const Value& a, const Value& b, int line);  // -1, 0, 1
std::u32string ToCodePoints(absl::string_view s);
std::string FromCodePoints(const std::u32string& s);

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_INTERNAL_H_

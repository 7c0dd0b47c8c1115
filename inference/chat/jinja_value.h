// The value type of the Jinja interpreter: JSON-like data plus Jinja's own kinds (undefined,
// callables, namespaces), with Python semantics where templates rely on them (truthiness,
// str(), repr(), equality, json.dumps).
#ifndef QWEN_INFERENCE_CHAT_JINJA_VALUE_H_
#define QWEN_INFERENCE_CHAT_JINJA_VALUE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qwen::chat::jinja {

class Value;

// Deepest JSON nesting accepted from a request.
inline constexpr int kMaxJsonDepth = 128;

// Positional and keyword arguments of a call.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`, or nullptr when absent.
  const Value* Get(size_t index, absl::string_view name) const;
};

class Interpreter;  // what a callable may use (output buffers, limits); see jinja.cc
using NativeFunction = std::function<absl::StatusOr<Value>(Interpreter&, const CallArgs&)>;

// Lists and objects have reference semantics, like Python's: copies of a Value share them, which
// is what namespace() attribute assignment needs. Object keys keep insertion order (tojson and
// |items follow it).
class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };
  using Array = std::vector<Value>;
  struct Object {
    std::vector<std::pair<std::string, Value>> items;
    bool is_namespace = false;
    const Value* Find(absl::string_view key) const;
    void Set(absl::string_view key, Value value);
  };
  struct Callable {
    std::string name;
    NativeFunction fn;
  };

  Value() = default;  // undefined
  static Value Undefined(std::string name = "") {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  static Value Bool(bool b) {
    Value v(Kind::kBool);
    v.int_ = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(Kind::kInt);
    v.int_ = i;
    return v;
  }
  static Value Float(double f) {
    Value v(Kind::kFloat);
    v.float_ = f;
    return v;
  }
  static Value String(std::string s) {
    Value v(Kind::kString);
    v.str_ = std::move(s);
    return v;
  }
  static Value String(absl::string_view s) { return String(std::string(s.data(), s.size())); }
  static Value String(const char* s) { return String(std::string(s)); }
  // Lists and dicts record how deeply they nest (1 + the deepest child) so that the interpreter
  // can refuse to build structures deep enough to overflow the stack when printed or freed.
  static Value MakeArray(Array items = {}) {
    Value v(Kind::kArray);
    for (const Value& item : items) v.depth_ = std::max(v.depth_, item.depth_);
    ++v.depth_;
    v.array_ = std::make_shared<Array>(std::move(items));
    return v;
  }
  static Value MakeObjectFrom(std::vector<std::pair<std::string, Value>> items) {
    Value v = MakeObject();
    for (auto& [key, value] : items) {
      v.depth_ = std::max(v.depth_, value.depth_ + 1);
      v.object_->Set(key, std::move(value));
    }
    return v;
  }
  static Value MakeObject() {
    Value v(Kind::kObject);
    v.depth_ = 1;
    v.object_ = std::make_shared<Object>();
    return v;
  }
  static Value MakeCallable(std::string name, NativeFunction fn) {
    Value v(Kind::kCallable);
    v.callable_ = std::make_shared<Callable>(Callable{std::move(name), std::move(fn)});
    return v;
  }
  // JSON to Value. Fails for nesting deeper than `max_depth`.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json, int max_depth = 256);

  Kind kind() const { return kind_; }
  int depth() const { return depth_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_double() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }
  // For an undefined value: the name it was looked up by (for error messages).
  const std::string& undefined_name() const { return str_; }
  Array& array() const { return *array_; }
  Object& object() const { return *object_; }
  const Callable& callable() const { return *callable_; }

  // Python truthiness.
  bool Truthy() const;
  // Python str(): what {{ value }} prints (undefined prints nothing).
  std::string ToString() const;
  // Python repr(), used by str() of lists and dicts.
  std::string Repr() const;
  // Python ==, numbers compared by value across int and float.
  bool Equals(const Value& other) const;
  // Jinja's type names for error messages ("string", "list", ...).
  const char* TypeName() const;

  struct JsonOptions {
    int indent = -1;  // < 0: single line
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
    bool ensure_ascii = false;
  };
  // Python json.dumps, as Hugging Face's tojson filter calls it (ensure_ascii=False by default).
  // Fails for undefined and callables.
  absl::StatusOr<std::string> ToJson(const JsonOptions& options) const;
  absl::StatusOr<std::string> ToJson() const { return ToJson(JsonOptions()); }

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  absl::Status AppendJson(const JsonOptions& options, int level, int depth,
                          std::string* out) const;

  Kind kind_ = Kind::kUndefined;
  int depth_ = 0;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Callable> callable_;
};

// Python's repr() of a float ("1.0", "1e-06", "inf").
std::string PythonFloatRepr(double f);
// A JSON string literal as Python's json.dumps writes it.
void AppendJsonString(absl::string_view s, bool ensure_ascii, std::string* out);

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_VALUE_H_

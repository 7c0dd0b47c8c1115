#include "inference/chat/jinja.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/jinja_internal.h"
#include "inference/common/status_macros.h"
#include "inference/tokenizer/utf8.h"

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
// Lexer

namespace {

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

absl::Status SyntaxError(int line, absl::string_view message) {
  return absl::FailedPreconditionError(
      absl::StrCat("template syntax error (line ", line, "): ", message));
}

class Lexer {
 public:
  Lexer(absl::string_view source, const Options& options) : src_(source), options_(options) {}

  absl::StatusOr<std::vector<Token>> Run() {
    // Jinja drops one trailing newline of the template (keep_trailing_newline=False).
    if (!src_.empty() && src_.back() == '\n') {
      src_.remove_suffix(1);
      if (!src_.empty() && src_.back() == '\r') src_.remove_suffix(1);
    }
    size_t pos = 0;
    bool trim_next_newline = false;
    bool strip_next_all = false;
    while (pos <= src_.size()) {
      size_t at = FindTagStart(pos);
      std::string text(src_.substr(pos, at - pos));
      if (strip_next_all) {
        size_t k = 0;
        while (k < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (trim_next_newline) {
        if (absl::StartsWith(text, "\r\n")) {
          text.erase(0, 2);
        } else if (absl::StartsWith(text, "\n")) {
          text.erase(0, 1);
        }
      }
      if (at >= src_.size()) {
        EmitText(std::move(text), LineAt(pos));
        break;
      }
      const char kind = src_[at + 1];  // '{', '%' or '#'
      const char modifier = at + 2 < src_.size() ? src_[at + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
          text.pop_back();
        }
      } else if (options_.lstrip_blocks && kind != '{' && modifier != '+') {
        // Blanks between the start of a line and a block tag go (lstrip_blocks). The tail of
        // `text` is still the source just before the tag, so the source says where the line
        // starts.
        size_t k = text.size();
        while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
        const size_t blanks_start = at - (text.size() - k);
        if (k < text.size() && (blanks_start == 0 || src_[blanks_start - 1] == '\n')) {
          text.erase(k);
        }
      }
      EmitText(std::move(text), LineAt(pos));
      size_t inner = at + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      int line = LineAt(at);
      if (kind == '#') {
        size_t end = src_.find("#}", inner);
        if (end == absl::string_view::npos) return SyntaxError(line, "unclosed comment");
        const bool strip = end > inner && src_[end - 1] == '-';
        strip_next_all = strip;
        trim_next_newline = !strip && options_.trim_blocks;
        pos = end + 2;
        continue;
      }
      tokens_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", line});
      size_t block_start = tokens_.size();
      ASSIGN_OR_RETURN(size_t after, LexTag(inner, kind == '{' ? '}' : '%', &strip_next_all,
                                            &trim_next_newline));
      if (kind == '{') trim_next_newline = false;  // trim_blocks is for block tags only
      pos = after;
      // {% raw %}...{% endraw %}: the body is text.
      if (kind == '%' && tokens_.size() == block_start + 2 &&
          tokens_[block_start].type == Tok::kName && tokens_[block_start].text == "raw") {
        tokens_.resize(block_start - 1);
        ASSIGN_OR_RETURN(pos, LexRaw(pos, line, &strip_next_all, &trim_next_newline));
      }
    }
    tokens_.push_back({Tok::kEof, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t pos) const {
    while (true) {
      size_t at = src_.find('{', pos);
      if (at == absl::string_view::npos || at + 1 >= src_.size()) return src_.size();
      const char c = src_[at + 1];
      if (c == '{' || c == '%' || c == '#') return at;
      pos = at + 1;
    }
  }

  int LineAt(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  void EmitText(std::string text, int line) {
    if (text.empty()) return;
    // Jinja turns \r\n in template data into \n.
    std::string normalized;
    normalized.reserve(text.size());
    for (size_t k = 0; k < text.size(); ++k) {
      if (text[k] == '\r' && k + 1 < text.size() && text[k + 1] == '\n') continue;
      normalized.push_back(text[k]);
    }
    tokens_.push_back({Tok::kText, std::move(normalized), line});
  }

  // Lexes expression tokens from `pos` up to the closing "}}" / "%}" (optionally "-" or "+"
  // first). Returns the position after the closing delimiter.
  absl::StatusOr<size_t> LexTag(size_t pos, char close, bool* strip_next_all,
                                bool* trim_next_newline) {
    int depth = 0;  // (), [], {} nesting: "}}" inside a dict literal is not the end
    while (true) {
      while (pos < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[pos]))) ++pos;
      const int line = LineAt(pos);
      if (pos >= src_.size()) return SyntaxError(line, "unclosed tag");
      const char c = src_[pos];
      if (depth == 0) {
        for (char mod : {'-', '+', '\0'}) {
          size_t p = pos;
          if (mod != '\0') {
            if (src_[p] != mod) continue;
            ++p;
          }
          if (p + 1 < src_.size() && src_[p] == close && src_[p + 1] == '}') {
            tokens_.push_back({close == '}' ? Tok::kVarEnd : Tok::kBlockEnd, "", line});
            *strip_next_all = mod == '-';
            *trim_next_newline = mod == '\0' && options_.trim_blocks;
            return p + 2;
          }
        }
      }
      if (c == '\'' || c == '"') {
        std::string value;
        size_t p = pos + 1;
        bool closed = false;
        while (p < src_.size()) {
          char d = src_[p];
          if (d == c) {
            closed = true;
            ++p;
            break;
          }
          if (d == '\\' && p + 1 < src_.size()) {
            char e = src_[p + 1];
            p += 2;
            switch (e) {
              case 'n': value.push_back('\n'); break;
              case 't': value.push_back('\t'); break;
              case 'r': value.push_back('\r'); break;
              case 'b': value.push_back('\b'); break;
              case 'f': value.push_back('\f'); break;
              case '0': value.push_back('\0'); break;
              case '\\': value.push_back('\\'); break;
              case '\'': value.push_back('\''); break;
              case '"': value.push_back('"'); break;
              case '\n': break;
              case 'u':
              case 'x': {
                const int digits = e == 'u' ? 4 : 2;
                uint32_t cp = 0;
                int k = 0;
                for (; k < digits && p + k < src_.size() &&
                       absl::ascii_isxdigit(static_cast<unsigned char>(src_[p + k]));
                     ++k) {
                  const char h = src_[p + k];
                  cp = cp * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                }
                if (k != digits || (cp >= 0xD800 && cp <= 0xDFFF)) {
                  return SyntaxError(line, "bad escape in string literal");
                }
                p += digits;
                tokenizer::AppendUtf8(cp, &value);
                break;
              }
              default:
                value.push_back('\\');
                value.push_back(e);
            }
            continue;
          }
          value.push_back(d);
          ++p;
        }
        if (!closed) return SyntaxError(line, "unterminated string literal");
        tokens_.push_back({Tok::kString, std::move(value), line});
        pos = p;
        continue;
      }
      if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        size_t p = pos;
        while (p < src_.size() && (absl::ascii_isdigit(static_cast<unsigned char>(src_[p])) ||
                                   src_[p] == '_')) {
          ++p;
        }
        bool is_float = false;
        if (p + 1 < src_.size() && src_[p] == '.' &&
            absl::ascii_isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          is_float = true;
          ++p;
          while (p < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[p]))) ++p;
        }
        if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            p = q;
            while (p < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[p]))) ++p;
          }
        }
        std::string text;
        for (size_t k = pos; k < p; ++k) {
          if (src_[k] != '_') text.push_back(src_[k]);
        }
        Token t{is_float ? Tok::kFloat : Tok::kInt, text, line};
        if (is_float) {
          t.float_value = std::strtod(text.c_str(), nullptr);
        } else {
          errno = 0;
          t.int_value = std::strtoll(text.c_str(), nullptr, 10);
          if (errno == ERANGE) {
            t.type = Tok::kFloat;
            t.float_value = std::strtod(text.c_str(), nullptr);
          }
        }
        tokens_.push_back(std::move(t));
        pos = p;
        continue;
      }
      if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t p = pos;
        while (p < src_.size() && (absl::ascii_isalnum(static_cast<unsigned char>(src_[p])) ||
                                   src_[p] == '_')) {
          ++p;
        }
        tokens_.push_back({Tok::kName, std::string(src_.substr(pos, p - pos)), line});
        pos = p;
        continue;
      }
      static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                         "%",  "~",  "<",  ">",  "=",  "(",  ")", "[", "]", "{",
                                         "}",  ",",  ".",  ":",  "|"};
      bool matched = false;
      for (const char* op : kOps) {
        const size_t len = std::char_traits<char>::length(op);
        if (src_.substr(pos, len) == op) {
          if (len == 1) {
            if (c == '(' || c == '[' || c == '{') ++depth;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
          }
          tokens_.push_back({Tok::kOp, op, line});
          pos += len;
          matched = true;
          break;
        }
      }
      if (!matched) {
        return SyntaxError(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
      }
    }
  }

  absl::StatusOr<size_t> LexRaw(size_t pos, int line, bool* strip_next_all,
                                bool* trim_next_newline) {
    size_t search = pos;
    while (true) {
      size_t at = src_.find("{%", search);
      if (at == absl::string_view::npos) return SyntaxError(line, "unclosed raw block");
      size_t p = at + 2;
      bool strip_before = false;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
        strip_before = src_[p] == '-';
        ++p;
      }
      while (p < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (src_.substr(p, 6) != "endraw") {
        search = at + 2;
        continue;
      }
      p += 6;
      while (p < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[p]))) ++p;
      bool strip_after = false;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
        strip_after = src_[p] == '-';
        ++p;
      }
      if (src_.substr(p, 2) != "%}") return SyntaxError(line, "malformed endraw");
      std::string text(src_.substr(pos, at - pos));
      if (*strip_next_all) {
        size_t k = 0;
        while (k < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (*trim_next_newline && absl::StartsWith(text, "\n")) {
        text.erase(0, 1);
      }
      if (strip_before) {
        while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
          text.pop_back();
        }
      }
      EmitText(std::move(text), line);
      *strip_next_all = strip_after;
      *trim_next_newline = !strip_after && options_.trim_blocks;
      return p + 2;
    }
  }

  absl::string_view src_;
  const Options& options_;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t line_pos_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Syntax tree

class Expr {
 public:
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  virtual absl::StatusOr<Value> Eval(Interpreter& in) const = 0;
  const int line;
};
using ExprPtr = std::unique_ptr<Expr>;

class Node {
 public:
  explicit Node(int line) : line(line) {}
  virtual ~Node() = default;
  virtual absl::Status Exec(Interpreter& in, std::string* out) const = 0;
  const int line;
};
using NodePtr = std::unique_ptr<Node>;

namespace {

struct Arg {
  std::string name;  // empty for positional
  ExprPtr value;
};

absl::StatusOr<CallArgs> EvalArgs(Interpreter& in, const std::vector<Arg>& args) {
  CallArgs out;
  for (const Arg& a : args) {
    ASSIGN_OR_RETURN(Value v, a.value->Eval(in));
    if (a.name.empty()) {
      out.positional.push_back(std::move(v));
    } else {
      out.keyword.emplace_back(a.name, std::move(v));
    }
  }
  return out;
}

class LiteralExpr : public Expr {
 public:
  LiteralExpr(int line, Value v) : Expr(line), value_(std::move(v)) {}
  absl::StatusOr<Value> Eval(Interpreter&) const override { return value_; }

 private:
  Value value_;
};

class NameExpr : public Expr {
 public:
  NameExpr(int line, std::string name) : Expr(line), name(std::move(name)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override { return in.Lookup(name); }
  const std::string name;
};

class ListExpr : public Expr {
 public:
  ListExpr(int line, std::vector<ExprPtr> items) : Expr(line), items_(std::move(items)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    Value::Array items;
    for (const auto& e : items_) {
      ASSIGN_OR_RETURN(Value v, e->Eval(in));
      items.push_back(std::move(v));
    }
    Value v = Value::MakeArray(std::move(items));
    if (v.depth() > kMaxValueDepth) return EvalError(line, "list nested too deeply");
    return v;
  }

 private:
  std::vector<ExprPtr> items_;
};

class DictExpr : public Expr {
 public:
  DictExpr(int line, std::vector<std::pair<ExprPtr, ExprPtr>> items)
      : Expr(line), items_(std::move(items)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    std::vector<std::pair<std::string, Value>> items;
    for (const auto& [k, e] : items_) {
      ASSIGN_OR_RETURN(Value key, k->Eval(in));
      if (!key.is_string()) return EvalError(line, "dict keys must be strings");
      ASSIGN_OR_RETURN(Value v, e->Eval(in));
      items.emplace_back(key.as_string(), std::move(v));
    }
    Value v = Value::MakeObjectFrom(std::move(items));
    if (v.depth() > kMaxValueDepth) return EvalError(line, "dict nested too deeply");
    return v;
  }

 private:
  std::vector<std::pair<ExprPtr, ExprPtr>> items_;
};

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) {
    return EvalError(line, absl::StrCat("'", obj.undefined_name().empty() ? "value" : obj.undefined_name(),
                                        "' is undefined (reading its attribute '", name, "')"));
  }
  if (obj.is_object()) {
    const Value* v = obj.object().Find(name);
    if (v != nullptr) return *v;
  }
  return Value::Undefined(name);
}

// Python index of a sequence of `size` items: negative from the end; -1 when out of range.
int64_t NormalizeIndex(int64_t i, size_t size) {
  if (i < 0) i += static_cast<int64_t>(size);
  if (i < 0 || i >= static_cast<int64_t>(size)) return -1;
  return i;
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) {
    return EvalError(line, absl::StrCat("'", obj.undefined_name().empty() ? "value" : obj.undefined_name(),
                                        "' is undefined (indexing it)"));
  }
  if (obj.is_object()) {
    if (!key.is_string()) return Value::Undefined();
    const Value* v = obj.object().Find(key.as_string());
    return v != nullptr ? *v : Value::Undefined(key.as_string());
  }
  if (obj.is_array() || obj.is_string()) {
    if (!key.is_int() && !key.is_bool()) {
      if (key.is_string()) return Value::Undefined(key.as_string());
      return EvalError(line, absl::StrCat("indices must be integers, not ", key.TypeName()));
    }
    if (obj.is_array()) {
      const int64_t i = NormalizeIndex(key.as_int(), obj.array().size());
      if (i < 0) return Value::Undefined();
      return obj.array()[i];
    }
    const std::u32string cps = ToCodePoints(obj.as_string());
    const int64_t i = NormalizeIndex(key.as_int(), cps.size());
    if (i < 0) return Value::Undefined();
    return Value::String(FromCodePoints(cps.substr(i, 1)));
  }
  return Value::Undefined();
}

class AttrExpr : public Expr {
 public:
  AttrExpr(int line, ExprPtr obj, std::string name)
      : Expr(line), obj(std::move(obj)), name(std::move(name)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value o, obj->Eval(in));
    return GetAttr(o, name, line);
  }
  ExprPtr obj;
  const std::string name;
};

class IndexExpr : public Expr {
 public:
  IndexExpr(int line, ExprPtr obj, ExprPtr index)
      : Expr(line), obj_(std::move(obj)), index_(std::move(index)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value o, obj_->Eval(in));
    ASSIGN_OR_RETURN(Value k, index_->Eval(in));
    return GetItem(o, k, line);
  }

 private:
  ExprPtr obj_, index_;
};

class SliceExpr : public Expr {
 public:
  SliceExpr(int line, ExprPtr obj, ExprPtr start, ExprPtr stop, ExprPtr step)
      : Expr(line), obj_(std::move(obj)), start_(std::move(start)), stop_(std::move(stop)),
        step_(std::move(step)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value o, obj_->Eval(in));
    auto bound = [&](const ExprPtr& e) -> absl::StatusOr<std::optional<int64_t>> {
      if (e == nullptr) return std::optional<int64_t>();
      ASSIGN_OR_RETURN(Value v, e->Eval(in));
      if (v.is_none()) return std::optional<int64_t>();
      if (!v.is_int() && !v.is_bool()) return EvalError(line, "slice indices must be integers");
      return std::optional<int64_t>(v.as_int());
    };
    ASSIGN_OR_RETURN(auto start, bound(start_));
    ASSIGN_OR_RETURN(auto stop, bound(stop_));
    ASSIGN_OR_RETURN(auto step_opt, bound(step_));
    const int64_t step = step_opt.value_or(1);
    if (step == 0) return EvalError(line, "slice step cannot be zero");
    std::u32string cps;
    size_t size;
    if (o.is_array()) {
      size = o.array().size();
    } else if (o.is_string()) {
      cps = ToCodePoints(o.as_string());
      size = cps.size();
    } else {
      return EvalError(line, absl::StrCat("cannot slice a ", o.TypeName()));
    }
    const int64_t n = static_cast<int64_t>(size);
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t lo = clamp(start, step > 0 ? 0 : n - 1);
    const int64_t hi = clamp(stop, step > 0 ? n : -1);
    std::vector<int64_t> picks;
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) picks.push_back(i);
    if (o.is_array()) {
      Value::Array items;
      for (int64_t i : picks) items.push_back(o.array()[i]);
      return Value::MakeArray(std::move(items));
    }
    std::u32string picked;
    for (int64_t i : picks) picked.push_back(cps[i]);
    return Value::String(FromCodePoints(picked));
  }

 private:
  ExprPtr obj_, start_, stop_, step_;
};

class CallExpr : public Expr {
 public:
  CallExpr(int line, ExprPtr callee, std::vector<Arg> args)
      : Expr(line), callee_(std::move(callee)), args_(std::move(args)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(CallArgs args, EvalArgs(in, args_));
    // obj.method(...): a method of the value's type, else a callable stored under that key.
    if (auto* attr = dynamic_cast<const AttrExpr*>(callee_.get())) {
      ASSIGN_OR_RETURN(Value self, attr->obj->Eval(in));
      if (self.is_string() || self.is_array() || (self.is_object() && !self.object().is_namespace)) {
        absl::StatusOr<Value> r = CallMethod(in, self, attr->name, args, line);
        if (r.ok() || r.status().code() != absl::StatusCode::kNotFound) return r;
      }
      ASSIGN_OR_RETURN(Value fn, GetAttr(self, attr->name, line));
      return Invoke(in, fn, args, attr->name);
    }
    ASSIGN_OR_RETURN(Value fn, callee_->Eval(in));
    const auto* name = dynamic_cast<const NameExpr*>(callee_.get());
    return Invoke(in, fn, args, name != nullptr ? name->name : "expression");
  }

 private:
  absl::StatusOr<Value> Invoke(Interpreter& in, const Value& fn, const CallArgs& args,
                               const std::string& what) const {
    if (!fn.is_callable()) {
      if (fn.is_undefined()) return EvalError(line, absl::StrCat("'", what, "' is undefined"));
      return EvalError(line, absl::StrCat("'", what, "' (a ", fn.TypeName(), ") is not callable"));
    }
    absl::StatusOr<Value> r = fn.callable().fn(in, args);
    if (!r.ok() && r.status().code() == absl::StatusCode::kInvalidArgument &&
        !IsRaisedByTemplate(r.status()) &&
        !absl::StartsWith(r.status().message(), "template error")) {
      return EvalError(line, r.status().message());
    }
    return r;
  }

  ExprPtr callee_;
  std::vector<Arg> args_;
};

class FilterExpr : public Expr {
 public:
  FilterExpr(int line, ExprPtr input, std::string name, std::vector<Arg> args)
      : Expr(line), input_(std::move(input)), name_(std::move(name)), args_(std::move(args)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value v, input_->Eval(in));
    ASSIGN_OR_RETURN(CallArgs args, EvalArgs(in, args_));
    return ApplyFilter(in, name_, v, args, line);
  }

 private:
  ExprPtr input_;
  std::string name_;
  std::vector<Arg> args_;
};

class TestExpr : public Expr {
 public:
  TestExpr(int line, ExprPtr input, std::string name, std::vector<Arg> args, bool negated)
      : Expr(line), input_(std::move(input)), name_(std::move(name)), args_(std::move(args)),
        negated_(negated) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value v, input_->Eval(in));
    ASSIGN_OR_RETURN(CallArgs args, EvalArgs(in, args_));
    ASSIGN_OR_RETURN(bool r, ApplyTest(in, name_, v, args, line));
    return Value::Bool(r != negated_);
  }

 private:
  ExprPtr input_;
  std::string name_;
  std::vector<Arg> args_;
  bool negated_;
};

class NotExpr : public Expr {
 public:
  NotExpr(int line, ExprPtr x) : Expr(line), x_(std::move(x)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value v, x_->Eval(in));
    return Value::Bool(!v.Truthy());
  }

 private:
  ExprPtr x_;
};

class AndOrExpr : public Expr {
 public:
  AndOrExpr(int line, bool is_and, ExprPtr a, ExprPtr b)
      : Expr(line), is_and_(is_and), a_(std::move(a)), b_(std::move(b)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    // Python semantics: the deciding operand itself is the result.
    ASSIGN_OR_RETURN(Value a, a_->Eval(in));
    if (a.Truthy() != is_and_) return a;
    return b_->Eval(in);
  }

 private:
  bool is_and_;
  ExprPtr a_, b_;
};

class CondExpr : public Expr {
 public:
  CondExpr(int line, ExprPtr then, ExprPtr cond, ExprPtr otherwise)
      : Expr(line), then_(std::move(then)), cond_(std::move(cond)),
        otherwise_(std::move(otherwise)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value c, cond_->Eval(in));
    if (c.Truthy()) return then_->Eval(in);
    if (otherwise_ == nullptr) return Value::Undefined();
    return otherwise_->Eval(in);
  }

 private:
  ExprPtr then_, cond_, otherwise_;
};

class UnaryExpr : public Expr {
 public:
  UnaryExpr(int line, char op, ExprPtr x) : Expr(line), op_(op), x_(std::move(x)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value v, x_->Eval(in));
    if (!v.is_number() && !v.is_bool()) {
      return EvalError(line, absl::StrCat("bad operand type for unary ", std::string(1, op_), ": ",
                                          v.TypeName()));
    }
    if (op_ == '+') return v.is_bool() ? Value::Int(v.as_int()) : v;
    if (v.is_float()) return Value::Float(-v.as_double());
    if (v.as_int() == INT64_MIN) return Value::Float(-static_cast<double>(v.as_int()));
    return Value::Int(-v.as_int());
  }

 private:
  char op_;
  ExprPtr x_;
};

absl::StatusOr<Value> Arithmetic(Interpreter& in, const std::string& op, const Value& a,
                                 const Value& b, int line) {
  auto type_error = [&] {
    return EvalError(line, absl::StrCat("unsupported operand types for ", op, ": ", a.TypeName(),
                                        " and ", b.TypeName()));
  };
  if (op == "~") {
    std::string s = a.ToString() + b.ToString();
    RETURN_IF_ERROR(in.Charge(s.size()));
    return Value::String(std::move(s));
  }
  const bool num_a = a.is_number() || a.is_bool(), num_b = b.is_number() || b.is_bool();
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      RETURN_IF_ERROR(in.Charge(a.as_string().size() + b.as_string().size()));
      return Value::String(a.as_string() + b.as_string());
    }
    if (a.is_array() && b.is_array()) {
      Value::Array items = a.array();
      items.insert(items.end(), b.array().begin(), b.array().end());
      RETURN_IF_ERROR(in.Charge(items.size() * sizeof(Value)));
      return Value::MakeArray(std::move(items));
    }
  }
  if (op == "*" && ((a.is_string() || a.is_array()) && (b.is_int() || b.is_bool()))) {
    const int64_t times = std::max<int64_t>(0, b.as_int());
    const size_t unit = a.is_string() ? a.as_string().size() : a.array().size() * sizeof(Value);
    if (unit > 0 && static_cast<uint64_t>(times) > in.limits().max_output_bytes / unit) {
      return absl::ResourceExhaustedError("template repetition result too large");
    }
    RETURN_IF_ERROR(in.Charge(unit * times));
    if (a.is_string()) {
      std::string s;
      for (int64_t k = 0; k < times; ++k) s += a.as_string();
      return Value::String(std::move(s));
    }
    Value::Array items;
    for (int64_t k = 0; k < times; ++k) items.insert(items.end(), a.array().begin(), a.array().end());
    return Value::MakeArray(std::move(items));
  }
  if (!num_a || !num_b) return type_error();
  const bool ints = !a.is_float() && !b.is_float();
  const int64_t x = a.as_int(), y = b.as_int();
  const double fx = a.as_double(), fy = b.as_double();
  int64_t r;
  if (op == "+") {
    if (ints && !__builtin_add_overflow(x, y, &r)) return Value::Int(r);
    return Value::Float(fx + fy);
  }
  if (op == "-") {
    if (ints && !__builtin_sub_overflow(x, y, &r)) return Value::Int(r);
    return Value::Float(fx - fy);
  }
  if (op == "*") {
    if (ints && !__builtin_mul_overflow(x, y, &r)) return Value::Int(r);
    return Value::Float(fx * fy);
  }
  if (op == "/") {
    if (fy == 0) return EvalError(line, "division by zero");
    return Value::Float(fx / fy);
  }
  if (op == "//" || op == "%") {
    if (fy == 0) return EvalError(line, "integer division or modulo by zero");
    if (ints && !(x == INT64_MIN && y == -1)) {
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        --q;
        m += y;
      }
      return op == "//" ? Value::Int(q) : Value::Int(m);
    }
    const double q = std::floor(fx / fy);
    return op == "//" ? Value::Float(q) : Value::Float(fx - q * fy);
  }
  if (op == "**") {
    if (ints && y >= 0) {
      int64_t acc = 1;
      bool overflow = false;
      for (int64_t k = 0; k < y && !overflow; ++k) {
        overflow = __builtin_mul_overflow(acc, x, &acc);
        if (acc == 0 || acc == 1) break;
      }
      if (!overflow) {
        if (acc == 1 && x == -1) return Value::Int(y % 2 == 0 ? 1 : -1);
        return Value::Int(acc);
      }
    }
    return Value::Float(std::pow(fx, fy));
  }
  return type_error();
}

class BinaryExpr : public Expr {
 public:
  BinaryExpr(int line, std::string op, ExprPtr a, ExprPtr b)
      : Expr(line), op_(std::move(op)), a_(std::move(a)), b_(std::move(b)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value a, a_->Eval(in));
    ASSIGN_OR_RETURN(Value b, b_->Eval(in));
    return Arithmetic(in, op_, a, b, line);
  }

 private:
  std::string op_;
  ExprPtr a_, b_;
};

class CompareExpr : public Expr {
 public:
  CompareExpr(int line, ExprPtr first, std::vector<std::pair<std::string, ExprPtr>> rest)
      : Expr(line), first_(std::move(first)), rest_(std::move(rest)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override {
    ASSIGN_OR_RETURN(Value left, first_->Eval(in));
    for (const auto& [op, e] : rest_) {
      ASSIGN_OR_RETURN(Value right, e->Eval(in));
      bool r;
      if (op == "==") {
        r = left.Equals(right);
      } else if (op == "!=") {
        r = !left.Equals(right);
      } else if (op == "in" || op == "notin") {
        ASSIGN_OR_RETURN(r, Contains(right, left, line));
        if (op == "notin") r = !r;
      } else {
        ASSIGN_OR_RETURN(int c, Compare(left, right, line));
        r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
      }
      if (!r) return Value::Bool(false);
      left = std::move(right);
    }
    return Value::Bool(true);
  }

 private:
  ExprPtr first_;
  std::vector<std::pair<std::string, ExprPtr>> rest_;
};

// ---------------------------------------------------------------------------------------------
// Statements

absl::Status ExecBody(Interpreter& in, const std::vector<NodePtr>& body, std::string* out) {
  for (const NodePtr& n : body) {
    RETURN_IF_ERROR(n->Exec(in, out));
    if (in.flow != Flow::kNormal) break;
  }
  return absl::OkStatus();
}

class TextNode : public Node {
 public:
  TextNode(int line, std::string text) : Node(line), text_(std::move(text)) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    return in.Append(out, text_);
  }

 private:
  std::string text_;
};

class OutputNode : public Node {
 public:
  OutputNode(int line, ExprPtr e) : Node(line), e_(std::move(e)) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    ASSIGN_OR_RETURN(Value v, e_->Eval(in));
    return in.Append(out, v.ToString());
  }

 private:
  ExprPtr e_;
};

class IfNode : public Node {
 public:
  explicit IfNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    for (const auto& [cond, body] : branches) {
      if (cond != nullptr) {
        ASSIGN_OR_RETURN(Value c, cond->Eval(in));
        if (!c.Truthy()) continue;
      }
      return ExecBody(in, body, out);
    }
    return absl::OkStatus();
  }
  std::vector<std::pair<ExprPtr, std::vector<NodePtr>>> branches;  // null cond: else
};

absl::Status Bind(Interpreter& in, const std::vector<std::string>& targets, const Value& v,
                  int line) {
  if (targets.size() == 1) {
    in.Set(targets[0], v);
    return absl::OkStatus();
  }
  if (!v.is_array() || v.array().size() != targets.size()) {
    return EvalError(line, absl::StrCat("cannot unpack ", v.TypeName(), " into ", targets.size(),
                                        " names"));
  }
  for (size_t k = 0; k < targets.size(); ++k) in.Set(targets[k], v.array()[k]);
  return absl::OkStatus();
}

class ForNode : public Node {
 public:
  explicit ForNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    ASSIGN_OR_RETURN(Value seq, iter->Eval(in));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(seq, line));
    Scope* outer = in.scope();
    if (filter != nullptr) {
      std::vector<Value> kept;
      for (Value& item : items) {
        RETURN_IF_ERROR(in.CountIteration());
        Scope s{{}, outer};
        in.set_scope(&s);
        absl::Status st = Bind(in, targets, item, line);
        absl::StatusOr<Value> c = st.ok() ? filter->Eval(in) : absl::StatusOr<Value>(st);
        in.set_scope(outer);
        if (!c.ok()) return c.status();
        if (c->Truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      Scope s{{}, outer};
      in.set_scope(&s);
      absl::Status st = ExecBody(in, else_body, out);
      in.set_scope(outer);
      return st;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(in.CountIteration());
      Scope s{{}, outer};
      in.set_scope(&s);
      Value loop = Value::MakeObject();
      auto& lo = loop.object();
      lo.Set("index", Value::Int(i + 1));
      lo.Set("index0", Value::Int(i));
      lo.Set("revindex", Value::Int(n - i));
      lo.Set("revindex0", Value::Int(n - i - 1));
      lo.Set("first", Value::Bool(i == 0));
      lo.Set("last", Value::Bool(i == n - 1));
      lo.Set("length", Value::Int(n));
      lo.Set("depth", Value::Int(1));
      lo.Set("depth0", Value::Int(0));
      if (i > 0) lo.Set("previtem", items[i - 1]);
      if (i + 1 < n) lo.Set("nextitem", items[i + 1]);
      lo.Set("cycle", Value::MakeCallable("loop.cycle", [i](Interpreter&, const CallArgs& args)
                                                              -> absl::StatusOr<Value> {
               if (args.positional.empty()) {
                 return absl::InvalidArgumentError("loop.cycle() needs at least one argument");
               }
               return args.positional[i % args.positional.size()];
             }));
      in.Set("loop", loop);
      absl::Status st = Bind(in, targets, items[i], line);
      if (st.ok()) st = ExecBody(in, body, out);
      in.set_scope(outer);
      RETURN_IF_ERROR(st);
      if (in.flow == Flow::kBreak) {
        in.flow = Flow::kNormal;
        break;
      }
      in.flow = Flow::kNormal;
    }
    return absl::OkStatus();
  }
  std::vector<std::string> targets;
  ExprPtr iter;
  ExprPtr filter;
  std::vector<NodePtr> body;
  std::vector<NodePtr> else_body;
};

class FlowNode : public Node {
 public:
  FlowNode(int line, Flow flow) : Node(line), flow_(flow) {}
  absl::Status Exec(Interpreter& in, std::string*) const override {
    in.flow = flow_;
    return absl::OkStatus();
  }

 private:
  Flow flow_;
};

class SetNode : public Node {
 public:
  explicit SetNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    Value v;
    if (value != nullptr) {
      ASSIGN_OR_RETURN(v, value->Eval(in));
    } else {
      std::string captured;
      RETURN_IF_ERROR(ExecBody(in, body, &captured));
      v = Value::String(std::move(captured));
    }
    if (!attr.empty()) {
      Value ns = in.Lookup(targets[0]);
      if (!ns.is_object() || !ns.object().is_namespace) {
        return EvalError(line, "cannot assign attribute on non-namespace object");
      }
      ns.object().Set(attr, std::move(v));
      return absl::OkStatus();
    }
    return Bind(in, targets, v, line);
  }
  std::vector<std::string> targets;
  std::string attr;  // set ns.attr = ...
  ExprPtr value;     // null: block set
  std::vector<NodePtr> body;
};

class MacroNode : public Node {
 public:
  explicit MacroNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string*) const override {
    const MacroNode* self = this;
    in.Set(name, Value::MakeCallable(name, [self](Interpreter& in, const CallArgs& args) {
             return self->Call(in, args);
           }));
    return absl::OkStatus();
  }

  absl::StatusOr<Value> Call(Interpreter& in, const CallArgs& args) const {
    if (in.call_depth >= in.limits().max_call_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "macro calls nested deeper than ", in.limits().max_call_depth, " (in '", name, "')"));
    }
    if (args.positional.size() > params.size()) {
      return EvalError(line, absl::StrCat("macro '", name, "' takes not more than ",
                                          params.size(), " argument(s)"));
    }
    Scope* saved = in.scope();
    // Macros see the template's top-level names, not their caller's locals.
    Scope s{{}, in.root()};
    in.set_scope(&s);
    ++in.call_depth;
    absl::Status st;
    for (size_t k = 0; k < params.size() && st.ok(); ++k) {
      const Value* given = nullptr;
      if (k < args.positional.size()) {
        given = &args.positional[k];
      } else {
        for (const auto& [key, v] : args.keyword) {
          if (key == params[k].first) given = &v;
        }
      }
      if (given != nullptr) {
        in.Set(params[k].first, *given);
      } else if (params[k].second != nullptr) {
        absl::StatusOr<Value> d = params[k].second->Eval(in);
        if (!d.ok()) {
          st = d.status();
        } else {
          in.Set(params[k].first, *d);
        }
      } else {
        in.Set(params[k].first, Value::Undefined(params[k].first));
      }
    }
    for (const auto& [key, v] : args.keyword) {
      bool known = false;
      for (const auto& p : params) known = known || p.first == key;
      if (!known && st.ok()) {
        st = EvalError(line, absl::StrCat("macro '", name, "' has no argument '", key, "'"));
      }
    }
    std::string out;
    if (st.ok()) st = ExecBody(in, body, &out);
    in.flow = Flow::kNormal;
    --in.call_depth;
    in.set_scope(saved);
    RETURN_IF_ERROR(st);
    return Value::String(std::move(out));
  }

  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  std::vector<NodePtr> body;
};

class SequenceNode : public Node {
 public:
  explicit SequenceNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override {
    return ExecBody(in, body, out);
  }
  std::vector<NodePtr> body;
};

// ---------------------------------------------------------------------------------------------
// Parser

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Limits& limits)
      : tokens_(std::move(tokens)), limits_(limits) {}

  absl::StatusOr<std::unique_ptr<SequenceNode>> ParseTemplate() {
    auto root = std::make_unique<SequenceNode>(1);
    std::string end;
    RETURN_IF_ERROR(ParseBody({}, &root->body, &end));
    return root;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == Tok::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == Tok::kName && Peek(ahead).text == name;
  }
  absl::Status Expect(const char* op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("expected '", op, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::Status Unexpected(absl::string_view what) const {
    const Token& t = Peek();
    std::string got;
    switch (t.type) {
      case Tok::kEof: got = "end of template"; break;
      case Tok::kBlockEnd: got = "end of tag"; break;
      case Tok::kVarEnd: got = "end of expression"; break;
      case Tok::kText: got = "text"; break;
      case Tok::kString: got = "a string"; break;
      default: got = absl::StrCat("'", t.text, "'");
    }
    return SyntaxError(t.line, absl::StrCat(what, ", got ", got));
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != Tok::kName) return Unexpected("expected a name");
    return Next().text;
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Tok::kBlockEnd) return Unexpected("expected end of tag");
    Next();
    return absl::OkStatus();
  }

  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };
  absl::Status CheckDepth() const {
    if (depth_ > limits_.max_parse_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "template nested deeper than ", limits_.max_parse_depth, " (line ", Peek().line, ")"));
    }
    return absl::OkStatus();
  }

  // Parses nodes until a block tag whose name is in `ends` (left unconsumed after its name is
  // stored in *end) or, with no `ends`, the end of the template.
  absl::Status ParseBody(const std::vector<std::string>& ends, std::vector<NodePtr>* body,
                         std::string* end) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    while (true) {
      const Token& t = Peek();
      switch (t.type) {
        case Tok::kEof:
          if (!ends.empty()) {
            return SyntaxError(t.line, absl::StrCat("unexpected end of template, expected '",
                                                    ends.back(), "'"));
          }
          return absl::OkStatus();
        case Tok::kText:
          body->push_back(std::make_unique<TextNode>(t.line, t.text));
          Next();
          break;
        case Tok::kVarBegin: {
          Next();
          ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
          if (Peek().type != Tok::kVarEnd) return Unexpected("expected '}}'");
          Next();
          body->push_back(std::make_unique<OutputNode>(t.line, std::move(e)));
          break;
        }
        case Tok::kBlockBegin: {
          Next();
          const Token& name = Peek();
          if (name.type != Tok::kName) return Unexpected("expected a tag name");
          for (const std::string& e : ends) {
            if (name.text == e) {
              *end = e;
              Next();
              return absl::OkStatus();
            }
          }
          ASSIGN_OR_RETURN(NodePtr node, ParseStatement());
          if (node != nullptr) body->push_back(std::move(node));
          break;
        }
        default:
          return Unexpected("unexpected token");
      }
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const Token tag = Next();
    const std::string& name = tag.text;
    if (name == "if") return ParseIf(tag.line);
    if (name == "for") return ParseFor(tag.line);
    if (name == "set") return ParseSet(tag.line);
    if (name == "macro") return ParseMacro(tag.line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) return SyntaxError(tag.line, absl::StrCat("'", name, "' outside a loop"));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(std::make_unique<FlowNode>(tag.line, name == "break" ? Flow::kBreak
                                                                          : Flow::kContinue));
    }
    if (name == "generation") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      auto seq = std::make_unique<SequenceNode>(tag.line);
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endgeneration"}, &seq->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(std::move(seq));
    }
    return SyntaxError(tag.line, absl::StrCat("unsupported tag '", name, "'"));
  }

  absl::StatusOr<NodePtr> ParseIf(int line) {
    auto node = std::make_unique<IfNode>(line);
    ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
    RETURN_IF_ERROR(ExpectBlockEnd());
    while (true) {
      std::vector<NodePtr> body;
      std::string end;
      RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &body, &end));
      node->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "endif") break;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        std::vector<NodePtr> else_body;
        RETURN_IF_ERROR(ParseBody({"endif"}, &else_body, &end));
        node->branches.emplace_back(nullptr, std::move(else_body));
        break;
      }
      ASSIGN_OR_RETURN(cond, ParseExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<std::vector<std::string>> ParseTargets() {
    std::vector<std::string> names;
    const bool paren = IsOp("(");
    if (paren) Next();
    while (true) {
      ASSIGN_OR_RETURN(std::string n, ExpectName());
      names.push_back(std::move(n));
      if (!IsOp(",")) break;
      Next();
    }
    if (paren) RETURN_IF_ERROR(Expect(")"));
    return names;
  }

  absl::StatusOr<NodePtr> ParseFor(int line) {
    auto node = std::make_unique<ForNode>(line);
    ASSIGN_OR_RETURN(node->targets, ParseTargets());
    if (!IsName("in")) return Unexpected("expected 'in'");
    Next();
    ASSIGN_OR_RETURN(node->iter, ParseExpression(/*allow_conditional=*/false));
    if (IsName("if")) {
      Next();
      ASSIGN_OR_RETURN(node->filter, ParseExpression());
    }
    if (IsName("recursive")) return SyntaxError(line, "recursive loops are not supported");
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    std::string end;
    absl::Status st = ParseBody({"else", "endfor"}, &node->body, &end);
    --loop_depth_;
    RETURN_IF_ERROR(st);
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      RETURN_IF_ERROR(ParseBody({"endfor"}, &node->else_body, &end));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<NodePtr> ParseSet(int line) {
    auto node = std::make_unique<SetNode>(line);
    ASSIGN_OR_RETURN(std::string first, ExpectName());
    node->targets.push_back(first);
    if (IsOp(".")) {
      Next();
      ASSIGN_OR_RETURN(node->attr, ExpectName());
    } else {
      while (IsOp(",")) {
        Next();
        ASSIGN_OR_RETURN(std::string n, ExpectName());
        node->targets.push_back(std::move(n));
      }
    }
    if (IsOp("=")) {
      Next();
      ASSIGN_OR_RETURN(node->value, ParseTupleOrExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(std::move(node));
    }
    if (Peek().type != Tok::kBlockEnd || node->targets.size() != 1) {
      return Unexpected("expected '='");
    }
    Next();
    std::string end;
    RETURN_IF_ERROR(ParseBody({"endset"}, &node->body, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<NodePtr> ParseMacro(int line) {
    auto node = std::make_unique<MacroNode>(line);
    ASSIGN_OR_RETURN(node->name, ExpectName());
    RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      ASSIGN_OR_RETURN(std::string param, ExpectName());
      ExprPtr def;
      if (IsOp("=")) {
        Next();
        ASSIGN_OR_RETURN(def, ParseExpression());
      }
      node->params.emplace_back(std::move(param), std::move(def));
      if (!IsOp(",")) break;
      Next();
    }
    RETURN_IF_ERROR(Expect(")"));
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    absl::Status st = ParseBody({"endmacro"}, &node->body, &end);
    loop_depth_ = saved_loop_depth;
    RETURN_IF_ERROR(st);
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  // ----- expressions

  // `a, b` at statement level (set x = 1, 2) makes a tuple (a list here).
  absl::StatusOr<ExprPtr> ParseTupleOrExpression() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    std::vector<ExprPtr> items;
    items.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().type == Tok::kBlockEnd) break;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
      items.push_back(std::move(e));
    }
    return ExprPtr(std::make_unique<ListExpr>(line, std::move(items)));
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool allow_conditional = true) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    if (allow_conditional && IsName("if")) {
      Next();
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      return ExprPtr(std::make_unique<CondExpr>(line, std::move(e), std::move(cond),
                                                std::move(otherwise)));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseAnd());
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseAnd());
      e = std::make_unique<AndOrExpr>(line, false, std::move(e), std::move(r));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseNot());
      e = std::make_unique<AndOrExpr>(line, true, std::move(e), std::move(r));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const int line = Next().line;
      DepthGuard guard(&depth_);
      RETURN_IF_ERROR(CheckDepth());
      ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
      return ExprPtr(std::make_unique<NotExpr>(line, std::move(e)));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr e, ParseMath1());
    std::vector<std::pair<std::string, ExprPtr>> rest;
    while (true) {
      std::string op;
      if (Peek().type == Tok::kOp && (Peek().text == "==" || Peek().text == "!=" ||
                                      Peek().text == "<" || Peek().text == ">" ||
                                      Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      ASSIGN_OR_RETURN(ExprPtr r, ParseMath1());
      rest.emplace_back(op, std::move(r));
    }
    if (rest.empty()) return e;
    return ExprPtr(std::make_unique<CompareExpr>(line, std::move(e), std::move(rest)));
  }

  absl::StatusOr<ExprPtr> ParseBinaryLevel(const std::vector<const char*>& ops,
                                           absl::StatusOr<ExprPtr> (Parser::*next)()) {
    ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      const char* matched = nullptr;
      for (const char* op : ops) {
        if (IsOp(op)) matched = op;
      }
      if (matched == nullptr) return e;
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, (this->*next)());
      e = std::make_unique<BinaryExpr>(line, matched, std::move(e), std::move(r));
    }
  }
  absl::StatusOr<ExprPtr> ParseMath1() { return ParseBinaryLevel({"+", "-"}, &Parser::ParseConcat); }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseBinaryLevel({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &Parser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() { return ParseBinaryLevel({"**"}, &Parser::ParseUnaryFiltered); }
  absl::StatusOr<ExprPtr> ParseUnaryFiltered() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      const char op = t.text[0];
      ASSIGN_OR_RETURN(ExprPtr x, ParseUnary(false));
      e = std::make_unique<UnaryExpr>(t.line, op, std::move(x));
    } else {
      ASSIGN_OR_RETURN(e, ParsePrimary());
      ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    }
    if (with_filter) return ParseFilterAndTest(std::move(e));
    return e;
  }

  absl::StatusOr<std::vector<Arg>> ParseCallArgs() {
    // At '(' already consumed.
    std::vector<Arg> args;
    while (!IsOp(")")) {
      Arg a;
      if (Peek().type == Tok::kName && IsOp("=", 1)) {
        a.name = Next().text;
        Next();
      }
      ASSIGN_OR_RETURN(a.value, ParseExpression());
      args.push_back(std::move(a));
      if (!IsOp(",")) break;
      Next();
    }
    RETURN_IF_ERROR(Expect(")"));
    return args;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp(".")) {
        Next();
        if (Peek().type == Tok::kInt) {
          e = std::make_unique<IndexExpr>(line, std::move(e),
                                          std::make_unique<LiteralExpr>(line, Value::Int(Next().int_value)));
          continue;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        e = std::make_unique<AttrExpr>(line, std::move(e), std::move(name));
      } else if (IsOp("[")) {
        Next();
        ExprPtr parts[3];
        int colons = 0;
        while (true) {
          if (IsOp(":")) {
            if (++colons > 2) return Unexpected("expected ']'");
            Next();
            continue;
          }
          if (IsOp("]")) break;
          if (parts[colons] != nullptr) return Unexpected("expected ']'");
          ASSIGN_OR_RETURN(parts[colons], ParseExpression());
        }
        Next();
        if (colons == 0) {
          if (parts[0] == nullptr) return SyntaxError(line, "empty subscript");
          e = std::make_unique<IndexExpr>(line, std::move(e), std::move(parts[0]));
        } else {
          e = std::make_unique<SliceExpr>(line, std::move(e), std::move(parts[0]),
                                          std::move(parts[1]), std::move(parts[2]));
        }
      } else if (IsOp("(")) {
        Next();
        ASSIGN_OR_RETURN(std::vector<Arg> args, ParseCallArgs());
        e = std::make_unique<CallExpr>(line, std::move(e), std::move(args));
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterAndTest(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp("|")) {
        Next();
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        std::vector<Arg> args;
        if (IsOp("(")) {
          Next();
          ASSIGN_OR_RETURN(args, ParseCallArgs());
        }
        e = std::make_unique<FilterExpr>(line, std::move(e), std::move(name), std::move(args));
      } else if (IsName("is")) {
        Next();
        bool negated = false;
        if (IsName("not")) {
          Next();
          negated = true;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        std::vector<Arg> args;
        if (IsOp("(")) {
          Next();
          ASSIGN_OR_RETURN(args, ParseCallArgs());
        } else if (Peek().type == Tok::kString || Peek().type == Tok::kInt ||
                   Peek().type == Tok::kFloat ||
                   (Peek().type == Tok::kName && !IsName("and") && !IsName("or") &&
                    !IsName("if") && !IsName("else") && !IsName("is") && !IsName("in") &&
                    !IsName("not"))) {
          // One argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
          Arg a;
          ASSIGN_OR_RETURN(a.value, ParsePrimary());
          ASSIGN_OR_RETURN(a.value, ParsePostfix(std::move(a.value)));
          args.push_back(std::move(a));
        }
        if (!HasTest(name)) return SyntaxError(line, absl::StrCat("unknown test '", name, "'"));
        e = std::make_unique<TestExpr>(line, std::move(e), std::move(name), std::move(args),
                                       negated);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    const Token& t = Peek();
    const int line = t.line;
    switch (t.type) {
      case Tok::kString: {
        std::string s = Next().text;
        // Adjacent string literals concatenate, as in Python.
        while (Peek().type == Tok::kString) s += Next().text;
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::String(std::move(s))));
      }
      case Tok::kInt:
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Int(Next().int_value)));
      case Tok::kFloat:
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Float(Next().float_value)));
      case Tok::kName: {
        const std::string name = Next().text;
        if (name == "true" || name == "True") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Bool(true)));
        }
        if (name == "false" || name == "False") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Bool(false)));
        }
        if (name == "none" || name == "None") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::None()));
        }
        return ExprPtr(std::make_unique<NameExpr>(line, name));
      }
      case Tok::kOp:
        if (t.text == "(") {
          Next();
          if (IsOp(")")) {
            Next();
            return ExprPtr(std::make_unique<ListExpr>(line, std::vector<ExprPtr>()));
          }
          ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
          if (IsOp(",")) {
            std::vector<ExprPtr> items;
            items.push_back(std::move(e));
            while (IsOp(",")) {
              Next();
              if (IsOp(")")) break;
              ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
              items.push_back(std::move(item));
            }
            e = std::make_unique<ListExpr>(line, std::move(items));
          }
          RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        if (t.text == "[") {
          Next();
          std::vector<ExprPtr> items;
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            items.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect("]"));
          return ExprPtr(std::make_unique<ListExpr>(line, std::move(items)));
        }
        if (t.text == "{") {
          Next();
          std::vector<std::pair<ExprPtr, ExprPtr>> items;
          while (!IsOp("}")) {
            ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            RETURN_IF_ERROR(Expect(":"));
            ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            items.emplace_back(std::move(key), std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect("}"));
          return ExprPtr(std::make_unique<DictExpr>(line, std::move(items)));
        }
        break;
      default:
        break;
    }
    return Unexpected("expected an expression");
  }

  std::vector<Token> tokens_;
  const Limits& limits_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Template

Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source,
                                                          const Options& options) {
  if (source.size() > options.limits.max_template_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("template larger than ",
                                                     options.limits.max_template_bytes, " bytes"));
  }
  Lexer lexer(source, options);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens), options.limits);
  ASSIGN_OR_RETURN(std::unique_ptr<SequenceNode> root, parser.ParseTemplate());
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

// The evaluator: Eval of every expression and Exec of every statement of jinja_ast.h, with the
// helpers they share (attribute and item access, arithmetic, loop-target binding).
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/jinja_ast.h"
#include "inference/common/status_macros.h"

namespace qwen::chat::jinja {

namespace {

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

}  // namespace

absl::StatusOr<Value> LiteralExpr::Eval(Interpreter&) const { return value_; }

absl::StatusOr<Value> NameExpr::Eval(Interpreter& in) const { return in.Lookup(name); }

absl::StatusOr<Value> ListExpr::Eval(Interpreter& in) const {
  Value::Array items;
  for (const auto& e : items_) {
    ASSIGN_OR_RETURN(Value v, e->Eval(in));
    items.push_back(std::move(v));
  }
  Value v = Value::MakeArray(std::move(items));
  if (v.depth() > kMaxValueDepth) return EvalError(line, "list nested too deeply");
  return v;
}

absl::StatusOr<Value> DictExpr::Eval(Interpreter& in) const {
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

namespace {

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) {
    return EvalError(
        line, absl::StrCat("'", obj.undefined_name().empty() ? "value" : obj.undefined_name(),
                           "' is undefined (reading its attribute '", name, "')"));
  }
  if (obj.is_object()) {
    const Value* v = obj.object().Find(name);
    if (v != nullptr) return *v;
  }
  return Value::Undefined(name);
}

}  // namespace

namespace {

// Python index of a sequence of `size` items: negative from the end; -1 when out of range.
int64_t NormalizeIndex(int64_t i, size_t size) {
  if (i < 0) i += static_cast<int64_t>(size);
  if (i < 0 || i >= static_cast<int64_t>(size)) return -1;
  return i;
}

}  // namespace

namespace {

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) {
    return EvalError(
        line, absl::StrCat("'", obj.undefined_name().empty() ? "value" : obj.undefined_name(),
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

}  // namespace

absl::StatusOr<Value> AttrExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value o, obj->Eval(in));
  return GetAttr(o, name, line);
}

absl::StatusOr<Value> IndexExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value o, obj_->Eval(in));
  ASSIGN_OR_RETURN(Value k, index_->Eval(in));
  return GetItem(o, k, line);
}

absl::StatusOr<Value> SliceExpr::Eval(Interpreter& in) const {
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

absl::StatusOr<Value> CallExpr::Eval(Interpreter& in) const {
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

absl::StatusOr<Value> CallExpr::Invoke(Interpreter& in, const Value& fn, const CallArgs& args,
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

absl::StatusOr<Value> FilterExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value v, input_->Eval(in));
  ASSIGN_OR_RETURN(CallArgs args, EvalArgs(in, args_));
  return ApplyFilter(in, name_, v, args, line);
}

absl::StatusOr<Value> TestExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value v, input_->Eval(in));
  ASSIGN_OR_RETURN(CallArgs args, EvalArgs(in, args_));
  ASSIGN_OR_RETURN(bool r, ApplyTest(in, name_, v, args, line));
  return Value::Bool(r != negated_);
}

absl::StatusOr<Value> NotExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value v, x_->Eval(in));
  return Value::Bool(!v.Truthy());
}

absl::StatusOr<Value> AndOrExpr::Eval(Interpreter& in) const {
  // Python semantics: the deciding operand itself is the result.
  ASSIGN_OR_RETURN(Value a, a_->Eval(in));
  if (a.Truthy() != is_and_) return a;
  return b_->Eval(in);
}

absl::StatusOr<Value> CondExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value c, cond_->Eval(in));
  if (c.Truthy()) return then_->Eval(in);
  if (otherwise_ == nullptr) return Value::Undefined();
  return otherwise_->Eval(in);
}

absl::StatusOr<Value> UnaryExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value v, x_->Eval(in));
  if (!v.is_number() && !v.is_bool()) {
    return EvalError(
        line, absl::StrCat("bad operand type for unary ", std::string(1, op_), ": ", v.TypeName()));
  }
  if (op_ == '+') return v.is_bool() ? Value::Int(v.as_int()) : v;
  if (v.is_float()) return Value::Float(-v.as_double());
  if (v.as_int() == INT64_MIN) return Value::Float(-static_cast<double>(v.as_int()));
  return Value::Int(-v.as_int());
}

namespace {

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
    for (int64_t k = 0; k < times; ++k)
      items.insert(items.end(), a.array().begin(), a.array().end());
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

}  // namespace

absl::StatusOr<Value> BinaryExpr::Eval(Interpreter& in) const {
  ASSIGN_OR_RETURN(Value a, a_->Eval(in));
  ASSIGN_OR_RETURN(Value b, b_->Eval(in));
  return Arithmetic(in, op_, a, b, line);
}

absl::StatusOr<Value> CompareExpr::Eval(Interpreter& in) const {
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

namespace {

absl::Status ExecBody(Interpreter& in, const std::vector<NodePtr>& body, std::string* out) {
  for (const NodePtr& n : body) {
    RETURN_IF_ERROR(n->Exec(in, out));
    if (in.flow != Flow::kNormal) break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TextNode::Exec(Interpreter& in, std::string* out) const {
  return in.Append(out, text_);
}

absl::Status OutputNode::Exec(Interpreter& in, std::string* out) const {
  ASSIGN_OR_RETURN(Value v, e_->Eval(in));
  return in.Append(out, v.ToString());
}

absl::Status IfNode::Exec(Interpreter& in, std::string* out) const {
  for (const auto& [cond, body] : branches) {
    if (cond != nullptr) {
      ASSIGN_OR_RETURN(Value c, cond->Eval(in));
      if (!c.Truthy()) continue;
    }
    return ExecBody(in, body, out);
  }
  return absl::OkStatus();
}

namespace {

absl::Status Bind(Interpreter& in, const std::vector<std::string>& targets, const Value& v,
                  int line) {
  if (targets.size() == 1) {
    in.Set(targets[0], v);
    return absl::OkStatus();
  }
  if (!v.is_array() || v.array().size() != targets.size()) {
    return EvalError(
        line, absl::StrCat("cannot unpack ", v.TypeName(), " into ", targets.size(), " names"));
  }
  for (size_t k = 0; k < targets.size(); ++k) in.Set(targets[k], v.array()[k]);
  return absl::OkStatus();
}

}  // namespace

absl::Status ForNode::Exec(Interpreter& in, std::string* out) const {
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
    lo.Set("cycle",
           Value::MakeCallable(
               "loop.cycle", [i](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
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

absl::Status FlowNode::Exec(Interpreter& in, std::string*) const {
  in.flow = flow_;
  return absl::OkStatus();
}

absl::Status SetNode::Exec(Interpreter& in, std::string* out) const {
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

absl::Status MacroNode::Exec(Interpreter& in, std::string*) const {
  const MacroNode* self = this;
  in.Set(name, Value::MakeCallable(name, [self](Interpreter& in, const CallArgs& args) {
           return self->Call(in, args);
         }));
  return absl::OkStatus();
}

absl::StatusOr<Value> MacroNode::Call(Interpreter& in, const CallArgs& args) const {
  if (in.call_depth >= in.limits().max_call_depth) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "macro calls nested deeper than ", in.limits().max_call_depth, " (in '", name, "')"));
  }
  if (args.positional.size() > params.size()) {
    return EvalError(line, absl::StrCat("macro '", name, "' takes not more than ", params.size(),
                                        " argument(s)"));
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

absl::Status SequenceNode::Exec(Interpreter& in, std::string* out) const {
  return ExecBody(in, body, out);
}

}  // namespace qwen::chat::jinja

// Filters, tests, methods and globals of the Jinja interpreter, with the semantics of Jinja2 and
// Python that chat templates depend on.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/jinja_internal.h"
#include "inference/common/status_macros.h"
#include "inference/tokenizer/utf8.h"

namespace qwen::chat::jinja {

std::u32string ToCodePoints(absl::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    if (tokenizer::Utf8SequenceLength(s.substr(pos)) <= 0) {
      out.push_back(0xFFFD);
      ++pos;
      continue;
    }
    out.push_back(tokenizer::DecodeUtf8(s, &pos));
  }
  return out;
}

std::string FromCodePoints(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) tokenizer::AppendUtf8(c, &out);
  return out;
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();  // Jinja's Undefined iterates as empty
    case Value::Kind::kArray:
      return v.array();
    case Value::Kind::kObject: {
      if (v.object().is_namespace) break;
      std::vector<Value> keys;
      for (const auto& [k, _] : v.object().items) keys.push_back(Value::String(k));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t c : ToCodePoints(v.as_string())) {
        chars.push_back(Value::String(FromCodePoints(std::u32string(1, c))));
      }
      return chars;
    }
    default:
      break;
  }
  return EvalError(line, absl::StrCat("'", v.TypeName(), "' object is not iterable"));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item, int line) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return EvalError(line, absl::StrCat("'in <string>' requires string as left operand, not ",
                                            item.TypeName()));
      }
      return absl::StrContains(container.as_string(), item.as_string());
    case Value::Kind::kArray:
      for (const Value& v : container.array()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Value::Kind::kObject:
      if (!item.is_string()) return false;
      return container.object().Find(item.as_string()) != nullptr;
    default:
      return EvalError(line, absl::StrCat("argument of type '", container.TypeName(),
                                          "' is not iterable"));
  }
}

absl::StatusOr<int> Compare(const Value& a, const Value& b, int line) {
  const bool num_a = a.is_number() || a.is_bool(), num_b = b.is_number() || b.is_bool();
  if (num_a && num_b) {
    if (!a.is_float() && !b.is_float()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    return a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double();
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : c > 0;
  }
  if (a.is_array() && b.is_array()) {
    const auto& x = a.array();
    const auto& y = b.array();
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (x[k].Equals(y[k])) continue;
      return Compare(x[k], y[k], line);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  return EvalError(line, absl::StrCat("cannot compare ", a.TypeName(), " with ", b.TypeName()));
}

namespace {

// Python's str.isspace().
bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// str.strip / lstrip / rstrip with Python's defaults (whitespace) or a set of characters.
std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::u32string cps = ToCodePoints(s);
  std::u32string set;
  const bool use_set = chars != nullptr && chars->is_string();
  if (use_set) set = ToCodePoints(chars->as_string());
  auto strip_it = [&](char32_t c) {
    return use_set ? set.find(c) != std::u32string::npos : IsPySpace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  if (b == 0 && e == cps.size()) return s;
  return FromCodePoints(cps.substr(b, e - b));
}


std::vector<std::string> SplitString(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none() || sep->is_undefined()) {
    // Runs of whitespace, no empty parts.
    const std::u32string cps = ToCodePoints(s);
    size_t k = 0;
    while (k < cps.size()) {
      while (k < cps.size() && IsPySpace(cps[k])) ++k;
      if (k >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > k && IsPySpace(cps[e - 1])) --e;
        parts.push_back(FromCodePoints(cps.substr(k, e - k)));
        break;
      }
      size_t j = k;
      while (j < cps.size() && !IsPySpace(cps[j])) ++j;
      parts.push_back(FromCodePoints(cps.substr(k, j - k)));
      k = j;
    }
    return parts;
  }
  const std::string& d = sep->as_string();
  size_t start = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) break;
    size_t at = s.find(d, start);
    if (at == std::string::npos) break;
    parts.push_back(s.substr(start, at - start));
    start = at + d.size();
  }
  parts.push_back(s.substr(start));
  return parts;
}

std::string ReplaceAll(const std::string& s, const std::string& from, const std::string& to,
                       int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between characters (and at both ends).
    const std::u32string cps = ToCodePoints(s);
    int64_t done = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (k < cps.size()) out += FromCodePoints(cps.substr(k, 1));
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += to;
    start = at + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string CaseMap(const std::string& s, int mode) {  // 0 lower, 1 upper, 2 title, 3 capitalize
  // ASCII and the common scripts through towupper would need a locale; Python's full Unicode
  // case mapping is approximated here by ASCII rules plus pass-through of other characters.
  std::string out = s;
  bool start = true;
  for (size_t k = 0; k < out.size(); ++k) {
    const auto c = static_cast<unsigned char>(out[k]);
    const bool alpha = absl::ascii_isalpha(c);
    if (mode == 0) {
      out[k] = absl::ascii_tolower(c);
    } else if (mode == 1) {
      out[k] = absl::ascii_toupper(c);
    } else if (mode == 2) {
      out[k] = start ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      start = !alpha && !absl::ascii_isdigit(c) && c != '\'' && c < 0x80;
    } else {
      out[k] = k == 0 ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
    }
  }
  return out;
}

absl::Status NeedString(const Value& v, const char* what, int line) {
  if (!v.is_string()) {
    return EvalError(line, absl::StrCat(what, " expects a string, got ", v.TypeName()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> ToInt(const Value& v, const Value* fallback) {
  const Value def = fallback != nullptr ? *fallback : Value::Int(0);
  if (v.is_int() || v.is_bool()) return Value::Int(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_double()) || std::fabs(v.as_double()) > 9.2e18) return def;
    return Value::Int(static_cast<int64_t>(v.as_double()));
  }
  if (v.is_string()) {
    const std::string s(absl::StripAsciiWhitespace(v.as_string()));
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value::Int(i);
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(d));
    }
  }
  return def;
}

absl::StatusOr<Value> ToFloat(const Value& v, const Value* fallback) {
  const Value def = fallback != nullptr ? *fallback : Value::Float(0.0);
  if (v.is_number() || v.is_bool()) return Value::Float(v.as_double());
  if (v.is_string()) {
    const std::string s(absl::StripAsciiWhitespace(v.as_string()));
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value::Float(d);
  }
  return def;
}

// Attribute lookup used by map/selectattr/sort/join: "a.b" paths, and integer indexes.
Value GetPath(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_object()) {
      const Value* f = cur.object().Find(part);
      cur = f != nullptr ? *f : Value::Undefined(part);
    } else if (cur.is_array() && !part.empty() && absl::ascii_isdigit(part[0])) {
      const size_t i = std::strtoull(part.c_str(), nullptr, 10);
      cur = i < cur.array().size() ? cur.array()[i] : Value::Undefined(part);
    } else {
      return Value::Undefined(part);
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

absl::StatusOr<Value> SelectOrReject(Interpreter& in, const Value& input, const CallArgs& args,
                                     bool by_attr, bool select, int line) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return EvalError(line, "selectattr/rejectattr need an attribute name");
    }
    attr = args.positional[0].as_string();
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return EvalError(line, "test name must be a string");
    test = args.positional[next].as_string();
    test_args.positional.assign(args.positional.begin() + next + 1, args.positional.end());
  }
  Value::Array out;
  for (const Value& item : items) {
    const Value subject = by_attr ? GetPath(item, attr) : item;
    bool ok;
    if (test.empty()) {
      ok = subject.Truthy();
    } else {
      ASSIGN_OR_RETURN(ok, ApplyTest(in, test, subject, test_args, line));
    }
    if (ok == select) out.push_back(item);
  }
  return Value::MakeArray(std::move(out));
}

}  // namespace

absl::StatusOr<Value> CallMethod(Interpreter& in, const Value& self, const std::string& name,
                                 const CallArgs& args, int line) {
  const Value* a0 = args.Get(0, "");
  const Value* a1 = args.Get(1, "");
  if (self.is_string()) {
    const std::string& s = self.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = args.Get(0, "chars");
      if (chars != nullptr && chars->is_none()) chars = nullptr;
      return Value::String(Strip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "startswith" || name == "endswith") {
      if (a0 == nullptr) return EvalError(line, absl::StrCat(name, "() takes one argument"));
      std::vector<Value> options;
      if (a0->is_array()) {
        options = a0->array();
      } else {
        options.push_back(*a0);
      }
      for (const Value& o : options) {
        RETURN_IF_ERROR(NeedString(o, name.c_str(), line));
        if (name == "startswith" ? absl::StartsWith(s, o.as_string())
                                 : absl::EndsWith(s, o.as_string())) {
          return Value::Bool(true);
        }
      }
      return Value::Bool(false);
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = args.Get(0, "sep");
      const Value* maxsplit = args.Get(1, "maxsplit");
      if (sep != nullptr && sep->is_string() && sep->as_string().empty()) {
        return EvalError(line, "empty separator");
      }
      if (sep != nullptr && !sep->is_string() && !sep->is_none()) {
        return EvalError(line, "split() separator must be a string");
      }
      int64_t limit = maxsplit != nullptr && maxsplit->is_int() ? maxsplit->as_int() : -1;
      if (name == "rsplit" && limit >= 0) {
        // Split fully, then join the leading parts back.
        std::vector<std::string> all = SplitString(s, sep, -1);
        if (static_cast<int64_t>(all.size()) > limit + 1 && sep != nullptr && sep->is_string()) {
          const size_t keep = all.size() - limit;
          std::string head;
          for (size_t k = 0; k < keep; ++k) head += (k ? sep->as_string() : "") + all[k];
          std::vector<std::string> parts = {head};
          parts.insert(parts.end(), all.begin() + keep, all.end());
          all = parts;
        }
        Value::Array out;
        for (auto& p : all) out.push_back(Value::String(std::move(p)));
        return Value::MakeArray(std::move(out));
      }
      Value::Array out;
      for (auto& p : SplitString(s, sep, limit)) out.push_back(Value::String(std::move(p)));
      RETURN_IF_ERROR(in.Charge(s.size()));
      return Value::MakeArray(std::move(out));
    }
    if (name == "replace") {
      if (a0 == nullptr || a1 == nullptr) return EvalError(line, "replace() takes two arguments");
      RETURN_IF_ERROR(NeedString(*a0, "replace", line));
      RETURN_IF_ERROR(NeedString(*a1, "replace", line));
      const Value* count = args.Get(2, "count");
      std::string r = ReplaceAll(s, a0->as_string(), a1->as_string(),
                                 count != nullptr && count->is_int() ? count->as_int() : -1);
      RETURN_IF_ERROR(in.Charge(r.size()));
      if (r.size() > in.limits().max_output_bytes) {
        return absl::ResourceExhaustedError("replace() result too large");
      }
      return Value::String(std::move(r));
    }
    if (name == "upper") return Value::String(CaseMap(s, 1));
    if (name == "lower") return Value::String(CaseMap(s, 0));
    if (name == "title") return Value::String(CaseMap(s, 2));
    if (name == "capitalize") return Value::String(CaseMap(s, 3));
    if (name == "find" || name == "count" || name == "index") {
      if (a0 == nullptr) return EvalError(line, absl::StrCat(name, "() takes an argument"));
      RETURN_IF_ERROR(NeedString(*a0, name.c_str(), line));
      if (name == "count") {
        if (a0->as_string().empty()) return Value::Int(ToCodePoints(s).size() + 1);
        int64_t n = 0;
        for (size_t at = s.find(a0->as_string()); at != std::string::npos;
             at = s.find(a0->as_string(), at + a0->as_string().size())) {
          ++n;
        }
        return Value::Int(n);
      }
      const size_t at = s.find(a0->as_string());
      if (at == std::string::npos) {
        if (name == "index") return EvalError(line, "substring not found");
        return Value::Int(-1);
      }
      return Value::Int(static_cast<int64_t>(ToCodePoints(s.substr(0, at)).size()));
    }
    if (name == "join") {
      if (a0 == nullptr) return EvalError(line, "join() takes an argument");
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*a0, line));
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += s;
        RETURN_IF_ERROR(NeedString(items[k], "join", line));
        out += items[k].as_string();
      }
      RETURN_IF_ERROR(in.Charge(out.size()));
      return Value::String(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isupper" ||
        name == "islower" || name == "isalnum") {
      if (s.empty()) return Value::Bool(false);
      bool ok = true;
      for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (name == "isdigit") ok = ok && absl::ascii_isdigit(u);
        if (name == "isalpha") ok = ok && absl::ascii_isalpha(u);
        if (name == "isalnum") ok = ok && absl::ascii_isalnum(u);
        if (name == "isspace") ok = ok && absl::ascii_isspace(u);
        if (name == "isupper") ok = ok && !absl::ascii_islower(u);
        if (name == "islower") ok = ok && !absl::ascii_isupper(u);
      }
      return Value::Bool(ok);
    }
  } else if (self.is_object()) {
    const auto& obj = self.object();
    if (name == "items") {
      Value::Array out;
      for (const auto& [k, v] : obj.items) out.push_back(Value::MakeArray({Value::String(k), v}));
      return Value::MakeArray(std::move(out));
    }
    if (name == "keys") {
      Value::Array out;
      for (const auto& [k, _] : obj.items) out.push_back(Value::String(k));
      return Value::MakeArray(std::move(out));
    }
    if (name == "values") {
      Value::Array out;
      for (const auto& [_, v] : obj.items) out.push_back(v);
      return Value::MakeArray(std::move(out));
    }
    if (name == "get") {
      if (a0 == nullptr) return EvalError(line, "get() takes an argument");
      if (a0->is_string()) {
        const Value* v = obj.Find(a0->as_string());
        if (v != nullptr) return *v;
      }
      return a1 != nullptr ? *a1 : Value::None();
    }
  } else if (self.is_array()) {
    if (name == "index") {
      if (a0 == nullptr) return EvalError(line, "index() takes an argument");
      for (size_t k = 0; k < self.array().size(); ++k) {
        if (self.array()[k].Equals(*a0)) return Value::Int(static_cast<int64_t>(k));
      }
      return EvalError(line, "value is not in list");
    }
    if (name == "count") {
      if (a0 == nullptr) return EvalError(line, "count() takes an argument");
      int64_t n = 0;
      for (const Value& v : self.array()) n += v.Equals(*a0);
      return Value::Int(n);
    }
    if (name == "append" || name == "pop" || name == "insert" || name == "extend") {
      return EvalError(line, absl::StrCat("lists are immutable in chat templates (", name, ")"));
    }
  }
  return absl::NotFoundError(name);
}

absl::StatusOr<Value> ApplyFilter(Interpreter& in, const std::string& name, const Value& input,
                                  const CallArgs& args, int line) {
  const Value* a0 = args.Get(0, "");
  if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
    if (name == "safe") return input;
    // HTML escaping; chat templates run without autoescape, so only an explicit |e gets here.
    std::string out;
    for (char c : input.ToString()) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out.push_back(c);
      }
    }
    return Value::String(std::move(out));
  }
  if (name == "tojson") {
    Value::JsonOptions options;
    const Value* indent = args.Get(0, "indent");
    if (indent != nullptr && indent->is_int()) {
      options.indent = static_cast<int>(std::clamp<int64_t>(indent->as_int(), 0, 64));
      options.item_separator = ",";
    }
    const Value* separators = args.Get(1, "separators");
    if (separators != nullptr && separators->is_array() && separators->array().size() == 2 &&
        separators->array()[0].is_string() && separators->array()[1].is_string()) {
      options.item_separator = separators->array()[0].as_string();
      options.key_separator = separators->array()[1].as_string();
    }
    const Value* sort_keys = args.Get(2, "sort_keys");
    options.sort_keys = sort_keys != nullptr && sort_keys->Truthy();
    const Value* ensure_ascii = args.Get(3, "ensure_ascii");
    options.ensure_ascii = ensure_ascii != nullptr && ensure_ascii->Truthy();
    absl::StatusOr<std::string> json = input.ToJson(options);
    if (!json.ok()) return EvalError(line, json.status().message());
    RETURN_IF_ERROR(in.Charge(json->size()));
    return Value::String(*std::move(json));
  }
  if (name == "trim") {
    const Value* chars = args.Get(0, "chars");
    return Value::String(Strip(input.ToString(), chars, true, true));
  }
  if (name == "length" || name == "count") {
    switch (input.kind()) {
      case Value::Kind::kString:
        return Value::Int(static_cast<int64_t>(ToCodePoints(input.as_string()).size()));
      case Value::Kind::kArray:
        return Value::Int(static_cast<int64_t>(input.array().size()));
      case Value::Kind::kObject:
        return Value::Int(static_cast<int64_t>(input.object().items.size()));
      case Value::Kind::kUndefined:
        return Value::Int(0);
      default:
        return EvalError(line, absl::StrCat("object of type '", input.TypeName(),
                                            "' has no len()"));
    }
  }
  if (name == "string") return Value::String(input.ToString());
  if (name == "items") {
    if (input.is_undefined()) return Value::MakeArray();
    if (!input.is_object()) {
      return EvalError(line, absl::StrCat("items filter expects a mapping, got ", input.TypeName()));
    }
    return CallMethod(in, input, "items", CallArgs(), line);
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return Value::String(CaseMap(input.ToString(), name == "lower" ? 0 : name == "upper" ? 1
                                                     : name == "title" ? 2 : 3));
  }
  if (name == "default" || name == "d") {
    const Value* boolean = args.Get(1, "boolean");
    const bool use_default =
        input.is_undefined() || (boolean != nullptr && boolean->Truthy() && !input.Truthy());
    if (!use_default) return input;
    const Value* def = args.Get(0, "default_value");
    return def != nullptr ? *def : Value::String("");
  }
  if (name == "first" || name == "last") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    if (items.empty()) return Value::Undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    const Value* sep = args.Get(0, "d");
    const Value* attr = args.Get(1, "attribute");
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      if (k && sep != nullptr) out += sep->ToString();
      out += (attr != nullptr && attr->is_string() ? GetPath(items[k], attr->as_string())
                                                   : items[k])
                 .ToString();
    }
    RETURN_IF_ERROR(in.Charge(out.size()));
    return Value::String(std::move(out));
  }
  if (name == "list") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    return Value::MakeArray(std::move(items));
  }
  if (name == "reverse") {
    if (input.is_string()) {
      std::u32string cps = ToCodePoints(input.as_string());
      std::reverse(cps.begin(), cps.end());
      return Value::String(FromCodePoints(cps));
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    std::reverse(items.begin(), items.end());
    return Value::MakeArray(std::move(items));
  }
  if (name == "unique") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    Value::Array out;
    for (Value& v : items) {
      bool seen = false;
      for (const Value& o : out) seen = seen || o.Equals(v);
      if (!seen) out.push_back(std::move(v));
    }
    return Value::MakeArray(std::move(out));
  }
  if (name == "sort" || name == "dictsort") {
    std::vector<Value> items;
    std::string attr;
    bool reverse = false;
    if (name == "dictsort") {
      if (!input.is_object()) return EvalError(line, "dictsort expects a mapping");
      ASSIGN_OR_RETURN(Value pairs, CallMethod(in, input, "items", CallArgs(), line));
      items = pairs.array();
      attr = "0";
      const Value* r = args.Get(2, "reverse");
      reverse = r != nullptr && r->Truthy();
    } else {
      ASSIGN_OR_RETURN(items, Iterate(input, line));
      const Value* r = args.Get(0, "reverse");
      reverse = r != nullptr && r->Truthy();
      const Value* a = args.Get(2, "attribute");
      if (a != nullptr && a->is_string()) attr = a->as_string();
    }
    absl::Status error;
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      const Value kx = attr.empty() ? x : GetPath(x, attr);
      const Value ky = attr.empty() ? y : GetPath(y, attr);
      absl::StatusOr<int> c = Compare(kx, ky, line);
      if (!c.ok()) {
        if (error.ok()) error = c.status();
        return false;
      }
      return reverse ? *c > 0 : *c < 0;
    });
    RETURN_IF_ERROR(error);
    return Value::MakeArray(std::move(items));
  }
  if (name == "map") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    const Value* attr = nullptr;
    for (const auto& [k, v] : args.keyword) {
      if (k == "attribute") attr = &v;
    }
    Value::Array out;
    if (attr != nullptr) {
      const Value* def = nullptr;
      for (const auto& [k, v] : args.keyword) {
        if (k == "default") def = &v;
      }
      for (const Value& item : items) {
        Value v = GetPath(item, attr->ToString());
        out.push_back(v.is_undefined() && def != nullptr ? *def : v);
      }
      return Value::MakeArray(std::move(out));
    }
    if (a0 == nullptr || !a0->is_string()) return EvalError(line, "map needs a filter name or attribute=");
    CallArgs rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value v, ApplyFilter(in, a0->as_string(), item, rest, line));
      out.push_back(std::move(v));
    }
    return Value::MakeArray(std::move(out));
  }
  if (name == "select" || name == "reject") {
    return SelectOrReject(in, input, args, false, name == "select", line);
  }
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(in, input, args, true, name == "selectattr", line);
  }
  if (name == "replace") {
    const Value* from = args.Get(0, "old");
    const Value* to = args.Get(1, "new");
    if (from == nullptr || to == nullptr) return EvalError(line, "replace needs two arguments");
    const Value* count = args.Get(2, "count");
    std::string r = ReplaceAll(input.ToString(), from->ToString(), to->ToString(),
                               count != nullptr && count->is_int() ? count->as_int() : -1);
    RETURN_IF_ERROR(in.Charge(r.size()));
    if (r.size() > in.limits().max_output_bytes) {
      return absl::ResourceExhaustedError("replace result too large");
    }
    return Value::String(std::move(r));
  }
  if (name == "int") return ToInt(input, args.Get(0, "default"));
  if (name == "float") return ToFloat(input, args.Get(0, "default"));
  if (name == "abs") {
    if (input.is_int() || input.is_bool()) {
      if (input.as_int() == INT64_MIN) return Value::Float(-static_cast<double>(INT64_MIN));
      return Value::Int(std::abs(input.as_int()));
    }
    if (input.is_float()) return Value::Float(std::fabs(input.as_double()));
    return EvalError(line, "abs expects a number");
  }
  if (name == "round") {
    if (!input.is_number()) return EvalError(line, "round expects a number");
    const Value* precision = args.Get(0, "precision");
    const int64_t p = precision != nullptr && precision->is_int()
                          ? std::clamp<int64_t>(precision->as_int(), -20, 20) : 0;
    const double scale = std::pow(10.0, static_cast<double>(p));
    return Value::Float(std::round(input.as_double() * scale) / scale);
  }
  if (name == "sum" || name == "min" || name == "max") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input, line));
    if (name == "sum") {
      const Value* start = args.Get(1, "start");
      Value acc = start != nullptr ? *start : Value::Int(0);
      const Value* attr = args.Get(0, "attribute");
      for (const Value& v : items) {
        ASSIGN_OR_RETURN(acc, ApplyFilter(in, "__add", acc,
                                          CallArgs{{attr != nullptr && attr->is_string()
                                                        ? GetPath(v, attr->as_string()) : v},
                                                   {}},
                                          line));
      }
      return acc;
    }
    if (items.empty()) return Value::Undefined();
    Value best = items[0];
    for (const Value& v : items) {
      ASSIGN_OR_RETURN(int c, Compare(v, best, line));
      if (name == "min" ? c < 0 : c > 0) best = v;
    }
    return best;
  }
  if (name == "__add") {  // internal, for sum
    if (a0 == nullptr || !(input.is_number() || input.is_bool()) ||
        !(a0->is_number() || a0->is_bool())) {
      return EvalError(line, "sum expects numbers");
    }
    if (!input.is_float() && !a0->is_float()) return Value::Int(input.as_int() + a0->as_int());
    return Value::Float(input.as_double() + a0->as_double());
  }
  if (name == "indent") {
    const Value* width = args.Get(0, "width");
    const Value* first = args.Get(1, "first");
    const Value* blank = args.Get(2, "blank");
    std::string pad = width != nullptr && width->is_string()
                          ? width->as_string()
                          : std::string(width != nullptr && width->is_int()
                                            ? std::clamp<int64_t>(width->as_int(), 0, 256) : 4,
                                        ' ');
    std::string s = input.ToString();
    std::string out;
    size_t start = 0;
    bool first_line = true;
    while (true) {
      size_t nl = s.find('\n', start);
      std::string ln = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      const bool indent_it = first_line ? (first != nullptr && first->Truthy())
                                        : (!ln.empty() || (blank != nullptr && blank->Truthy()));
      if (indent_it) out += pad;
      out += ln;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
    }
    RETURN_IF_ERROR(in.Charge(out.size()));
    return Value::String(std::move(out));
  }
  if (name == "wordcount") {
    return Value::Int(static_cast<int64_t>(SplitString(input.ToString(), nullptr, -1).size()));
  }
  return EvalError(line, absl::StrCat("unknown filter '", name, "'"));
}

namespace {
const char* const kTests[] = {"defined", "undefined", "none", "string", "number", "integer",
                              "float", "boolean", "true", "false", "mapping", "iterable",
                              "sequence", "callable", "eq", "equalto", "==", "ne", "!=", "lt",
                              "<", "lessthan", "gt", ">", "greaterthan", "le", "<=", "ge", ">=",
                              "in", "odd", "even", "divisibleby", "sameas", "lower", "upper",
                              "escaped"};
}  // namespace

bool HasTest(const std::string& name) {
  for (const char* t : kTests) {
    if (name == t) return true;
  }
  return false;
}

absl::StatusOr<bool> ApplyTest(Interpreter& in, const std::string& name, const Value& v,
                               const CallArgs& args, int line) {
  const Value* a0 = args.Get(0, "");
  auto need_arg = [&]() -> absl::Status {
    if (a0 == nullptr) return EvalError(line, absl::StrCat("test '", name, "' needs an argument"));
    return absl::OkStatus();
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_object() && !v.object().is_namespace;
  if (name == "iterable") return v.is_array() || v.is_string() || (v.is_object() && !v.object().is_namespace);
  if (name == "sequence") return v.is_array() || v.is_string() || (v.is_object() && !v.object().is_namespace);
  if (name == "callable") return v.is_callable();
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    return v.as_string() == CaseMap(v.as_string(), name == "lower" ? 0 : 1);
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int() && !v.is_bool()) return EvalError(line, absl::StrCat("test '", name, "' expects an integer"));
    if (name == "odd") return (v.as_int() % 2) != 0;
    if (name == "even") return (v.as_int() % 2) == 0;
    RETURN_IF_ERROR(need_arg());
    if (!a0->is_int() || a0->as_int() == 0) return EvalError(line, "divisibleby needs a non-zero integer");
    if (a0->as_int() == -1) return true;
    return v.as_int() % a0->as_int() == 0;
  }
  if (name == "sameas") {
    RETURN_IF_ERROR(need_arg());
    // Python `is`: identity for singletons (None, True, False), reference identity for
    // containers, value identity otherwise as far as it can be observed in a template.
    if (v.is_none() || a0->is_none()) return v.is_none() && a0->is_none();
    if (v.is_bool() || a0->is_bool()) return v.is_bool() && a0->is_bool() && v.as_bool() == a0->as_bool();
    if (v.is_array() && a0->is_array()) return &v.array() == &a0->array();
    if (v.is_object() && a0->is_object()) return &v.object() == &a0->object();
    return v.kind() == a0->kind() && v.Equals(*a0);
  }
  RETURN_IF_ERROR(need_arg());
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(*a0);
  if (name == "ne" || name == "!=") return !v.Equals(*a0);
  if (name == "in") return Contains(*a0, v, line);
  ASSIGN_OR_RETURN(int c, Compare(v, *a0, line));
  if (name == "lt" || name == "<" || name == "lessthan") return c < 0;
  if (name == "gt" || name == ">" || name == "greaterthan") return c > 0;
  if (name == "le" || name == "<=") return c <= 0;
  if (name == "ge" || name == ">=") return c >= 0;
  return EvalError(line, absl::StrCat("unknown test '", name, "'"));
}

const absl::flat_hash_map<std::string, Value>& Globals() {
  static const auto* globals = [] {
    auto* g = new absl::flat_hash_map<std::string, Value>();
    (*g)["raise_exception"] = Value::MakeCallable(
        "raise_exception", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          const Value* msg = args.Get(0, "message");
          return RaisedError(msg != nullptr ? msg->ToString() : "");
        });
    (*g)["namespace"] = Value::MakeCallable(
        "namespace", [](Interpreter& in, const CallArgs& args) -> absl::StatusOr<Value> {
          Value ns = Value::MakeObject();
          ns.object().is_namespace = true;
          if (!args.positional.empty()) {
            if (!args.positional[0].is_object()) {
              return absl::InvalidArgumentError("namespace() takes a mapping or keywords");
            }
            for (const auto& [k, v] : args.positional[0].object().items) ns.object().Set(k, v);
          }
          for (const auto& [k, v] : args.keyword) ns.object().Set(k, v);
          in.namespaces.push_back(ns);
          return ns;
        });
    (*g)["dict"] = Value::MakeCallable(
        "dict", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          std::vector<std::pair<std::string, Value>> items;
          if (!args.positional.empty() && args.positional[0].is_object()) {
            items = args.positional[0].object().items;
          }
          for (const auto& [k, v] : args.keyword) items.emplace_back(k, v);
          Value d = Value::MakeObjectFrom(std::move(items));
          if (d.depth() > kMaxValueDepth) return absl::InvalidArgumentError("dict nested too deeply");
          return d;
        });
    (*g)["range"] = Value::MakeCallable(
        "range", [](Interpreter& in, const CallArgs& args) -> absl::StatusOr<Value> {
          int64_t start = 0, stop = 0, step = 1;
          for (const Value& a : args.positional) {
            if (!a.is_int() && !a.is_bool()) return absl::InvalidArgumentError("range() expects integers");
          }
          if (args.positional.size() == 1) {
            stop = args.positional[0].as_int();
          } else if (args.positional.size() >= 2) {
            start = args.positional[0].as_int();
            stop = args.positional[1].as_int();
            if (args.positional.size() >= 3) step = args.positional[2].as_int();
          } else {
            return absl::InvalidArgumentError("range() takes 1 to 3 arguments");
          }
          if (step == 0) return absl::InvalidArgumentError("range() step must not be zero");
          const double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                                         static_cast<double>(step));
          if (count > static_cast<double>(in.limits().max_loop_iterations)) {
            return absl::ResourceExhaustedError("range() too long");
          }
          Value::Array items;
          for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            items.push_back(Value::Int(i));
          }
          return Value::MakeArray(std::move(items));
        });
    (*g)["strftime_now"] = Value::MakeCallable(
        "strftime_now", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          const Value* fmt = args.Get(0, "format");
          if (fmt == nullptr || !fmt->is_string()) {
            return absl::InvalidArgumentError("strftime_now() takes a format string");
          }
          const std::time_t now = std::time(nullptr);
          std::tm tm{};
          localtime_r(&now, &tm);
          char buf[256];
          const size_t n = std::strftime(buf, sizeof(buf), fmt->as_string().c_str(), &tm);
          return Value::String(std::string(buf, n));
        });
    return g;
  }();
  return *globals;
}

}  // namespace qwen::chat::jinja

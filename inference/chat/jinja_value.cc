#include "inference/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/tokenizer/utf8.h"

namespace qwen::chat::jinja {

const Value* CallArgs::Get(size_t index, absl::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

const Value* Value::Object::Find(absl::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::Object::Set(absl::string_view key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::string(key.data(), key.size()), std::move(value));
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& json, int max_depth) {
  if (max_depth <= 0) return absl::InvalidArgumentError("JSON nested too deeply");
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Float(static_cast<double>(u));
      }
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return String(json.get_ref<const std::string&>());
    case nlohmann::ordered_json::value_t::array: {
      Array items;
      items.reserve(json.size());
      for (const auto& item : json) {
        ASSIGN_OR_RETURN(Value v, FromJson(item, max_depth - 1));
        items.push_back(std::move(v));
      }
      return MakeArray(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<std::string, Value>> items;
      items.reserve(json.size());
      for (const auto& [key, item] : json.items()) {
        ASSIGN_OR_RETURN(Value child, FromJson(item, max_depth - 1));
        items.emplace_back(key, std::move(child));
      }
      return MakeObjectFrom(std::move(items));
    }
    default:
      return absl::InvalidArgumentError("unsupported JSON value (binary or discarded)");
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !str_.empty();
    case Kind::kArray:
      return !array_->empty();
    case Kind::kObject:
      return object_->is_namespace || !object_->items.empty();
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string PythonFloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci is "[-]d[.ddd]e[+-]XX": split into sign, digits and decimal exponent.
  std::string sign;
  size_t pos = 0;
  if (sci[0] == '-') {
    sign = "-";
    pos = 1;
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t k = pos; k < e; ++k) {
    if (sci[k] != '.') digits.push_back(sci[k]);
  }
  int exp = std::stoi(sci.substr(e + 1));
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = sign;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      std::string int_part = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      while (int_part.size() < static_cast<size_t>(exp + 1)) int_part.push_back('0');
      std::string frac = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "";
      out += int_part + "." + (frac.empty() ? "0" : frac);
    } else {
      out += "0." + std::string(-exp - 1, '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_buf[16];
  std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  out += exp_buf;
  return out;
}

namespace {

void AppendPythonStringRepr(const std::string& s, std::string* out) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out->push_back(quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out->append(buf);
    } else {
      out->push_back(c);
    }
  }
  out->push_back(quote);
}

}  // namespace

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return int_ ? "True" : "False";
    case Kind::kInt:
      return absl::StrCat(int_);
    case Kind::kFloat:
      return PythonFloatRepr(float_);
    case Kind::kString: {
      std::string out;
      AppendPythonStringRepr(str_, &out);
      return out;
    }
    case Kind::kArray: {
      std::string out = "[";
      for (size_t k = 0; k < array_->size(); ++k) {
        if (k) out += ", ";
        out += (*array_)[k].Repr();
      }
      return out + "]";
    }
    case Kind::kObject: {
      if (object_->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : object_->items) {
        if (!first) out += ", ";
        first = false;
        AppendPythonStringRepr(k, &out);
        out += ": " + v.Repr();
      }
      return out + "}";
    }
    case Kind::kCallable:
      return "<function " + callable_->name + ">";
  }
  return "";
}

std::string Value::ToString() const {
  if (kind_ == Kind::kString) return str_;
  return Repr();
}

bool Value::Equals(const Value& other) const {
  const bool num_a = is_number() || is_bool();
  const bool num_b = other.is_number() || other.is_bool();
  if (num_a && num_b) {
    if (kind_ != Kind::kFloat && other.kind_ != Kind::kFloat) return int_ == other.int_;
    return as_double() == other.as_double();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return str_ == other.str_;
    case Kind::kArray: {
      if (array_ == other.array_) return true;
      if (array_->size() != other.array_->size()) return false;
      for (size_t k = 0; k < array_->size(); ++k) {
        if (!(*array_)[k].Equals((*other.array_)[k])) return false;
      }
      return true;
    }
    case Kind::kObject: {
      if (object_ == other.object_) return true;
      if (object_->is_namespace || other.object_->is_namespace) return false;
      if (object_->items.size() != other.object_->items.size()) return false;
      for (const auto& [k, v] : object_->items) {
        const Value* o = other.object_->Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Kind::kCallable:
      return callable_ == other.callable_;
    default:
      return false;
  }
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "boolean";
    case Kind::kInt:
      return "integer";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "list";
    case Kind::kObject:
      return object_->is_namespace ? "namespace" : "dict";
    case Kind::kCallable:
      return "callable";
  }
  return "?";
}

void AppendJsonString(absl::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  size_t pos = 0;
  while (pos < s.size()) {
    const auto u = static_cast<unsigned char>(s[pos]);
    if (u >= 0x80) {
      if (!ensure_ascii) {
        out->push_back(s[pos++]);
        continue;
      }
      const int len = tokenizer::Utf8SequenceLength(s.substr(pos));
      if (len <= 0) {
        out->append("\\ufffd");
        ++pos;
        continue;
      }
      char32_t cp = tokenizer::DecodeUtf8(s, &pos);
      char buf[16];
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      }
      out->append(buf);
      continue;
    }
    ++pos;
    switch (u) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (u < 0x20 || (ensure_ascii && u == 0x7F)) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", u);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(u));
        }
    }
  }
  out->push_back('"');
}

absl::StatusOr<std::string> Value::ToJson(const JsonOptions& options) const {
  std::string out;
  RETURN_IF_ERROR(AppendJson(options, 0, 0, &out));
  return out;
}

absl::Status Value::AppendJson(const JsonOptions& options, int level, int depth,
                               std::string* out) const {
  if (depth > 512) return absl::InvalidArgumentError("tojson: value nested too deeply");
  auto newline = [&](int lvl) {
    if (options.indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(options.indent) * lvl, ' ');
  };
  switch (kind_) {
    case Kind::kUndefined:
      return absl::InvalidArgumentError("tojson: value is undefined");
    case Kind::kCallable:
      return absl::InvalidArgumentError("tojson: a function is not JSON serializable");
    case Kind::kNone:
      out->append("null");
      return absl::OkStatus();
    case Kind::kBool:
      out->append(int_ ? "true" : "false");
      return absl::OkStatus();
    case Kind::kInt:
      out->append(absl::StrCat(int_));
      return absl::OkStatus();
    case Kind::kFloat:
      if (std::isnan(float_)) {
        out->append("NaN");
      } else if (std::isinf(float_)) {
        out->append(float_ < 0 ? "-Infinity" : "Infinity");
      } else {
        out->append(PythonFloatRepr(float_));
      }
      return absl::OkStatus();
    case Kind::kString:
      AppendJsonString(str_, options.ensure_ascii, out);
      return absl::OkStatus();
    case Kind::kArray: {
      if (array_->empty()) {
        out->append("[]");
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t k = 0; k < array_->size(); ++k) {
        if (k) out->append(options.item_separator);
        newline(level + 1);
        RETURN_IF_ERROR((*array_)[k].AppendJson(options, level + 1, depth + 1, out));
      }
      newline(level);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Kind::kObject: {
      if (object_->items.empty()) {
        out->append("{}");
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : object_->items) items.push_back(&item);
      if (options.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out->append(options.item_separator);
        newline(level + 1);
        AppendJsonString(items[k]->first, options.ensure_ascii, out);
        out->append(options.key_separator);
        RETURN_IF_ERROR(items[k]->second.AppendJson(options, level + 1, depth + 1, out));
      }
      newline(level);
      out->push_back('}');
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

}  // namespace qwen::chat::jinja

// JSON Schema, tool calls and the reasoning prefix to the grammar IR.
#include <cmath>
#include <limits>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/grammar/compile.h"

namespace qwen::grammar {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Unsupported(absl::string_view what, const std::string& path) {
  return absl::InvalidArgumentError(absl::StrCat(what, " at ", path));
}

std::string Escape(absl::string_view key) {
  // JSON-pointer escaping of a path component.
  std::string out;
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

// Strings of length L (same for both) in [lo, hi], digit by digit.
Symbol FixedDigits(Grammar* g, const std::string& lo, const std::string& hi) {
  const size_t n = lo.size();
  if (n == 0) return g->Empty();
  if (lo == hi) return g->Group({g->Literal(lo)}, "digits");
  ByteSet any;
  for (int d = '0'; d <= '9'; ++d) any.set(d);
  auto range = [&](char a, char b) {
    ByteSet s;
    for (int d = a; d <= b; ++d) s.set(d);
    return g->Bytes(s);
  };
  if (n == 1) return range(lo[0], hi[0]);
  if (lo[0] == hi[0]) {
    return g->Group({{g->Byte(lo[0]), FixedDigits(g, lo.substr(1), hi.substr(1))}}, "digits");
  }
  std::vector<Sequence> alts;
  alts.push_back({g->Byte(lo[0]), FixedDigits(g, lo.substr(1), std::string(n - 1, '9'))});
  if (hi[0] - lo[0] > 1) {
    Sequence s = {range(lo[0] + 1, hi[0] - 1)};
    for (size_t k = 1; k < n; ++k) s.push_back(g->Bytes(any));
    alts.push_back(std::move(s));
  }
  alts.push_back({g->Byte(hi[0]), FixedDigits(g, std::string(n - 1, '0'), hi.substr(1))});
  return g->Group(std::move(alts), "digits");
}

constexpr int64_t kBig = 100000000000000000;  // 1e17: beyond this a bound counts as none

// Decimal non-negative integers (no leading zeros) in [a, b]; b empty: unbounded.
std::vector<Sequence> NonNegative(Grammar* g, int64_t a, std::optional<int64_t> b) {
  std::vector<Sequence> alts;
  const std::string sa = std::to_string(a);
  const size_t la = sa.size();
  const size_t lb = b ? std::to_string(*b).size() : la;
  int64_t pow = 1;
  for (size_t k = 1; k < la; ++k) pow *= 10;  // 10^(la-1)
  for (size_t len = la; len <= lb; ++len, pow *= 10) {
    const int64_t lo = std::max(a, len == 1 ? 0 : pow);
    const int64_t hi = b ? std::min(*b, pow * 10 - 1) : pow * 10 - 1;
    if (lo > hi) continue;
    alts.push_back({FixedDigits(g, std::to_string(lo), std::to_string(hi))});
  }
  if (!b) {
    ByteSet nz, any;
    for (int d = '1'; d <= '9'; ++d) nz.set(d);
    for (int d = '0'; d <= '9'; ++d) any.set(d);
    Sequence s = {g->Bytes(nz)};
    for (size_t k = 0; k < la; ++k) s.push_back(g->Bytes(any));
    s.push_back(g->Star({g->Bytes(any)}));
    alts.push_back(std::move(s));
  }
  return alts;
}

// Integers in [lo, hi] (either may be absent).
Symbol IntegerRange(Grammar* g, std::optional<int64_t> lo, std::optional<int64_t> hi) {
  std::vector<Sequence> alts;
  if (!hi || *hi >= 0) {
    for (auto& s : NonNegative(g, lo ? std::max<int64_t>(*lo, 0) : 0, hi)) alts.push_back(s);
  }
  if (!lo || *lo < 0) {
    const int64_t kmin = hi && *hi < 0 ? -*hi : 1;
    std::optional<int64_t> kmax;
    if (lo) kmax = -*lo;
    for (auto& s : NonNegative(g, kmin, kmax)) {
      Sequence neg = {g->Byte('-')};
      neg.insert(neg.end(), s.begin(), s.end());
      alts.push_back(std::move(neg));
    }
  }
  if (alts.empty()) return g->Bytes(ByteSet());
  return g->Group(std::move(alts), "integer");
}

class SchemaCompiler {
 public:
  SchemaCompiler(const Json& root, Grammar* g) : root_(root), g_(g) {}

  absl::StatusOr<Symbol> Compile(const Json& s, const std::string& path, int depth = 0) {
    if (depth > 64) return Unsupported("schema nests too deeply", path);
    if (s.is_boolean()) {
      if (s.get<bool>()) return AnyValue();
      return Unsupported("the schema false (matches nothing)", path);
    }
    if (!s.is_object()) return Unsupported("a schema must be an object or a boolean", path);
    static const absl::flat_hash_set<std::string> kKnown = {"type",
                                                            "enum",
                                                            "const",
                                                            "properties",
                                                            "required",
                                                            "additionalProperties",
                                                            "items",
                                                            "prefixItems",
                                                            "minItems",
                                                            "maxItems",
                                                            "minLength",
                                                            "maxLength",
                                                            "pattern",
                                                            "format",
                                                            "minimum",
                                                            "maximum",
                                                            "exclusiveMinimum",
                                                            "exclusiveMaximum",
                                                            "anyOf",
                                                            "oneOf",
                                                            "allOf",
                                                            "$ref",
                                                            "$defs",
                                                            "definitions",
                                                            "title",
                                                            "description",
                                                            "default",
                                                            "examples",
                                                            "$schema",
                                                            "$id",
                                                            "$comment",
                                                            "readOnly",
                                                            "writeOnly",
                                                            "deprecated",
                                                            "nullable"};
    for (const auto& [key, value] : s.items()) {
      if (!kKnown.contains(key)) {
        return Unsupported(absl::StrCat("unsupported keyword \"", key, "\""), path);
      }
    }
    if (s.contains("allOf")) {
      const Json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) {
        return Unsupported("unsupported keyword \"allOf\" (only with one schema)", path);
      }
      Json merged = s;
      merged.erase("allOf");
      for (const auto& [k, v] : all[0].items()) merged[k] = v;
      return Compile(merged, absl::StrCat(path, "/allOf/0"), depth + 1);
    }
    if (s.contains("$ref")) return Ref(s, path, depth);
    if (s.contains("anyOf") || s.contains("oneOf")) {
      const char* key = s.contains("anyOf") ? "anyOf" : "oneOf";
      const Json& list = s[key];
      if (!list.is_array() || list.empty()) {
        return Unsupported(absl::StrCat("\"", key, "\" must be a non-empty array"), path);
      }
      Json base = s;
      base.erase(key);
      std::vector<Sequence> alts;
      for (size_t k = 0; k < list.size(); ++k) {
        Json alt = base;
        if (list[k].is_object()) {
          for (const auto& [kk, v] : list[k].items()) alt[kk] = v;
        } else {
          alt = list[k];
        }
        ASSIGN_OR_RETURN(Symbol sym, Compile(alt, absl::StrCat(path, "/", key, "/", k), depth + 1));
        alts.push_back({sym});
      }
      return g_->Group(std::move(alts), "anyof");
    }
    if (s.contains("const")) return g_->Group({g_->Literal(s["const"].dump())}, "const");
    if (s.contains("enum")) {
      const Json& e = s["enum"];
      if (!e.is_array() || e.empty())
        return Unsupported("\"enum\" must be a non-empty array", path);
      std::vector<Sequence> alts;
      for (const Json& v : e) alts.push_back(g_->Literal(v.dump()));
      return g_->Group(std::move(alts), "enum");
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array()) {
        for (const Json& x : t) {
          if (!x.is_string()) return Unsupported("\"type\" must name types", path);
          types.push_back(x.get<std::string>());
        }
      } else {
        return Unsupported("\"type\" must be a string or an array", path);
      }
      if (s.value("nullable", false)) types.push_back("null");
    } else if (s.contains("properties") || s.contains("additionalProperties")) {
      types = {"object"};
    } else if (s.contains("items") || s.contains("prefixItems")) {
      types = {"array"};
    } else if (s.contains("pattern") || s.contains("format") || s.contains("minLength") ||
               s.contains("maxLength")) {
      types = {"string"};
    } else if (s.contains("minimum") || s.contains("maximum")) {
      types = {"number"};
    } else {
      return AnyValue();
    }
    std::vector<Sequence> alts;
    for (const std::string& t : types) {
      absl::StatusOr<Symbol> sym;
      if (t == "object")
        sym = Object(s, path, depth);
      else if (t == "array")
        sym = Array(s, path, depth);
      else if (t == "string")
        sym = String(s, path);
      else if (t == "integer")
        sym = Number(s, path, /*integer=*/true);
      else if (t == "number")
        sym = Number(s, path, /*integer=*/false);
      else if (t == "boolean")
        sym = g_->Group({g_->Literal("true"), g_->Literal("false")}, "bool");
      else if (t == "null")
        sym = g_->Group({g_->Literal("null")}, "null");
      else
        return Unsupported(absl::StrCat("unknown type \"", t, "\""), path);
      if (!sym.ok()) return sym.status();
      alts.push_back({*sym});
    }
    return g_->Group(std::move(alts), "value");
  }

 private:
  absl::StatusOr<Symbol> Ref(const Json& s, const std::string& path, int depth) {
    if (!s["$ref"].is_string()) return Unsupported("\"$ref\" must be a string", path);
    const std::string ref = s["$ref"].get<std::string>();
    if (s.size() > 1) {
      for (const auto& [k, v] : s.items()) {
        if (k != "$ref" && k != "description" && k != "title" && k != "default" && k != "$defs" &&
            k != "definitions") {
          return Unsupported(absl::StrCat("keyword \"", k, "\" beside \"$ref\" is not supported"),
                             path);
        }
      }
    }
    auto it = refs_.find(ref);
    if (it != refs_.end()) return Symbol::Rule(it->second);
    if (ref.empty() || ref[0] != '#') {
      return Unsupported(absl::StrCat("\"$ref\" \"", ref, "\" is not local (#/...)"), path);
    }
    const Json* target = nullptr;
    try {
      const Json::json_pointer ptr(ref.substr(1));
      if (root_.contains(ptr)) target = &root_.at(ptr);
    } catch (const std::exception&) {
    }
    if (target == nullptr) {
      return Unsupported(absl::StrCat("\"$ref\" \"", ref, "\" does not resolve"), path);
    }
    const uint32_t rule = g_->NewRule(absl::StrCat("ref:", ref));
    refs_[ref] = rule;
    ASSIGN_OR_RETURN(Symbol sym, Compile(*target, ref, depth + 1));
    g_->SetAlternatives(rule, {{sym}});
    return Symbol::Rule(rule);
  }

  Symbol StringChar() {
    if (string_char_) return *string_char_;
    CharClass plain;
    plain.Add(0x20, 0x10FFFF);
    CharClass special;
    special.Add('"', '"');
    special.Add('\\', '\\');
    plain.Subtract(special);
    ByteSet esc;
    for (char c : std::string("\"\\/bfnrt")) esc.set(static_cast<uint8_t>(c));
    ByteSet hex;
    for (char c : std::string("0123456789abcdefABCDEF")) hex.set(static_cast<uint8_t>(c));
    const Symbol h = g_->Bytes(hex);
    string_char_ = g_->Group({{g_->Class(plain)},
                              {g_->Byte('\\'), g_->Bytes(esc)},
                              {g_->Byte('\\'), g_->Byte('u'), h, h, h, h}},
                             "char");
    return *string_char_;
  }

  absl::StatusOr<Symbol> String(const Json& s, const std::string& path) {
    auto count = [&](const char* key, int def) -> absl::StatusOr<int> {
      if (!s.contains(key)) return def;
      if (!s[key].is_number_unsigned() &&
          !(s[key].is_number_integer() && s[key].get<int64_t>() >= 0)) {
        return Unsupported(absl::StrCat("\"", key, "\" must be a non-negative integer"), path);
      }
      return static_cast<int>(std::min<int64_t>(s[key].get<int64_t>(), 1 << 20));
    };
    ASSIGN_OR_RETURN(int min_len, count("minLength", 0));
    ASSIGN_OR_RETURN(int max_len, count("maxLength", -1));
    Sequence body;
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) return Unsupported("\"pattern\" must be a string", path);
      std::string p = s["pattern"].get<std::string>();
      absl::StatusOr<Symbol> sym = CompileRegex(p, g_, {.json_string = true});
      if (!sym.ok()) {
        return Unsupported(absl::StrCat("\"pattern\": ", sym.status().message()), path);
      }
      body = {*sym};
      if (s.contains("minLength") || s.contains("maxLength")) {
        return Unsupported("\"pattern\" with \"minLength\"/\"maxLength\" is not supported", path);
      }
    } else if (s.contains("format")) {
      static const std::pair<const char*, const char*> kFormats[] = {
          {"date", R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))"},
          {"time", R"(([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))"},
          {"date-time",
           R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))"},
          {"uuid", R"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"},
          {"ipv4", R"(((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))"},
          {"email", R"([A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){0,4})"},
      };
      const std::string f = s["format"].is_string() ? s["format"].get<std::string>() : "";
      const char* re = nullptr;
      for (const auto& [name, r] : kFormats) {
        if (f == name) re = r;
      }
      if (re == nullptr) return Unsupported(absl::StrCat("unsupported format \"", f, "\""), path);
      ASSIGN_OR_RETURN(Symbol sym, CompileRegex(re, g_, {.json_string = true}));
      body = {sym};
    } else {
      absl::StatusOr<Symbol> rep = g_->Repeat({StringChar()}, min_len, max_len);
      if (!rep.ok()) return Unsupported(rep.status().message(), path);
      body = {*rep};
    }
    Sequence seq = {g_->Byte('"')};
    seq.insert(seq.end(), body.begin(), body.end());
    seq.push_back(g_->Byte('"'));
    return g_->Group({std::move(seq)}, "string");
  }

  absl::StatusOr<Symbol> Number(const Json& s, const std::string& path, bool integer) {
    std::optional<double> lo, hi;
    bool lo_ex = false, hi_ex = false;
    auto num = [&](const char* key, std::optional<double>* out, bool* ex,
                   bool exclusive) -> absl::Status {
      if (!s.contains(key)) return absl::OkStatus();
      const Json& v = s[key];
      if (v.is_boolean())
        return Unsupported(absl::StrCat("boolean \"", key, "\" (draft 4) is not supported"), path);
      if (!v.is_number()) return Unsupported(absl::StrCat("\"", key, "\" must be a number"), path);
      const double d = v.get<double>();
      // The tighter of minimum/exclusiveMinimum wins (and likewise for the maximum).
      const bool is_min = std::string(key).find("inimum") != std::string::npos;
      if (!out->has_value() || (is_min ? d >= **out : d <= **out)) {
        *out = d;
        *ex = exclusive;
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(num("minimum", &lo, &lo_ex, false));
    RETURN_IF_ERROR(num("exclusiveMinimum", &lo, &lo_ex, true));
    RETURN_IF_ERROR(num("maximum", &hi, &hi_ex, false));
    RETURN_IF_ERROR(num("exclusiveMaximum", &hi, &hi_ex, true));
    if (lo && std::fabs(*lo) >= kBig) lo.reset();
    if (hi && std::fabs(*hi) >= kBig) hi.reset();
    ByteSet digit, nz;
    for (int d = '0'; d <= '9'; ++d) digit.set(d);
    for (int d = '1'; d <= '9'; ++d) nz.set(d);
    const Symbol D = g_->Bytes(digit);
    std::optional<int64_t> ilo, ihi;
    if (lo) ilo = static_cast<int64_t>(lo_ex ? std::floor(*lo) + 1 : std::ceil(*lo));
    if (hi) ihi = static_cast<int64_t>(hi_ex ? std::ceil(*hi) - 1 : std::floor(*hi));
    if (ilo && ihi && *ilo > *ihi && integer) {
      return Unsupported("the bounds leave no integer", path);
    }
    std::vector<Sequence> alts;
    if (!ilo || !ihi || *ilo <= *ihi) alts.push_back({IntegerRange(g_, ilo, ihi)});
    if (integer) return g_->Group(std::move(alts), "integer");
    if (!lo && !hi) {
      // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
      ByteSet e, sign;
      e.set('e'), e.set('E'), sign.set('+'), sign.set('-');
      Sequence n = {g_->Optional({g_->Byte('-')}),
                    g_->Group({{g_->Byte('0')}, {g_->Bytes(nz), g_->Star({D})}}, "int"),
                    g_->Optional({g_->Byte('.'), g_->Plus({D})}),
                    g_->Optional({g_->Bytes(e), g_->Optional({g_->Bytes(sign)}), g_->Plus({D})})};
      return g_->Group({std::move(n)}, "number");
    }
    // A fraction that is never zero, so k.f is strictly between k and k+1.
    const Symbol frac = g_->Group({{g_->Byte('.'), g_->Star({D}), g_->Bytes(nz)}}, "frac");
    // Non-negative k.f: k >= ceil(lo), k + 1 <= floor(hi).
    {
      std::optional<int64_t> kmin = static_cast<int64_t>(lo ? std::max(0.0, std::ceil(*lo)) : 0);
      std::optional<int64_t> kmax;
      if (hi) kmax = static_cast<int64_t>(std::floor(*hi)) - 1;
      if (!kmax || *kmax >= *kmin) alts.push_back({IntegerRange(g_, kmin, kmax), frac});
    }
    // Negative -k.f: k + 1 <= floor(-lo), k >= ceil(-hi) when hi < 0.
    {
      const int64_t kmin = hi && *hi < 0 ? static_cast<int64_t>(std::ceil(-*hi)) : 0;
      std::optional<int64_t> kmax;
      if (lo) kmax = static_cast<int64_t>(std::floor(-*lo)) - 1;
      if (!kmax || *kmax >= kmin) {
        alts.push_back({g_->Byte('-'), IntegerRange(g_, kmin, kmax), frac});
      }
    }
    if (alts.empty()) {
      return Unsupported(
          "number bounds with no integer and no whole unit interval between them are not "
          "supported",
          path);
    }
    return g_->Group(std::move(alts), "number");
  }

  absl::StatusOr<Symbol> Array(const Json& s, const std::string& path, int depth) {
    auto count = [&](const char* key, int def) -> absl::StatusOr<int> {
      if (!s.contains(key)) return def;
      if (!s[key].is_number_integer() || s[key].get<int64_t>() < 0) {
        return Unsupported(absl::StrCat("\"", key, "\" must be a non-negative integer"), path);
      }
      return static_cast<int>(std::min<int64_t>(s[key].get<int64_t>(), 1 << 20));
    };
    ASSIGN_OR_RETURN(int min_items, count("minItems", 0));
    ASSIGN_OR_RETURN(int max_items, count("maxItems", -1));
    const Symbol sep = g_->Group({g_->Literal(", ")}, "sep");
    Sequence seq = {g_->Byte('[')};
    if (s.contains("prefixItems")) {
      const Json& p = s["prefixItems"];
      if (!p.is_array()) return Unsupported("\"prefixItems\" must be an array", path);
      if (s.contains("items") && !(s["items"].is_boolean() && !s["items"].get<bool>())) {
        return Unsupported("\"items\" beside \"prefixItems\" is only supported as false", path);
      }
      for (size_t k = 0; k < p.size(); ++k) {
        if (k > 0) seq.push_back(sep);
        ASSIGN_OR_RETURN(Symbol item,
                         Compile(p[k], absl::StrCat(path, "/prefixItems/", k), depth + 1));
        seq.push_back(item);
      }
      seq.push_back(g_->Byte(']'));
      return g_->Group({std::move(seq)}, "tuple");
    }
    Symbol item = AnyValue();
    if (s.contains("items")) {
      ASSIGN_OR_RETURN(item, Compile(s["items"], absl::StrCat(path, "/items"), depth + 1));
    }
    if (max_items >= 0 && min_items > max_items) {
      return Unsupported("\"minItems\" is above \"maxItems\"", path);
    }
    if (max_items != 0) {
      absl::StatusOr<Symbol> rest =
          g_->Repeat({sep, item}, std::max(min_items - 1, 0), max_items < 0 ? -1 : max_items - 1);
      if (!rest.ok()) return Unsupported(rest.status().message(), path);
      if (min_items == 0) {
        seq.push_back(g_->Optional({item, *rest}));
      } else {
        seq.push_back(item);
        seq.push_back(*rest);
      }
    }
    seq.push_back(g_->Byte(']'));
    return g_->Group({std::move(seq)}, "array");
  }

  absl::StatusOr<Symbol> Object(const Json& s, const std::string& path, int depth) {
    struct Prop {
      std::string name;
      Symbol value;
      bool required;
    };
    std::vector<Prop> props;
    absl::flat_hash_set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) return Unsupported("\"required\" must be an array", path);
      for (const Json& r : s["required"]) {
        if (!r.is_string()) return Unsupported("\"required\" must list strings", path);
        required.insert(r.get<std::string>());
      }
    }
    if (s.contains("properties")) {
      const Json& p = s["properties"];
      if (!p.is_object()) return Unsupported("\"properties\" must be an object", path);
      for (const auto& [name, sub] : p.items()) {
        ASSIGN_OR_RETURN(Symbol v,
                         Compile(sub, absl::StrCat(path, "/properties/", Escape(name)), depth + 1));
        props.push_back({name, v, required.contains(name)});
      }
    }
    for (const std::string& r : required) {
      bool found = false;
      for (const Prop& p : props) found |= p.name == r;
      if (!found) {
        return Unsupported(
            absl::StrCat("required property \"", r, "\" has no schema in \"properties\""), path);
      }
    }
    // Extra properties: a schema, or any value when allowed. Strict by default: with
    // "properties" given and additionalProperties unset, no others.
    std::optional<Symbol> extra;
    if (s.contains("additionalProperties")) {
      const Json& a = s["additionalProperties"];
      if (!(a.is_boolean() && !a.get<bool>())) {
        ASSIGN_OR_RETURN(Symbol v,
                         Compile(a, absl::StrCat(path, "/additionalProperties"), depth + 1));
        extra = v;
      }
    } else if (!s.contains("properties")) {
      extra = AnyValue();
    }
    // R[i][c]: the properties from i on; c = whether one was written already (a comma first).
    const size_t n = props.size();
    std::vector<std::array<uint32_t, 2>> r(n + 1);
    for (size_t i = 0; i <= n; ++i) {
      r[i] = {g_->NewRule("props"), g_->NewRule("props")};
    }
    const Symbol comma = g_->Group({g_->Literal(", ")}, "sep");
    for (int c = 0; c < 2; ++c) {
      for (size_t i = 0; i < n; ++i) {
        Sequence take;
        if (c) take.push_back(comma);
        for (const Symbol& x : g_->Literal(Json(props[i].name).dump() + ": ")) take.push_back(x);
        take.push_back(props[i].value);
        take.push_back(Symbol::Rule(r[i + 1][1]));
        std::vector<Sequence> alts = {std::move(take)};
        if (!props[i].required) alts.push_back({Symbol::Rule(r[i + 1][c])});
        g_->SetAlternatives(r[i][c], std::move(alts));
      }
      std::vector<Sequence> end = {{}};
      if (extra) {
        Sequence more;
        if (c) more.push_back(comma);
        more.push_back(GenericString());
        for (const Symbol& x : g_->Literal(": ")) more.push_back(x);
        more.push_back(*extra);
        more.push_back(Symbol::Rule(r[n][1]));
        end.push_back(std::move(more));
      }
      g_->SetAlternatives(r[n][c], std::move(end));
    }
    return g_->Group({{g_->Byte('{'), Symbol::Rule(r[0][0]), g_->Byte('}')}}, "object");
  }

  Symbol GenericString() {
    if (!generic_string_) {
      generic_string_ =
          g_->Group({{g_->Byte('"'), g_->Star({StringChar()}), g_->Byte('"')}}, "string");
    }
    return *generic_string_;
  }

  // Any JSON value.
  Symbol AnyValue() {
    if (any_value_) return Symbol::Rule(*any_value_);
    const uint32_t value = g_->NewRule("any");
    any_value_ = value;
    const Symbol v = Symbol::Rule(value);
    const Symbol comma = g_->Group({g_->Literal(", ")}, "sep");
    const Symbol str = GenericString();
    Sequence member = {str};
    for (const Symbol& x : g_->Literal(": ")) member.push_back(x);
    member.push_back(v);
    Sequence more_members = {comma};
    more_members.insert(more_members.end(), member.begin(), member.end());
    Sequence obj_body = member;
    obj_body.push_back(g_->Star(more_members));
    const Symbol obj =
        g_->Group({{g_->Byte('{'), g_->Optional(obj_body), g_->Byte('}')}}, "object");
    const Symbol arr = g_->Group(
        {{g_->Byte('['), g_->Optional({v, g_->Star({comma, v})}), g_->Byte(']')}}, "array");
    Json generic = Json::object();
    generic["type"] = "number";
    const Symbol num = *Number(generic, "#", false);
    g_->SetAlternatives(value, {{obj},
                                {arr},
                                {str},
                                {num},
                                g_->Literal("true"),
                                g_->Literal("false"),
                                g_->Literal("null")});
    return v;
  }

  const Json& root_;
  Grammar* g_;
  absl::flat_hash_map<std::string, uint32_t> refs_;
  std::optional<Symbol> string_char_, generic_string_;
  std::optional<uint32_t> any_value_;
};

// Text until (and including) the first occurrence of `lit`, then `then`; with `may_end`, the
// text may also end without it. Built as the string-matching automaton of `lit` (rules S_i:
// the last i bytes read are lit's first i), so the matcher's stacks stay flat.
Symbol UntilLiteral(Grammar* g, const std::string& lit, Sequence then, bool may_end,
                    const ByteSet& forbidden = ByteSet()) {
  const size_t n = lit.size();
  std::vector<uint32_t> state(n);
  for (size_t i = 0; i < n; ++i) state[i] = g->NewRule("until");
  // next(i, c): the longest prefix of lit that is a suffix of lit[0..i) + c.
  auto next = [&](size_t i, uint8_t c) {
    std::string s = lit.substr(0, i);
    s.push_back(static_cast<char>(c));
    for (size_t k = std::min(s.size(), n); k > 0; --k) {
      if (s.compare(s.size() - k, k, lit, 0, k) == 0) return k;
    }
    return size_t{0};
  };
  for (size_t i = 0; i < n; ++i) {
    std::vector<ByteSet> to(n);
    for (int c = 0; c < 256; ++c) {
      if (forbidden[c]) continue;
      const size_t j = next(i, static_cast<uint8_t>(c));
      if (j == n) continue;  // the literal completes: handled below
      to[j].set(c);
    }
    std::vector<Sequence> alts;
    for (size_t j = 0; j < n; ++j) {
      if (to[j].any()) alts.push_back({g->Bytes(to[j]), Symbol::Rule(state[j])});
    }
    if (i == n - 1) {
      Sequence done = {g->Byte(static_cast<uint8_t>(lit[n - 1]))};
      done.insert(done.end(), then.begin(), then.end());
      alts.push_back(std::move(done));
    }
    if (may_end) alts.push_back({});
    g->SetAlternatives(state[i], std::move(alts));
  }
  return Symbol::Rule(state[0]);
}

// A tool-call parameter's value: raw text for strings (as the template writes them), JSON for
// other types.
absl::StatusOr<Symbol> ParamValue(const Json& schema, Grammar* g, SchemaCompiler* json,
                                  const std::string& path) {
  if (schema.is_object() && schema.contains("type") && schema["type"] == "string" &&
      !schema.contains("enum") && !schema.contains("const")) {
    if (schema.contains("pattern") && schema["pattern"].is_string()) {
      absl::StatusOr<Symbol> sym = CompileRegex(schema["pattern"].get<std::string>(), g);
      if (!sym.ok())
        return Unsupported(absl::StrCat("\"pattern\": ", sym.status().message()), path);
      return sym;
    }
    CharClass cls;
    cls.Add(0, 0x10FFFF);
    CharClass lt;
    lt.Add('<', '<');
    cls.Subtract(lt);  // keeps "</parameter>" out of the value
    const int min = schema.value("minLength", 0);
    const int max = schema.value("maxLength", -1);
    absl::StatusOr<Symbol> rep = g->Repeat({g->Class(cls)}, min, max);
    if (!rep.ok()) return Unsupported(rep.status().message(), path);
    return rep;
  }
  if (schema.is_object() && schema.contains("enum") && schema.contains("type") &&
      schema["type"] == "string") {
    std::vector<Sequence> alts;
    for (const Json& v : schema["enum"]) {
      if (v.is_string()) alts.push_back(g->Literal(v.get<std::string>()));
    }
    if (alts.empty()) return Unsupported("\"enum\" has no strings", path);
    return g->Group(std::move(alts), "enum");
  }
  return json->Compile(schema, path);
}

}  // namespace

absl::StatusOr<Symbol> CompileJsonSchema(const Json& schema, Grammar* g, const std::string& path) {
  SchemaCompiler c(schema, g);
  return c.Compile(schema, path);
}

absl::StatusOr<Grammar> JsonSchemaGrammar(const Json& schema) {
  Grammar g;
  ASSIGN_OR_RETURN(Symbol s, CompileJsonSchema(schema, &g));
  g.SetRoot(s);
  RETURN_IF_ERROR(g.Validate());
  return g;
}

absl::StatusOr<Grammar> ToolCallGrammar(const Json& tools, bool required) {
  if (!tools.is_array() || tools.empty()) {
    return absl::InvalidArgumentError("tool-call constraint: the request has no tools");
  }
  Grammar g;
  std::vector<Sequence> calls;
  for (size_t t = 0; t < tools.size(); ++t) {
    const Json& fn = tools[t].contains("function") ? tools[t]["function"] : tools[t];
    const std::string path = absl::StrCat("tools[", t, "].parameters");
    if (!fn.contains("name") || !fn["name"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("tools[", t, "]: has no name"));
    }
    const std::string name = fn["name"].get<std::string>();
    Json params = fn.contains("parameters") ? fn["parameters"] : Json::object();
    SchemaCompiler json(params, &g);
    struct Param {
      std::string name;
      Symbol value;
      bool required;
    };
    std::vector<Param> list;
    absl::flat_hash_set<std::string> req;
    if (params.contains("required") && params["required"].is_array()) {
      for (const Json& r : params["required"]) {
        if (r.is_string()) req.insert(r.get<std::string>());
      }
    }
    if (params.contains("properties") && params["properties"].is_object()) {
      for (const auto& [pname, sub] : params["properties"].items()) {
        absl::StatusOr<Symbol> v = ParamValue(sub, &g, &json, absl::StrCat("#/properties/", pname));
        if (!v.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.status().message()));
        }
        list.push_back({pname, *v, req.contains(pname)});
      }
    }
    // P_i: the parameters from i on, each optional one may be left out.
    std::vector<uint32_t> p(list.size() + 1);
    for (auto& r : p) r = g.NewRule("params");
    for (size_t i = 0; i < list.size(); ++i) {
      Sequence take = g.Literal(absl::StrCat("<parameter=", list[i].name, ">\n"));
      take.push_back(list[i].value);
      for (const Symbol& x : g.Literal("\n</parameter>\n")) take.push_back(x);
      take.push_back(Symbol::Rule(p[i + 1]));
      std::vector<Sequence> alts = {std::move(take)};
      if (!list[i].required) alts.push_back({Symbol::Rule(p[i + 1])});
      g.SetAlternatives(p[i], std::move(alts));
    }
    g.SetAlternatives(p[list.size()], {{}});
    Sequence call = g.Literal(absl::StrCat("<function=", name, ">\n"));
    call.push_back(Symbol::Rule(p[0]));
    for (const Symbol& x : g.Literal("</function>\n</tool_call>")) call.push_back(x);
    calls.push_back(std::move(call));
  }
  const Symbol body = g.Group(std::move(calls), "function");
  // One or more calls, separated by a newline; "<tool_call>\n" opens each.
  Sequence one = g.Literal("<tool_call>\n");
  one.push_back(body);
  const Symbol call = g.Group({one}, "tool_call");
  Sequence more = g.Literal("\n");
  more.push_back(call);
  const Symbol calls_sym = g.Group({{call, g.Star(more)}}, "tool_calls");
  if (required) {
    g.SetRoot(calls_sym);
  } else {
    // Free text; once "<tool_call>" is written, what follows is a valid call (and more calls).
    const Sequence after_open = {g.Byte('\n'), body, g.Star(more)};
    g.SetRoot(UntilLiteral(&g, "<tool_call>", after_open, /*may_end=*/true));
  }
  RETURN_IF_ERROR(g.Validate());
  return g;
}

void PrefixWithReasoning(Grammar* g) {
  const uint32_t answer = g->NewRule("answer");
  g->SetAlternatives(answer, g->rules()[0].alts);
  const Sequence then = {g->Optional({g->Byte('\n'), g->Optional({g->Byte('\n')})}),
                         Symbol::Rule(answer)};
  g->SetRoot(UntilLiteral(g, "</think>", then, /*may_end=*/false));
}

}  // namespace qwen::grammar

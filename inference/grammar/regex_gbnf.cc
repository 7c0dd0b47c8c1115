// Regular expressions, GBNF and choice lists to the grammar IR.
#include <cctype>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/grammar/compile.h"

namespace qwen::grammar {
namespace {

// Decodes one UTF-8 code point at s[*i] (invalid bytes are taken as themselves).
uint32_t NextCodePoint(absl::string_view s, size_t* i) {
  const uint8_t c = static_cast<uint8_t>(s[*i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (*i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[*i + k]) & 0x3F);
  *i += n;
  return cp;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

CharClass ClassOf(std::initializer_list<std::pair<uint32_t, uint32_t>> ranges) {
  CharClass c;
  for (auto r : ranges) c.Add(r.first, r.second);
  c.Normalize();
  return c;
}

const CharClass& Digits() {
  static const CharClass* c = new CharClass(ClassOf({{'0', '9'}}));
  return *c;
}
const CharClass& Word() {
  static const CharClass* c =
      new CharClass(ClassOf({{'0', '9'}, {'A', 'Z'}, {'a', 'z'}, {'_', '_'}}));
  return *c;
}
const CharClass& Space() {
  static const CharClass* c = new CharClass(ClassOf({{' ', ' '}, {'\t', '\r'}}));
  return *c;
}

// Shared by the regex and GBNF parsers: character classes and escapes.
class Scanner {
 public:
  Scanner(absl::string_view text, std::string what) : s_(text), what_(std::move(what)) {}

  absl::Status Error(absl::string_view why) const {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": ", why, " at offset ", pos_));
  }
  bool Done() const { return pos_ >= s_.size(); }
  char Peek(size_t ahead = 0) const { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c || Done()) return false;
    ++pos_;
    return true;
  }

  // An escape after the backslash, as a class (for \d etc.) or a single code point.
  absl::Status Escape(CharClass* out, bool* is_class) {
    if (Done()) return Error("dangling backslash");
    const char c = s_[pos_++];
    *is_class = false;
    uint32_t cp = 0;
    switch (c) {
      case 'd':
        *out = Digits();
        *is_class = true;
        return absl::OkStatus();
      case 'D':
        *out = Digits().Negated();
        *is_class = true;
        return absl::OkStatus();
      case 'w':
        *out = Word();
        *is_class = true;
        return absl::OkStatus();
      case 'W':
        *out = Word().Negated();
        *is_class = true;
        return absl::OkStatus();
      case 's':
        *out = Space();
        *is_class = true;
        return absl::OkStatus();
      case 'S':
        *out = Space().Negated();
        *is_class = true;
        return absl::OkStatus();
      case 'n':
        cp = '\n';
        break;
      case 't':
        cp = '\t';
        break;
      case 'r':
        cp = '\r';
        break;
      case 'f':
        cp = '\f';
        break;
      case 'v':
        cp = '\v';
        break;
      case '0':
        cp = 0;
        break;
      case 'x':
      case 'u':
      case 'U': {
        int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        bool braced = false;
        if (c == 'u' && Peek() == '{') {
          ++pos_;
          braced = true;
          digits = 6;
        }
        int got = 0;
        while (got < digits && HexValue(Peek()) >= 0 && !Done()) {
          cp = cp * 16 + HexValue(s_[pos_++]);
          ++got;
        }
        if (braced && !Consume('}')) return Error("unclosed \\u{...}");
        if (got == 0 || (!braced && got != digits)) return Error("bad hex escape");
        if (cp > 0x10FFFF) return Error("code point above U+10FFFF");
        break;
      }
      case 'b':
      case 'B':
        return Error("word boundary \\b is not supported");
      default:
        if (c >= '1' && c <= '9') return Error("backreferences are not supported");
        if (std::isalpha(static_cast<unsigned char>(c))) {
          return Error(absl::StrCat("unknown escape \\", std::string(1, c)));
        }
        --pos_;
        cp = NextCodePoint(s_, &pos_);
        break;
    }
    out->ranges = {{cp, cp}};
    return absl::OkStatus();
  }

  // After '[': the class up to and including ']'.
  absl::Status Class(CharClass* out) {
    const bool negated = Consume('^');
    CharClass cls;
    bool first = true;
    while (true) {
      if (Done()) return Error("unclosed character class");
      if (Peek() == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      CharClass item;
      bool is_class = false;
      if (Consume('\\')) {
        RETURN_IF_ERROR(Escape(&item, &is_class));
      } else {
        if (Peek() == '[' && Peek(1) == ':')
          return Error("POSIX classes [:name:] are not supported");
        const uint32_t cp = NextCodePoint(s_, &pos_);
        item.ranges = {{cp, cp}};
      }
      if (!is_class && Peek() == '-' && Peek(1) != ']' && pos_ + 1 < s_.size()) {
        ++pos_;
        CharClass hi;
        bool hi_class = false;
        if (Consume('\\')) {
          RETURN_IF_ERROR(Escape(&hi, &hi_class));
          if (hi_class) return Error("a class escape cannot end a range");
        } else {
          const uint32_t cp = NextCodePoint(s_, &pos_);
          hi.ranges = {{cp, cp}};
        }
        if (hi.ranges[0].first < item.ranges[0].first) return Error("range out of order");
        item.ranges = {{item.ranges[0].first, hi.ranges[0].first}};
      }
      for (auto r : item.ranges) cls.Add(r.first, r.second);
    }
    cls.Normalize();
    *out = negated ? cls.Negated() : cls;
    return absl::OkStatus();
  }

  // After '{': m}, m,}, m,n}.
  absl::Status Counts(int* min, int* max) {
    auto number = [&](int* v) {
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) return false;
      *v = 0;
      while (std::isdigit(static_cast<unsigned char>(Peek())) && !Done()) {
        *v = std::min(*v * 10 + (s_[pos_++] - '0'), 1 << 20);
      }
      return true;
    };
    if (!number(min)) return Error("expected a count after {");
    *max = *min;
    if (Consume(',')) {
      if (!number(max)) *max = -1;
    }
    if (!Consume('}')) return Error("expected } after a count");
    return absl::OkStatus();
  }

  absl::string_view s_;
  size_t pos_ = 0;
  std::string what_;
};

// ------------------------------------------------------------------------------------------
// Regular expressions.

class RegexParser {
 public:
  RegexParser(absl::string_view pattern, Grammar* g, const RegexOptions& o)
      : sc_(pattern, "regex"), g_(g), o_(o) {}

  absl::StatusOr<Symbol> Parse() {
    sc_.Consume('^');
    ASSIGN_OR_RETURN(Symbol s, Alternation());
    if (!sc_.Done()) return sc_.Error("unbalanced )");
    return s;
  }

 private:
  // One code point class as matched in the output (escaped when inside a JSON string).
  Symbol Chars(const CharClass& cls) {
    if (!o_.json_string) return g_->Class(cls);
    CharClass plain = cls;
    CharClass special;
    special.Add(0, 0x1F);
    special.Add('"', '"');
    special.Add('\\', '\\');
    plain.Subtract(special);
    std::vector<Sequence> alts;
    if (!plain.ranges.empty()) alts.push_back({g_->Class(plain)});
    CharClass c = cls;
    c.Normalize();
    for (auto [lo, hi] : c.ranges) {
      for (uint32_t cp = lo; cp <= std::min<uint32_t>(hi, 0x5C); ++cp) {
        if (cp >= 0x20 && cp != '"' && cp != '\\') continue;
        std::string esc;
        switch (cp) {
          case '"':
            esc = "\\\"";
            break;
          case '\\':
            esc = "\\\\";
            break;
          case '\n':
            esc = "\\n";
            break;
          case '\t':
            esc = "\\t";
            break;
          case '\r':
            esc = "\\r";
            break;
          case '\b':
            esc = "\\b";
            break;
          case '\f':
            esc = "\\f";
            break;
          default: {
            static const char kHex[] = "0123456789abcdef";
            esc =
                absl::StrCat("\\u00", std::string(1, kHex[cp >> 4]), std::string(1, kHex[cp & 15]));
          }
        }
        alts.push_back(g_->Literal(esc));
      }
    }
    if (alts.empty()) return g_->Bytes(ByteSet());  // matches nothing
    return g_->Group(std::move(alts), "jchar");
  }

  absl::StatusOr<Symbol> Alternation() {
    std::vector<Sequence> alts;
    while (true) {
      ASSIGN_OR_RETURN(Sequence seq, Concatenation());
      alts.push_back(std::move(seq));
      if (!sc_.Consume('|')) break;
    }
    if (alts.size() == 1 && alts[0].empty()) return g_->Empty();
    return g_->Group(std::move(alts), "alt");
  }

  absl::StatusOr<Sequence> Concatenation() {
    Sequence seq;
    while (!sc_.Done() && sc_.Peek() != '|' && sc_.Peek() != ')') {
      if (sc_.Peek() == '$' && sc_.pos_ + 1 == sc_.s_.size()) {
        ++sc_.pos_;
        break;
      }
      ASSIGN_OR_RETURN(Sequence atom, Atom());
      ASSIGN_OR_RETURN(Sequence q, Quantified(std::move(atom)));
      seq.insert(seq.end(), q.begin(), q.end());
    }
    return seq;
  }

  absl::StatusOr<Sequence> Atom() {
    const char c = sc_.Peek();
    if (c == '(') {
      ++sc_.pos_;
      if (sc_.Consume('?')) {
        if (sc_.Peek() == '=' || sc_.Peek() == '!') return sc_.Error("lookahead is not supported");
        if (sc_.Peek() == '<') return sc_.Error("lookbehind and named groups are not supported");
        if (!sc_.Consume(':')) return sc_.Error("unsupported group (?");
      }
      ASSIGN_OR_RETURN(Symbol inner, Alternation());
      if (!sc_.Consume(')')) return sc_.Error("unclosed (");
      return Sequence{inner};
    }
    if (c == '[') {
      ++sc_.pos_;
      CharClass cls;
      RETURN_IF_ERROR(sc_.Class(&cls));
      return Sequence{Chars(cls)};
    }
    if (c == '.') {
      ++sc_.pos_;
      CharClass nl;
      nl.Add('\n', '\n');
      return Sequence{Chars(nl.Negated())};
    }
    if (c == '\\') {
      ++sc_.pos_;
      CharClass cls;
      bool is_class;
      RETURN_IF_ERROR(sc_.Escape(&cls, &is_class));
      return Sequence{Chars(cls)};
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') {
      return sc_.Error(absl::StrCat("nothing to repeat before ", std::string(1, c)));
    }
    if (c == '^') return sc_.Error("^ is only supported at the start");
    if (c == '$') return sc_.Error("$ is only supported at the end");
    const uint32_t cp = NextCodePoint(sc_.s_, &sc_.pos_);
    CharClass one;
    one.Add(cp, cp);
    return Sequence{Chars(one)};
  }

  absl::StatusOr<Sequence> Quantified(Sequence atom) {
    while (true) {
      int min, max;
      const char c = sc_.Peek();
      if (c == '*') {
        min = 0, max = -1;
      } else if (c == '+') {
        min = 1, max = -1;
      } else if (c == '?') {
        min = 0, max = 1;
      } else if (c == '{' && std::isdigit(static_cast<unsigned char>(sc_.Peek(1)))) {
        ++sc_.pos_;
        RETURN_IF_ERROR(sc_.Counts(&min, &max));
        --sc_.pos_;
      } else {
        return atom;
      }
      ++sc_.pos_;
      if (sc_.Peek() == '?') ++sc_.pos_;  // lazy: same language
      if (sc_.Peek() == '+') return sc_.Error("possessive quantifiers are not supported");
      absl::StatusOr<Symbol> r = g_->Repeat(std::move(atom), min, max);
      if (!r.ok()) return sc_.Error(r.status().message());
      atom = Sequence{*r};
    }
  }

  Scanner sc_;
  Grammar* g_;
  RegexOptions o_;
};

// ------------------------------------------------------------------------------------------
// GBNF.

class GbnfParser {
 public:
  explicit GbnfParser(absl::string_view text) : sc_(text, "gbnf") {}

  absl::StatusOr<Grammar> Parse() {
    ids_["root"] = 0;
    SkipSpace();
    while (!sc_.Done()) {
      std::string name = Name();
      if (name.empty()) return sc_.Error("expected a rule name");
      SkipSpace();
      if (!(sc_.Consume(':') && sc_.Consume(':') && sc_.Consume('='))) {
        return sc_.Error(absl::StrCat("expected ::= after rule name \"", name, "\""));
      }
      const uint32_t id = RuleId(name);
      if (defined_.contains(id))
        return sc_.Error(absl::StrCat("rule \"", name, "\" is defined twice"));
      defined_.insert(id);
      ASSIGN_OR_RETURN(std::vector<Sequence> alts, Alternatives(/*nested=*/false));
      g_.SetAlternatives(id, std::move(alts));
      SkipSpace();
    }
    for (const auto& [name, id] : ids_) {
      if (!defined_.contains(id)) {
        return absl::InvalidArgumentError(
            name == "root" ? std::string("gbnf: no \"root\" rule")
                           : absl::StrCat("gbnf: undefined rule \"", name, "\""));
      }
    }
    if (absl::Status st = g_.Validate(); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("gbnf: ", st.message()));
    }
    return std::move(g_);
  }

 private:
  void SkipSpace() {
    while (!sc_.Done()) {
      const char c = sc_.Peek();
      if (c == '#') {
        while (!sc_.Done() && sc_.Peek() != '\n') ++sc_.pos_;
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++sc_.pos_;
      } else {
        break;
      }
    }
  }
  static bool NameChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  }
  std::string Name() {
    const size_t start = sc_.pos_;
    while (!sc_.Done() && NameChar(sc_.Peek())) ++sc_.pos_;
    return std::string(sc_.s_.substr(start, sc_.pos_ - start));
  }
  uint32_t RuleId(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    const uint32_t id = g_.NewRule(name);
    ids_[name] = id;
    return id;
  }
  // Whether the text ahead is `name ::=` (the next rule starts).
  bool AtRuleStart() {
    size_t p = sc_.pos_;
    while (p < sc_.s_.size() && NameChar(sc_.s_[p])) ++p;
    if (p == sc_.pos_) return false;
    while (p < sc_.s_.size() && (sc_.s_[p] == ' ' || sc_.s_[p] == '\t')) ++p;
    return sc_.s_.substr(p, 3) == "::=";
  }

  absl::StatusOr<std::vector<Sequence>> Alternatives(bool nested) {
    std::vector<Sequence> alts;
    while (true) {
      ASSIGN_OR_RETURN(Sequence seq, SequenceOf(nested));
      alts.push_back(std::move(seq));
      SkipSpace();
      if (!sc_.Consume('|')) break;
    }
    return alts;
  }

  absl::StatusOr<Sequence> SequenceOf(bool nested) {
    Sequence seq;
    while (true) {
      SkipSpace();
      if (sc_.Done()) break;
      const char c = sc_.Peek();
      if (c == '|' || c == ')') break;
      if (!nested && AtRuleStart()) break;
      Sequence atom;
      if (c == '"') {
        ++sc_.pos_;
        std::string lit;
        while (true) {
          if (sc_.Done()) return sc_.Error("unclosed string literal");
          if (sc_.Consume('"')) break;
          uint32_t cp;
          if (sc_.Consume('\\')) {
            CharClass cls;
            bool is_class;
            RETURN_IF_ERROR(sc_.Escape(&cls, &is_class));
            if (is_class) return sc_.Error("class escapes are not allowed in string literals");
            cp = cls.ranges[0].first;
          } else {
            cp = NextCodePoint(sc_.s_, &sc_.pos_);
          }
          AppendUtf8(cp, &lit);
        }
        atom = g_.Literal(lit);
        if (atom.empty()) atom = {g_.Empty()};
      } else if (c == '[') {
        ++sc_.pos_;
        CharClass cls;
        RETURN_IF_ERROR(sc_.Class(&cls));
        atom = {g_.Class(cls)};
      } else if (c == '.') {
        ++sc_.pos_;
        atom = {g_.AnyChar()};
      } else if (c == '(') {
        ++sc_.pos_;
        ASSIGN_OR_RETURN(std::vector<Sequence> alts, Alternatives(/*nested=*/true));
        SkipSpace();
        if (!sc_.Consume(')')) return sc_.Error("unclosed (");
        atom = {g_.Group(std::move(alts))};
      } else if (NameChar(c)) {
        atom = {Symbol::Rule(RuleId(Name()))};
      } else {
        return sc_.Error(absl::StrCat("unexpected character '", std::string(1, c), "'"));
      }
      // Postfix operators follow directly.
      while (true) {
        const char q = sc_.Peek();
        int min, max;
        if (sc_.Done()) break;
        if (q == '*') {
          min = 0, max = -1, ++sc_.pos_;
        } else if (q == '+') {
          min = 1, max = -1, ++sc_.pos_;
        } else if (q == '?') {
          min = 0, max = 1, ++sc_.pos_;
        } else if (q == '{') {
          ++sc_.pos_;
          RETURN_IF_ERROR(sc_.Counts(&min, &max));
        } else {
          break;
        }
        absl::StatusOr<Symbol> r = g_.Repeat(std::move(atom), min, max);
        if (!r.ok()) return sc_.Error(r.status().message());
        atom = {*r};
      }
      seq.insert(seq.end(), atom.begin(), atom.end());
    }
    return seq;
  }

  Scanner sc_;
  Grammar g_;
  absl::flat_hash_map<std::string, uint32_t> ids_;
  absl::flat_hash_set<uint32_t> defined_;
};

}  // namespace

absl::StatusOr<Symbol> CompileRegex(absl::string_view pattern, Grammar* g,
                                    const RegexOptions& options) {
  RegexParser p(pattern, g, options);
  return p.Parse();
}

absl::StatusOr<Grammar> RegexGrammar(absl::string_view pattern) {
  Grammar g;
  ASSIGN_OR_RETURN(Symbol s, CompileRegex(pattern, &g));
  g.SetRoot(s);
  RETURN_IF_ERROR(g.Validate());
  return g;
}

absl::StatusOr<Grammar> ChoicesGrammar(const std::vector<std::string>& choices) {
  if (choices.empty()) return absl::InvalidArgumentError("choices: at least one is needed");
  Grammar g;
  std::vector<Sequence> alts;
  for (size_t k = 0; k < choices.size(); ++k) {
    if (choices[k].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("choices[", k, "]: is empty"));
    }
    alts.push_back(g.Literal(choices[k]));
  }
  g.SetRoot(g.Group(std::move(alts), "choice"));
  return g;
}

absl::StatusOr<Grammar> GbnfGrammar(absl::string_view text) {
  GbnfParser p(text);
  return p.Parse();
}

}  // namespace qwen::grammar

#include "inference/grammar/grammar.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qwen::grammar {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kMaxRepeat = 4096;

// Splits [lo, hi] (same UTF-8 length, no surrogates) into ranges whose encodings differ only in
// byte ranges position by position: each becomes one sequence of byte sets.
void Utf8Sequences(uint32_t lo, uint32_t hi,
                   std::vector<std::vector<std::pair<uint8_t, uint8_t>>>* out) {
  static const uint32_t kMaxLen[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  for (int i = 0; i < 3; ++i) {
    if (lo <= kMaxLen[i] && hi > kMaxLen[i]) {
      Utf8Sequences(lo, kMaxLen[i], out);
      Utf8Sequences(kMaxLen[i] + 1, hi, out);
      return;
    }
  }
  if (hi <= 0x7F) {
    out->push_back({{static_cast<uint8_t>(lo), static_cast<uint8_t>(hi)}});
    return;
  }
  const int n = hi <= 0x7FF ? 2 : hi <= 0xFFFF ? 3 : 4;
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        Utf8Sequences(lo, lo | m, out);
        Utf8Sequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        Utf8Sequences(lo, (hi & ~m) - 1, out);
        Utf8Sequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  std::string a, b;
  AppendUtf8(lo, &a);
  AppendUtf8(hi, &b);
  std::vector<std::pair<uint8_t, uint8_t>> seq;
  for (size_t k = 0; k < a.size(); ++k) {
    seq.emplace_back(static_cast<uint8_t>(a[k]), static_cast<uint8_t>(b[k]));
  }
  out->push_back(std::move(seq));
}

std::string ByteSetKey(const ByteSet& s) { return s.to_string(); }

std::string DescribeByteSet(const ByteSet& s) {
  if (s.count() == 1) {
    for (int b = 0; b < 256; ++b) {
      if (!s[b]) continue;
      if (b >= 0x20 && b < 0x7F && b != '"' && b != '\\') return absl::StrFormat("\"%c\"", b);
      return absl::StrFormat("[\\x%02X]", b);
    }
  }
  std::string out = "[";
  for (int b = 0; b < 256;) {
    if (!s[b]) {
      ++b;
      continue;
    }
    int e = b;
    while (e + 1 < 256 && s[e + 1]) ++e;
    auto one = [](int c) {
      return (c >= 0x21 && c < 0x7F && c != ']' && c != '\\' && c != '-')
                 ? std::string(1, static_cast<char>(c))
                 : absl::StrFormat("\\x%02X", c);
    };
    out += one(b);
    if (e > b) out += "-" + one(e);
    b = e + 1;
  }
  return out + "]";
}

}  // namespace

void CharClass::Normalize() {
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (auto [lo, hi] : ranges) {
    if (lo > hi) continue;
    hi = std::min(hi, kMaxCodePoint);
    if (!merged.empty() && lo <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, hi);
    } else {
      merged.emplace_back(lo, hi);
    }
  }
  ranges = std::move(merged);
}

CharClass CharClass::Negated() const {
  CharClass c = *this;
  c.Normalize();
  CharClass out;
  uint32_t next = 0;
  for (auto [lo, hi] : c.ranges) {
    if (lo > next) out.Add(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.Add(next, kMaxCodePoint);
  CharClass surrogates;
  surrogates.Add(0xD800, 0xDFFF);
  out.Subtract(surrogates);
  return out;
}

void CharClass::Subtract(const CharClass& other) {
  Normalize();
  CharClass o = other;
  o.Normalize();
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (auto [lo, hi] : ranges) {
    uint32_t cur = lo;
    bool alive = true;
    for (auto [olo, ohi] : o.ranges) {
      if (ohi < cur || olo > hi) continue;
      if (olo > cur) out.emplace_back(cur, olo - 1);
      if (ohi >= hi) {
        alive = false;
        break;
      }
      cur = ohi + 1;
    }
    if (alive) out.emplace_back(cur, hi);
  }
  ranges = std::move(out);
}

Grammar::Grammar() { NewRule("root"); }

uint32_t Grammar::NewRule(std::string name) {
  rules_.push_back({std::move(name), {}});
  return static_cast<uint32_t>(rules_.size() - 1);
}

void Grammar::AddAlternative(uint32_t rule, Sequence seq) {
  rules_[rule].alts.push_back(std::move(seq));
}

void Grammar::SetAlternatives(uint32_t rule, std::vector<Sequence> alts) {
  rules_[rule].alts = std::move(alts);
}

void Grammar::SetRoot(Symbol s) { rules_[0].alts = {Sequence{s}}; }

Symbol Grammar::Bytes(const ByteSet& set) {
  const std::string key = ByteSetKey(set);
  auto it = byte_set_index_.find(key);
  if (it != byte_set_index_.end()) return Symbol::Bytes(it->second);
  byte_sets_.push_back(set);
  const uint32_t i = static_cast<uint32_t>(byte_sets_.size() - 1);
  byte_set_index_[key] = i;
  return Symbol::Bytes(i);
}

Symbol Grammar::Byte(uint8_t b) {
  ByteSet s;
  s.set(b);
  return Bytes(s);
}

Sequence Grammar::Literal(absl::string_view text) {
  Sequence seq;
  for (char c : text) seq.push_back(Byte(static_cast<uint8_t>(c)));
  return seq;
}

Symbol Grammar::Class(const CharClass& cls) {
  CharClass c = cls;
  CharClass surrogates;
  surrogates.Add(0xD800, 0xDFFF);
  c.Subtract(surrogates);
  c.Normalize();
  ByteSet ascii;
  std::vector<std::vector<std::pair<uint8_t, uint8_t>>> multi;
  for (auto [lo, hi] : c.ranges) {
    if (lo <= 0x7F) {
      for (uint32_t b = lo; b <= std::min<uint32_t>(hi, 0x7F); ++b) ascii.set(b);
      if (hi <= 0x7F) continue;
      lo = 0x80;
    }
    Utf8Sequences(lo, hi, &multi);
  }
  if (multi.empty()) return Bytes(ascii);
  std::vector<Sequence> alts;
  if (ascii.any()) alts.push_back({Bytes(ascii)});
  for (const auto& seq : multi) {
    Sequence s;
    for (auto [lo, hi] : seq) {
      ByteSet set;
      for (int b = lo; b <= hi; ++b) set.set(b);
      s.push_back(Bytes(set));
    }
    alts.push_back(std::move(s));
  }
  return Group(std::move(alts), "char");
}

Symbol Grammar::AnyChar() {
  CharClass all;
  all.Add(0, kMaxCodePoint);
  return Class(all);
}

Symbol Grammar::Group(std::vector<Sequence> alts, std::string name) {
  if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
  const uint32_t r = NewRule(std::move(name));
  rules_[r].alts = std::move(alts);
  return Symbol::Rule(r);
}

Symbol Grammar::Star(Sequence seq) {
  const uint32_t r = NewRule("star");
  seq.push_back(Symbol::Rule(r));
  rules_[r].alts = {std::move(seq), {}};
  return Symbol::Rule(r);
}

Symbol Grammar::Plus(Sequence seq) {
  Sequence s = seq;
  s.push_back(Star(std::move(seq)));
  return Group({std::move(s)}, "plus");
}

Symbol Grammar::Optional(Sequence seq) {
  const uint32_t r = NewRule("opt");
  rules_[r].alts = {std::move(seq), {}};
  return Symbol::Rule(r);
}

Symbol Grammar::Empty() {
  const uint32_t r = NewRule("empty");
  rules_[r].alts = {{}};
  return Symbol::Rule(r);
}

absl::StatusOr<Symbol> Grammar::Repeat(Sequence seq, int min, int max) {
  if (min < 0 || (max >= 0 && min > max)) {
    return absl::InvalidArgumentError(absl::StrCat("bad repetition {", min, ",", max, "}"));
  }
  if (min > kMaxRepeat || max > kMaxRepeat) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition count above ", kMaxRepeat, " is not supported"));
  }
  Sequence out;
  for (int k = 0; k < min; ++k) out.insert(out.end(), seq.begin(), seq.end());
  if (max < 0) {
    out.push_back(Star(seq));
  } else if (max > min) {
    // opt_1 ::= seq | ε ; opt_k ::= seq opt_{k-1} | ε
    Symbol tail = Optional(seq);
    for (int k = 2; k <= max - min; ++k) {
      Sequence s = seq;
      s.push_back(tail);
      tail = Optional(std::move(s));
    }
    out.push_back(tail);
  }
  if (out.empty()) return Empty();
  return Group({std::move(out)}, "repeat");
}

absl::Status Grammar::Validate() const {
  const size_t n = rules_.size();
  for (size_t r = 0; r < n; ++r) {
    if (rules_[r].alts.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rule \"", rules_[r].name, "\" has no alternatives"));
    }
  }
  // Nullable rules, by fixpoint.
  std::vector<bool> nullable(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      for (const Sequence& alt : rules_[r].alts) {
        bool all = std::all_of(alt.begin(), alt.end(), [&](const Symbol& s) {
          return s.kind == Symbol::kRule && nullable[s.index];
        });
        if (all) {
          nullable[r] = true;
          changed = true;
          break;
        }
      }
    }
  }
  // Edges r -> s where s can come first in r (after nullable symbols); tail edges (s is last)
  // do not grow the matcher's stack, others do, so a cycle through one is left recursion.
  std::vector<std::vector<uint32_t>> edges(n);
  std::vector<std::pair<uint32_t, uint32_t>> non_tail;
  for (size_t r = 0; r < n; ++r) {
    for (const Sequence& alt : rules_[r].alts) {
      for (size_t k = 0; k < alt.size(); ++k) {
        const Symbol& s = alt[k];
        if (s.kind != Symbol::kRule) break;
        edges[r].push_back(s.index);
        if (k + 1 < alt.size()) non_tail.emplace_back(static_cast<uint32_t>(r), s.index);
        if (!nullable[s.index]) break;
      }
    }
  }
  for (auto [from, to] : non_tail) {
    std::vector<bool> seen(n, false);
    std::vector<uint32_t> todo = {to};
    seen[to] = true;
    while (!todo.empty()) {
      const uint32_t r = todo.back();
      todo.pop_back();
      if (r == from) {
        return absl::InvalidArgumentError(
            absl::StrCat("rule \"", rules_[from].name, "\" is left-recursive (it can reach \"",
                         rules_[to].name, "\" and itself again without consuming input)"));
      }
      for (uint32_t s : edges[r]) {
        if (!seen[s]) {
          seen[s] = true;
          todo.push_back(s);
        }
      }
    }
  }
  return absl::OkStatus();
}

std::string Grammar::ToString() const {
  std::string out;
  for (size_t r = 0; r < rules_.size(); ++r) {
    absl::StrAppend(&out, rules_[r].name, "_", r, " ::=");
    for (size_t a = 0; a < rules_[r].alts.size(); ++a) {
      if (a > 0) out += " |";
      if (rules_[r].alts[a].empty()) out += " \"\"";
      for (const Symbol& s : rules_[r].alts[a]) {
        out += " ";
        if (s.kind == Symbol::kBytes) {
          out += DescribeByteSet(byte_sets_[s.index]);
        } else {
          absl::StrAppend(&out, rules_[s.index].name, "_", s.index);
        }
      }
    }
    out += "\n";
  }
  return out;
}

}  // namespace qwen::grammar

// A context-free grammar over bytes: the one form that JSON schemas, regular expressions, choice
// lists and GBNF grammars all compile to, and that the matcher (matcher.h) runs.
#ifndef QWEN_INFERENCE_GRAMMAR_GRAMMAR_H_
#define QWEN_INFERENCE_GRAMMAR_GRAMMAR_H_

#include <bitset>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/tokenizer/utf8.h"

namespace qwen::grammar {

using ByteSet = std::bitset<256>;

// One symbol of a sequence: a set of bytes (matches one byte in it) or a rule.
struct Symbol {
  enum Kind : uint8_t { kBytes, kRule };
  Kind kind;
  uint32_t index;  // into Grammar::byte_sets or Grammar::rules
  static Symbol Bytes(uint32_t i) { return {kBytes, i}; }
  static Symbol Rule(uint32_t i) { return {kRule, i}; }
};

using Sequence = std::vector<Symbol>;

// Unicode code point ranges, inclusive, sorted and disjoint after Normalize().
struct CharClass {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  void Add(uint32_t lo, uint32_t hi) { ranges.emplace_back(lo, hi); }
  void Normalize();
  CharClass Negated() const;  // over [0, 0x10FFFF] minus surrogates
  void Subtract(const CharClass& other);
};

// Rules are lists of alternatives; rule 0 is the root. Built with the helpers below, which add
// rules for repetition (right-recursive, so the matcher's stacks do not grow with repeats) and
// for UTF-8 encoded character classes.
//
// Not thread-safe while being built; immutable (and thread-safe) afterwards.
class Grammar {
 public:
  Grammar();

  // A new rule with no alternatives yet; `name` is for messages.
  uint32_t NewRule(std::string name);
  void AddAlternative(uint32_t rule, Sequence seq);
  void SetAlternatives(uint32_t rule, std::vector<Sequence> alts);

  // Symbols for common shapes. Each returns one symbol (adding rules as needed).
  Symbol Bytes(const ByteSet& set);
  Symbol Byte(uint8_t b);
  Sequence Literal(absl::string_view text);
  Symbol Class(const CharClass& cls);  // one code point of the class, UTF-8 encoded
  Symbol AnyChar();                    // any code point
  Symbol Group(std::vector<Sequence> alts, std::string name = "group");
  Symbol Star(Sequence seq);  // seq*
  Symbol Plus(Sequence seq);  // seq+
  Symbol Optional(Sequence seq);
  // seq{min,max}; max < 0 means unbounded. INVALID_ARGUMENT for min > max or counts too large.
  absl::StatusOr<Symbol> Repeat(Sequence seq, int min, int max);
  Symbol Empty();  // matches nothing (the empty string)

  const std::vector<ByteSet>& byte_sets() const { return byte_sets_; }
  struct Rule {
    std::string name;
    std::vector<Sequence> alts;
  };
  const std::vector<Rule>& rules() const { return rules_; }
  uint32_t root() const { return 0; }
  void SetRoot(Symbol s);  // rule 0 becomes `s`

  // Checks the grammar can run: every rule has an alternative, no left recursion (a rule that
  // can reach itself without consuming a byte). The message names the rule.
  absl::Status Validate() const;

  // Human-readable GBNF-like dump (tests, debugging).
  std::string ToString() const;

 private:
  std::vector<ByteSet> byte_sets_;
  absl::flat_hash_map<std::string, uint32_t> byte_set_index_;
  std::vector<Rule> rules_;
};

// Appends the UTF-8 encoding of a code point (the tokenizer's).
using ::qwen::tokenizer::AppendUtf8;

}  // namespace qwen::grammar

#endif  // QWEN_INFERENCE_GRAMMAR_GRAMMAR_H_

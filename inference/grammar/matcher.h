// Running a grammar over a tokenizer's vocabulary: which tokens may come next.
#ifndef QWEN_INFERENCE_GRAMMAR_MATCHER_H_
#define QWEN_INFERENCE_GRAMMAR_MATCHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "inference/grammar/grammar.h"

namespace qwen::grammar {

// The vocabulary as byte strings, sorted so that one pass over it shares the work of common
// prefixes (a flattened byte trie). Tokens marked unusable (control tokens such as
// <|im_end|>) are never allowed as grammar text; ending is decided separately.
//
// Immutable; thread-safe.
class TokenTable {
 public:
  TokenTable(std::vector<std::string> bytes, std::vector<bool> usable);

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  absl::string_view bytes(int32_t id) const { return bytes_[id]; }
  bool usable(int32_t id) const { return usable_[id]; }

 private:
  friend class CompiledGrammar;
  std::vector<std::string> bytes_;
  std::vector<bool> usable_;
  std::vector<int32_t> sorted_;  // usable non-empty tokens, by bytes
  std::vector<uint32_t> lcp_;    // common prefix length with the previous sorted token
  uint32_t max_len_ = 0;
  // Range of sorted_ whose first byte is b.
  std::vector<std::pair<int32_t, int32_t>> by_first_byte_;
};

// A grammar prepared for one vocabulary. The matcher's state is a set of stacks of grammar
// positions (a pushdown automaton over bytes); stacks are interned as (position, parent) nodes
// so that a state is a short list of ids, and each (node, byte) step is memoised.
//
// Token masks follow xgrammar's split: for each grammar position the vocabulary is classified
// once, without context, into tokens accepted inside the current rule, rejected, and
// "uncertain" (those that finish the rule part-way and so depend on what encloses it). A state's
// mask is then the union of its positions' accepted sets plus the uncertain tokens checked
// against the real stack, usually a few hundred. Masks of whole states are cached too.
//
// Thread-safe: the memo tables are behind a mutex, so matchers of many sequences may share one.
class CompiledGrammar {
 public:
  static absl::StatusOr<std::shared_ptr<CompiledGrammar>> Create(
      const Grammar& grammar, std::shared_ptr<const TokenTable> tokens);

  const TokenTable& tokens() const { return *tokens_; }
  int32_t vocab_size() const { return tokens_->size(); }
  size_t mask_words() const { return (static_cast<size_t>(tokens_->size()) + 63) / 64; }

  struct Stats {
    size_t nodes = 0;
    size_t position_masks = 0;
    size_t state_masks_cached = 0;
    size_t state_mask_hits = 0;
    size_t state_mask_misses = 0;
  };
  Stats stats() const;

 private:
  friend class Matcher;
  enum Kind : uint8_t { kBytes, kRule, kEnd };
  struct Elem {
    Kind kind;
    uint32_t arg;
  };
  struct Node {
    uint32_t pos;
    uint32_t parent;
  };
  static constexpr uint32_t kAccept = 0;   // the empty stack: the grammar is complete
  static constexpr uint32_t kContext = 1;  // "whatever encloses": used while classifying
  struct PositionMask {
    std::vector<uint64_t> accepted;
    std::vector<int32_t> uncertain;
  };

  CompiledGrammar() = default;

  uint32_t Intern(uint32_t pos, uint32_t parent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Expand(uint32_t pos, uint32_t parent, std::vector<uint32_t>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpandInner(uint32_t pos, uint32_t parent, std::vector<uint32_t>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The nodes after `node` reads `byte` (memoised), appended to `out`.
  void Step(uint32_t node, uint8_t byte, std::vector<uint32_t>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sorted, unique union of steps of every node of `in`.
  void StepSet(const std::vector<uint32_t>& in, uint8_t byte, std::vector<uint32_t>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Accepts(uint32_t node, absl::string_view bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets of nodes as ids, and their steps memoised: a walk of the vocabulary then costs one
  // lookup per byte. SetStep's result has kContextBit set when the step reached kContext
  // (which is left out of the set).
  static constexpr uint32_t kEmptySet = 0;
  static constexpr uint32_t kContextBit = 0x80000000u;
  uint32_t InternSet(const std::vector<uint32_t>& nodes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t SetStep(uint32_t set, uint8_t byte) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The top `depth` frames of `node`'s stack over kContext.
  uint32_t Truncate(uint32_t node, int depth) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Classification of the vocabulary from `start` (a stack whose bottom is kContext).
  const PositionMask& MaskOf(uint32_t start) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<uint32_t> Initial() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillMask(const std::vector<uint32_t>& state, uint64_t* words)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::shared_ptr<const TokenTable> tokens_;
  std::vector<Elem> prog_;
  std::vector<std::vector<uint32_t>> rule_starts_;  // per rule, its alternatives' positions
  std::vector<ByteSet> sets_;

  mutable absl::Mutex mu_;
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint32_t> node_ids_ ABSL_GUARDED_BY(mu_);
  // (node << 8 | byte) -> (offset << 32 | count) into step_pool_.
  absl::flat_hash_map<uint64_t, uint64_t> steps_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> step_pool_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, std::unique_ptr<PositionMask>> position_masks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<uint64_t>> state_masks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<uint32_t>> set_nodes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> set_ids_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint32_t> set_steps_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, bool> expand_seen_ ABSL_GUARDED_BY(mu_);  // scratch
  size_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  size_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

// One sequence's position in a grammar. Thread-compatible (one per sequence); the compiled
// grammar it shares is thread-safe.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<CompiledGrammar> grammar);

  // Advances by a token's bytes. False (and no change) when the grammar does not allow them.
  bool AcceptToken(int32_t id);
  bool AcceptBytes(absl::string_view bytes);

  // Sets bit t of `words` (mask_words() of them, overwritten) for every token t whose bytes
  // may come next. Tokens that end generation are the caller's: allow them when CanEnd().
  void FillNextTokenMask(uint64_t* words) const;

  // The output so far is a complete sentence of the grammar.
  bool CanEnd() const;
  // Complete, and nothing more may follow.
  bool Done() const;

  const CompiledGrammar& grammar() const { return *g_; }

 private:
  std::shared_ptr<CompiledGrammar> g_;
  std::vector<uint32_t> state_;  // sorted node ids
};

}  // namespace qwen::grammar

#endif  // QWEN_INFERENCE_GRAMMAR_MATCHER_H_

// Snapshots of sequence states at known token prefixes, so that a prompt that starts like an
// earlier one resumes from there instead of being computed again.
#ifndef QWEN_INFERENCE_ENGINE_PREFIX_CACHE_H_
#define QWEN_INFERENCE_ENGINE_PREFIX_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "inference/model/state.h"

namespace qwen::engine {

struct PrefixCacheStats {
  size_t budget_bytes = 0;
  size_t used_bytes = 0;
  int64_t entries = 0;    // snapshots held
  int64_t inserts = 0;    // snapshots taken since the start
  int64_t evictions = 0;  // snapshots dropped to stay within the budget
};

// A tree of snapshots keyed by token ids. Each entry is the state of a sequence after the tokens
// on its path from the root: it holds the attention layers' KV rows of its own span (the rows of
// earlier positions are in its ancestors) and every delta-net layer's conv and recurrent state at
// its end. The delta-net state exists only at snapshot positions (it is overwritten by every
// token), so a prompt resumes at the end of the deepest entry whose path it starts with; its KV
// rows are gathered from that entry and its ancestors.
//
// Separate trees per `salt`: requests whose token ids do not say everything about their input
// (image embeddings, for one) pass a salt derived from that input, or opt out.
//
// Memory is bounded by `budget_bytes` (KV rows + states + tokens of every entry): an insertion
// evicts the least recently used leaves (entries without children; a lookup or insertion touches
// the whole path) until the cache fits again.
//
// Thread-compatible: the engine's scheduler thread owns it.
class PrefixCache {
 public:
  PrefixCache(size_t budget_bytes, model::StateSize state_size);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Node;
  // The path of a cached prefix from the root; valid until the next Insert().
  struct Match {
    int64_t length = 0;  // tokens covered
    std::vector<const Node*> path;
  };

  // The longest cached prefix of `tokens` with at most `limit` tokens (length 0 when none).
  // Marks its entries recently used.
  Match Lookup(uint64_t salt, absl::Span<const int32_t> tokens, int64_t limit);

  // Makes `state` the state after match.length tokens (same model, KV type; capacity at least
  // match.length). Does nothing for an empty match.
  void Restore(const Match& match, model::SequenceState& state) const;

  // Snapshots `state`, which holds exactly `tokens` (state.n_past() == tokens.size()). Only the KV
  // rows after the deepest entry already on the path are copied. Returns false when nothing was
  // stored: already cached (then touched), or it does not fit in the budget beside its own
  // ancestors.
  bool Insert(uint64_t salt, absl::Span<const int32_t> tokens, const model::SequenceState& state);

  PrefixCacheStats stats() const;
  // Bytes one entry of `n_tokens` tokens would take.
  size_t EntryBytes(int64_t n_tokens) const;

 private:
  void Search(Node* node, absl::Span<const int32_t> tokens, int64_t limit, std::vector<Node*>& path,
              std::vector<Node*>& best) const;
  void Touch(absl::Span<Node* const> path);
  // Evicts least recently used leaves, `keep` last; false when `keep` went too.
  bool EvictUntilFits(const Node* keep);
  Node* OldestLeaf(Node* node, const Node* keep) const;

  const size_t budget_bytes_;
  const model::StateSize size_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Node>> roots_;
  uint64_t clock_ = 0;
  size_t used_bytes_ = 0;
  int64_t entries_ = 0;
  int64_t inserts_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace qwen::engine

#endif  // QWEN_INFERENCE_ENGINE_PREFIX_CACHE_H_

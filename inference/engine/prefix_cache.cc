#include "inference/engine/prefix_cache.h"

#include <algorithm>

namespace qwen::engine {

struct PrefixCache::Node {
  Node* parent = nullptr;
  int64_t start = 0;  // tokens [start, end) of the path are this entry's own
  int64_t end = 0;
  std::vector<int32_t> tokens;      // [end - start]
  std::unique_ptr<uint8_t[]> kv;    // KV rows of [start, end), SequenceState::ExportKv layout
  std::unique_ptr<uint8_t[]> rest;  // conv + recurrent states after `end` tokens
  size_t bytes = 0;
  uint64_t last_used = 0;
  std::vector<std::unique_ptr<Node>> children;
};

PrefixCache::PrefixCache(size_t budget_bytes, model::StateSize state_size)
    : budget_bytes_(budget_bytes), size_(state_size) {}

PrefixCache::~PrefixCache() = default;

size_t PrefixCache::EntryBytes(int64_t n_tokens) const {
  return sizeof(Node) +
         static_cast<size_t>(n_tokens) * (size_.kv_bytes_per_token + sizeof(int32_t)) +
         size_.recurrent_bytes + size_.conv_bytes;
}

void PrefixCache::Search(Node* node, absl::Span<const int32_t> tokens, int64_t limit,
                         std::vector<Node*>& path, std::vector<Node*>& best) const {
  const int64_t best_end = best.empty() ? 0 : best.back()->end;
  if (!path.empty() && path.back()->end > best_end) best = path;
  for (const auto& child : node->children) {
    if (child->end > limit) continue;
    if (!std::equal(child->tokens.begin(), child->tokens.end(), tokens.begin() + child->start)) {
      continue;
    }
    path.push_back(child.get());
    Search(child.get(), tokens, limit, path, best);
    path.pop_back();
  }
}

void PrefixCache::Touch(absl::Span<Node* const> path) {
  ++clock_;
  for (Node* n : path) n->last_used = clock_;
}

PrefixCache::Match PrefixCache::Lookup(uint64_t salt, absl::Span<const int32_t> tokens,
                                       int64_t limit) {
  Match m;
  auto it = roots_.find(salt);
  if (it == roots_.end()) return m;
  limit = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
  std::vector<Node*> path, best;
  Search(it->second.get(), tokens, limit, path, best);
  if (best.empty()) return m;
  Touch(best);
  m.length = best.back()->end;
  m.path.assign(best.begin(), best.end());
  return m;
}

void PrefixCache::Restore(const Match& match, model::SequenceState& state) const {
  if (match.path.empty()) return;
  state.Reset();
  for (const Node* n : match.path) state.ImportKv(n->start, n->end, n->kv.get());
  state.ImportRecurrent(match.path.back()->rest.get());
  state.SetPast(match.length);
}

bool PrefixCache::Insert(uint64_t salt, absl::Span<const int32_t> tokens,
                         const model::SequenceState& state) {
  const int64_t p = static_cast<int64_t>(tokens.size());
  if (p == 0 || state.n_past() != p) return false;
  std::unique_ptr<Node>& root = roots_[salt];
  if (root == nullptr) root = std::make_unique<Node>();
  std::vector<Node*> path, best;
  Search(root.get(), tokens, p, path, best);
  Node* parent = best.empty() ? root.get() : best.back();
  if (parent->end == p) {
    Touch(best);
    return false;
  }
  const size_t bytes = EntryBytes(p - parent->end);
  if (bytes > budget_bytes_) return false;
  auto node = std::make_unique<Node>();
  node->parent = parent;
  node->start = parent->end;
  node->end = p;
  node->tokens.assign(tokens.begin() + node->start, tokens.end());
  node->kv.reset(new uint8_t[std::max<size_t>(1, (p - node->start) * size_.kv_bytes_per_token)]);
  state.ExportKv(node->start, p, node->kv.get());
  node->rest.reset(new uint8_t[std::max<size_t>(1, size_.recurrent_bytes + size_.conv_bytes)]);
  state.ExportRecurrent(node->rest.get());
  node->bytes = bytes;
  Node* added = node.get();
  parent->children.push_back(std::move(node));
  best.push_back(added);
  Touch(best);
  used_bytes_ += bytes;
  ++entries_;
  ++inserts_;
  return EvictUntilFits(added);
}

PrefixCache::Node* PrefixCache::OldestLeaf(Node* node, const Node* keep) const {
  Node* oldest = nullptr;
  for (const auto& child : node->children) {
    Node* c = child->children.empty() ? (child.get() == keep ? nullptr : child.get())
                                      : OldestLeaf(child.get(), keep);
    if (c != nullptr && (oldest == nullptr || c->last_used < oldest->last_used)) oldest = c;
  }
  return oldest;
}

bool PrefixCache::EvictUntilFits(const Node* keep) {
  bool kept = true;
  while (used_bytes_ > budget_bytes_) {
    Node* victim = nullptr;
    for (auto& [salt, root] : roots_) {
      Node* c = OldestLeaf(root.get(), keep);
      if (c != nullptr && (victim == nullptr || c->last_used < victim->last_used)) victim = c;
    }
    if (victim == nullptr) {
      // Only `keep` and its ancestors are left: the new entry does not fit after them.
      victim = const_cast<Node*>(keep);
      kept = false;
    }
    used_bytes_ -= victim->bytes;
    --entries_;
    ++evictions_;
    auto& siblings = victim->parent->children;
    siblings.erase(std::find_if(siblings.begin(), siblings.end(),
                                [victim](const auto& p) { return p.get() == victim; }));
    if (!kept) break;  // the cache fitted before `keep` came
  }
  for (auto it = roots_.begin(); it != roots_.end();) {
    if (it->second->children.empty()) {
      roots_.erase(it++);
    } else {
      ++it;
    }
  }
  return kept;
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s;
  s.budget_bytes = budget_bytes_;
  s.used_bytes = used_bytes_;
  s.entries = entries_;
  s.inserts = inserts_;
  s.evictions = evictions_;
  return s;
}

}  // namespace qwen::engine

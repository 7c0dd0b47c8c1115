#include "inference/grammar/matcher.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::grammar {
namespace {

constexpr size_t kMaxCachedStateMasks = 256;
// Frames of a stack that token classification looks at (see CompiledGrammar): deep enough that
// a token inside a string or number stays within them (character class -> repetition -> string
// rule), so that only tokens leaving the value are left to check against the whole stack.
constexpr int kClassifyDepth = 4;
// Memory bounds of one compiled grammar's caches (each classification holds a bit per token:
// 31 KB on a 248k vocabulary). Past them the cache starts over; results never change.
constexpr size_t kMaxClassifications = 512;
constexpr size_t kMaxSetSteps = size_t{1} << 22;

void SetBit(uint64_t* w, int32_t t) { w[t >> 6] |= uint64_t{1} << (t & 63); }
bool GetBit(const uint64_t* w, int32_t t) { return (w[t >> 6] >> (t & 63)) & 1; }

}  // namespace

TokenTable::TokenTable(std::vector<std::string> bytes, std::vector<bool> usable)
    : bytes_(std::move(bytes)), usable_(std::move(usable)) {
  usable_.resize(bytes_.size(), true);
  for (int32_t i = 0; i < static_cast<int32_t>(bytes_.size()); ++i) {
    if (usable_[i] && !bytes_[i].empty()) sorted_.push_back(i);
  }
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) {
    return bytes_[a] < bytes_[b] || (bytes_[a] == bytes_[b] && a < b);
  });
  lcp_.resize(sorted_.size(), 0);
  by_first_byte_.assign(256, {0, 0});
  for (size_t i = 0; i < sorted_.size(); ++i) {
    const std::string& cur = bytes_[sorted_[i]];
    max_len_ = std::max<uint32_t>(max_len_, static_cast<uint32_t>(cur.size()));
    if (i > 0) {
      const std::string& prev = bytes_[sorted_[i - 1]];
      uint32_t l = 0;
      while (l < prev.size() && l < cur.size() && prev[l] == cur[l]) ++l;
      lcp_[i] = l;
    }
    const uint8_t b = static_cast<uint8_t>(cur[0]);
    if (by_first_byte_[b].second == 0) by_first_byte_[b].first = static_cast<int32_t>(i);
    by_first_byte_[b].second = static_cast<int32_t>(i + 1);
  }
}

absl::StatusOr<std::shared_ptr<CompiledGrammar>> CompiledGrammar::Create(
    const Grammar& grammar, std::shared_ptr<const TokenTable> tokens) {
  RETURN_IF_ERROR(grammar.Validate());
  std::shared_ptr<CompiledGrammar> c(new CompiledGrammar());
  c->tokens_ = std::move(tokens);
  c->sets_ = grammar.byte_sets();
  const auto& rules = grammar.rules();
  c->rule_starts_.resize(rules.size());
  for (size_t r = 0; r < rules.size(); ++r) {
    for (const Sequence& alt : rules[r].alts) {
      c->rule_starts_[r].push_back(static_cast<uint32_t>(c->prog_.size()));
      for (const Symbol& s : alt) {
        c->prog_.push_back({s.kind == Symbol::kBytes ? kBytes : kRule, s.index});
      }
      c->prog_.push_back({kEnd, 0});
    }
  }
  absl::MutexLock lock(&c->mu_);
  c->nodes_ = {{0, 0}, {0, 0}};  // kAccept, kContext
  c->InternSet({});              // kEmptySet
  return c;
}

CompiledGrammar::Stats CompiledGrammar::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s;
  s.nodes = nodes_.size();
  s.position_masks = position_masks_.size();
  s.state_masks_cached = state_masks_.size();
  s.state_mask_hits = hits_;
  s.state_mask_misses = misses_;
  return s;
}

uint32_t CompiledGrammar::Intern(uint32_t pos, uint32_t parent) {
  const uint64_t key = (static_cast<uint64_t>(pos) << 32) | parent;
  auto [it, inserted] = node_ids_.try_emplace(key, static_cast<uint32_t>(nodes_.size()));
  if (inserted) nodes_.push_back({pos, parent});
  return it->second;
}

void CompiledGrammar::Expand(uint32_t pos, uint32_t parent, std::vector<uint32_t>* out) {
  expand_seen_.clear();
  ExpandInner(pos, parent, out);
}

void CompiledGrammar::ExpandInner(uint32_t pos, uint32_t parent, std::vector<uint32_t>* out) {
  // The same (position, parent) twice in one expansion adds nothing (a loop through rules that
  // can be empty); stopping there is what makes such loops terminate.
  if (!expand_seen_.try_emplace((static_cast<uint64_t>(pos) << 32) | parent, true).second) return;
  const Elem e = prog_[pos];
  switch (e.kind) {
    case kEnd:
      if (parent <= kContext) {
        out->push_back(parent);
      } else {
        const Node p = nodes_[parent];
        ExpandInner(p.pos, p.parent, out);
      }
      return;
    case kBytes:
      out->push_back(Intern(pos, parent));
      return;
    case kRule: {
      const uint32_t cont = pos + 1;
      const uint32_t np = prog_[cont].kind == kEnd ? parent : Intern(cont, parent);
      for (uint32_t start : rule_starts_[e.arg]) ExpandInner(start, np, out);
      return;
    }
  }
}

void CompiledGrammar::Step(uint32_t node, uint8_t byte, std::vector<uint32_t>* out) {
  if (node <= kContext) return;
  const uint64_t key = (static_cast<uint64_t>(node) << 8) | byte;
  auto it = steps_.find(key);
  if (it == steps_.end()) {
    const Node n = nodes_[node];
    std::vector<uint32_t> next;
    if (sets_[prog_[n.pos].arg][byte]) {
      Expand(n.pos + 1, n.parent, &next);
      std::sort(next.begin(), next.end());
      next.erase(std::unique(next.begin(), next.end()), next.end());
    }
    const uint64_t entry = (static_cast<uint64_t>(step_pool_.size()) << 32) | next.size();
    step_pool_.insert(step_pool_.end(), next.begin(), next.end());
    it = steps_.emplace(key, entry).first;
  }
  const uint32_t off = static_cast<uint32_t>(it->second >> 32);
  const uint32_t n = static_cast<uint32_t>(it->second);
  out->insert(out->end(), step_pool_.begin() + off, step_pool_.begin() + off + n);
}

void CompiledGrammar::StepSet(const std::vector<uint32_t>& in, uint8_t byte,
                              std::vector<uint32_t>* out) {
  out->clear();
  for (uint32_t n : in) Step(n, byte, out);
  if (in.size() > 1) {
    std::sort(out->begin(), out->end());
    out->erase(std::unique(out->begin(), out->end()), out->end());
  }
}

bool CompiledGrammar::Accepts(uint32_t node, absl::string_view bytes) {
  std::vector<uint32_t> a = {node}, b;
  for (char c : bytes) {
    StepSet(a, static_cast<uint8_t>(c), &b);
    if (b.empty()) return false;
    a.swap(b);
  }
  return true;
}

std::vector<uint32_t> CompiledGrammar::Initial() {
  std::vector<uint32_t> out;
  for (uint32_t start : rule_starts_[0]) {
    Expand(start, kAccept, &out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

uint32_t CompiledGrammar::InternSet(const std::vector<uint32_t>& nodes) {
  std::string key(reinterpret_cast<const char*>(nodes.data()), nodes.size() * sizeof(uint32_t));
  auto [it, inserted] =
      set_ids_.try_emplace(std::move(key), static_cast<uint32_t>(set_nodes_.size()));
  if (inserted) set_nodes_.push_back(nodes);
  return it->second;
}

uint32_t CompiledGrammar::SetStep(uint32_t set, uint8_t byte) {
  const uint64_t key = (static_cast<uint64_t>(set) << 8) | byte;
  auto it = set_steps_.find(key);
  if (it != set_steps_.end()) return it->second;
  std::vector<uint32_t> next;
  StepSet(set_nodes_[set], byte, &next);
  uint32_t flag = 0;
  auto c = std::find(next.begin(), next.end(), kContext);
  if (c != next.end()) {
    next.erase(c);
    flag = kContextBit;
  }
  const uint32_t r = InternSet(next) | flag;
  set_steps_.emplace(key, r);
  return r;
}

uint32_t CompiledGrammar::Truncate(uint32_t node, int depth) {
  if (node <= kContext) return node;
  if (depth == 0) return kContext;
  const Node n = nodes_[node];
  return Intern(n.pos, Truncate(n.parent, depth - 1));
}

const CompiledGrammar::PositionMask& CompiledGrammar::MaskOf(uint32_t start) {
  auto it = position_masks_.find(start);
  if (it != position_masks_.end()) return *it->second;
  if (position_masks_.size() >= kMaxClassifications) position_masks_.clear();
  if (set_steps_.size() >= kMaxSetSteps) {
    set_steps_.clear();
    set_ids_.clear();
    set_nodes_.clear();
    InternSet({});
  }
  auto pm = std::make_unique<PositionMask>();
  pm->accepted.assign(mask_words(), 0);
  const TokenTable& t = *tokens_;
  const uint32_t pos = nodes_[start].pos;
  const ByteSet& first = sets_[prog_[pos].arg];
  // Per depth d of the current token: the set of nodes after d bytes (interned), whether the
  // enclosing context was reached exactly there, and whether it was reached with bytes still
  // to read.
  std::vector<uint32_t> level(t.max_len_ + 1);
  std::vector<uint8_t> ctx(t.max_len_ + 1, 0), unc(t.max_len_ + 1, 0);
  level[0] = InternSet({start});
  for (int b = 0; b < 256; ++b) {
    if (!first[b]) continue;
    const auto [lo, hi] = t.by_first_byte_[b];
    uint32_t valid = 0;
    for (int32_t i = lo; i < hi; ++i) {
      const int32_t tok = t.sorted_[i];
      const std::string& bytes = t.bytes_[tok];
      const uint32_t len = static_cast<uint32_t>(bytes.size());
      uint32_t d = std::min(valid, i == lo ? 0u : t.lcp_[i]);
      while (d < len && level[d] != kEmptySet) {
        const uint32_t r = SetStep(level[d], static_cast<uint8_t>(bytes[d]));
        level[d + 1] = r & ~kContextBit;
        ctx[d + 1] = (r & kContextBit) != 0;
        unc[d + 1] = unc[d] | ctx[d + 1];
        ++d;
      }
      valid = d;
      if (d == len && (level[len] != kEmptySet || ctx[len])) {
        SetBit(pm->accepted.data(), tok);
      } else if (unc[d]) {
        pm->uncertain.push_back(tok);
      }
    }
  }
  return *position_masks_.emplace(start, std::move(pm)).first->second;
}

void CompiledGrammar::FillMask(const std::vector<uint32_t>& state, uint64_t* words) {
  const size_t n = mask_words();
  std::string key(reinterpret_cast<const char*>(state.data()), state.size() * sizeof(uint32_t));
  auto it = state_masks_.find(key);
  if (it != state_masks_.end()) {
    ++hits_;
    std::memcpy(words, it->second.data(), n * sizeof(uint64_t));
    return;
  }
  ++misses_;
  std::fill(words, words + n, 0);
  for (uint32_t node : state) {
    if (node <= kContext) continue;
    const PositionMask& pm = MaskOf(Truncate(node, kClassifyDepth));
    for (size_t k = 0; k < n; ++k) words[k] |= pm.accepted[k];
    for (int32_t tok : pm.uncertain) {
      if (!GetBit(words, tok) && Accepts(node, tokens_->bytes(tok))) SetBit(words, tok);
    }
  }
  if (state_masks_.size() >= kMaxCachedStateMasks) state_masks_.clear();
  state_masks_.emplace(std::move(key), std::vector<uint64_t>(words, words + n));
}

Matcher::Matcher(std::shared_ptr<CompiledGrammar> grammar) : g_(std::move(grammar)) {
  absl::MutexLock lock(&g_->mu_);
  state_ = g_->Initial();
}

bool Matcher::AcceptToken(int32_t id) {
  if (id < 0 || id >= g_->vocab_size() || !g_->tokens().usable(id)) return false;
  const absl::string_view bytes = g_->tokens().bytes(id);
  if (bytes.empty()) return false;
  return AcceptBytes(bytes);
}

bool Matcher::AcceptBytes(absl::string_view bytes) {
  absl::MutexLock lock(&g_->mu_);
  std::vector<uint32_t> a = state_, b;
  for (char c : bytes) {
    g_->StepSet(a, static_cast<uint8_t>(c), &b);
    if (b.empty()) return false;
    a.swap(b);
  }
  state_ = std::move(a);
  return true;
}

void Matcher::FillNextTokenMask(uint64_t* words) const {
  absl::MutexLock lock(&g_->mu_);
  g_->FillMask(state_, words);
}

bool Matcher::CanEnd() const { return !state_.empty() && state_[0] == CompiledGrammar::kAccept; }

bool Matcher::Done() const { return state_.size() == 1 && state_[0] == CompiledGrammar::kAccept; }

}  // namespace qwen::grammar

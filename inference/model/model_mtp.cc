// The MTP (multi-token-prediction) head of Model: loading it from either layout, keeping its KV
// cache in step with the trunk, and drafting with it.
#include <algorithm>
#include <cstring>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/model/buffer_ids.h"
#include "inference/model/layout.h"
#include "inference/model/model.h"
#include "inference/ops/attention.h"
#include "inference/ops/basic.h"

namespace qwen::model {

absl::Status Model::LoadMtp() {
  ModelConfig& c = config_;
  ASSIGN_OR_RETURN(std::vector<MtpTensor> tensors, FindMtpTensors(*file_, c.n_layer));
  if (tensors.empty()) return absl::OkStatus();
  // FindMtpTensors names them the llama.cpp way whatever the layout; errors name the file's
  // own tensor.
  const std::string blk = absl::StrCat("blk.", c.n_layer, ".");
  absl::flat_hash_map<std::string, const MtpTensor*> by_name;
  for (const MtpTensor& t : tensors) by_name.emplace(t.name, &t);
  auto find = [&](absl::string_view suffix) -> const MtpTensor* {
    auto it = by_name.find(absl::StrCat(blk, suffix));
    return it == by_name.end() ? nullptr : it->second;
  };
  auto name_of = [&](const MtpTensor* t, absl::string_view suffix) {
    return t != nullptr ? std::string(t->tensor->name)
                        : absl::StrCat(blk, suffix, " (the MTP block's)");
  };
  auto matrix = [&](absl::string_view suffix, int64_t n_in,
                    int64_t n_out) -> absl::StatusOr<ops::Weight> {
    const MtpTensor* t = find(suffix);
    return MatrixOf(t != nullptr ? t->tensor : nullptr, name_of(t, suffix), n_in, n_out);
  };
  auto vector = [&](absl::string_view suffix, int64_t n) -> absl::StatusOr<const float*> {
    const MtpTensor* t = find(suffix);
    return VectorOf(t != nullptr ? t->tensor : nullptr, name_of(t, suffix), n,
                    t != nullptr && t->add_one);
  };
  MtpWeights& w = mtp_;
  ASSIGN_OR_RETURN(w.eh_proj, matrix("nextn.eh_proj.weight", 2 * c.n_embd, c.n_embd));
  ASSIGN_OR_RETURN(w.enorm, vector("nextn.enorm.weight", c.n_embd));
  ASSIGN_OR_RETURN(w.hnorm, vector("nextn.hnorm.weight", c.n_embd));
  if (find("nextn.shared_head_norm.weight") != nullptr) {
    ASSIGN_OR_RETURN(w.shared_head_norm, vector("nextn.shared_head_norm.weight", c.n_embd));
  } else {
    w.shared_head_norm = output_norm_;  // llama.cpp's fallback
  }
  LayerWeights& L = w.block;
  L.is_attention = true;
  L.kind_index = c.n_attention_layers();  // the KV layer after the trunk's
  ASSIGN_OR_RETURN(L.attn_norm, vector("attn_norm.weight", c.n_embd));
  ASSIGN_OR_RETURN(L.post_attention_norm, vector("post_attention_norm.weight", c.n_embd));
  ASSIGN_OR_RETURN(L.ffn_gate, matrix("ffn_gate.weight", c.n_embd, c.n_ff));
  ASSIGN_OR_RETURN(L.ffn_up, matrix("ffn_up.weight", c.n_embd, c.n_ff));
  ASSIGN_OR_RETURN(L.ffn_down, matrix("ffn_down.weight", c.n_ff, c.n_embd));
  ASSIGN_OR_RETURN(L.attn_q, matrix("attn_q.weight", c.n_embd, 2 * c.q_dim()));
  ASSIGN_OR_RETURN(L.attn_k, matrix("attn_k.weight", c.n_embd, c.kv_dim()));
  ASSIGN_OR_RETURN(L.attn_v, matrix("attn_v.weight", c.n_embd, c.kv_dim()));
  ASSIGN_OR_RETURN(L.attn_output, matrix("attn_output.weight", c.q_dim(), c.n_embd));
  ASSIGN_OR_RETURN(L.attn_q_norm, vector("attn_q_norm.weight", c.head_dim));
  ASSIGN_OR_RETURN(L.attn_k_norm, vector("attn_k_norm.weight", c.head_dim));
  c.has_mtp = true;
  // The tokens a restricted draft vocabulary must keep (MtpDraft): GGUF token types 3 (control)
  // and 4 (user-defined); 5 (unused) are padding.
  if (file_->Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, file_->GetIntArray("tokenizer.ggml.token_type"));
    for (int64_t id = 0; id < static_cast<int64_t>(types.size()) && id < c.n_vocab; ++id) {
      if (types[id] == 3 || types[id] == 4) special_ids_.push_back(static_cast<int32_t>(id));
    }
  }
  return absl::OkStatus();
}

void Model::TextPositions(absl::Span<const Segment> segments, absl::Span<const int64_t> pos0) {
  positions_.clear();
  positions4_.clear();
  multi_positions_ = false;
  for (size_t k = 0; k < segments.size(); ++k) {
    for (size_t t = 0; t < segments[k].tokens.size(); ++t) {
      positions_.push_back(static_cast<int32_t>(pos0[k] + static_cast<int64_t>(t)));
    }
  }
}

void Model::MtpInput(ops::ComputeContext& ctx, const int32_t* tokens, const float* hidden_in,
                     int64_t n, float* x) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_embd;
  float* cat = Buffer(kMtpCat, n * 2 * E);
  float* tmp = Buffer(kMtpTmp, n * E);
  ops::GetRows(token_embd_, tokens, n, tmp);
  ops::RmsNorm(ctx, tmp, mtp_.enorm, n, E, c.rms_eps, tmp);
  for (int64_t r = 0; r < n; ++r) std::memcpy(cat + r * 2 * E, tmp + r * E, E * sizeof(float));
  ops::RmsNorm(ctx, hidden_in, mtp_.hnorm, n, E, c.rms_eps, tmp);
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(cat + r * 2 * E + E, tmp + r * E, E * sizeof(float));
  }
  ctx.Observe("mtp_concat", cat, n, 2 * E);
  ops::MatMul(ctx, mtp_.eh_proj, cat, n, x);
  ctx.Observe("mtp_eh_proj", x, n, E);
}

void Model::MtpBlock(ops::ComputeContext& ctx, absl::Span<const Segment> segments,
                     const int32_t* tokens, const float* hidden_in, int64_t n,
                     absl::Span<const int64_t> cell0, float* final_rows) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_embd;
  const LayerWeights& L = mtp_.block;
  float* x = Buffer(kMtpX, n * E);
  MtpInput(ctx, tokens, hidden_in, n, x);
  float* h = Buffer(kH, n * E);
  float* out = Buffer(kOut, n * E);
  ops::RmsNorm(ctx, x, L.attn_norm, n, E, c.rms_eps, h);
  AttentionBlock(ctx, L, segments, h, n, out, cell0);
  ops::AddInPlace(x, out, n * E);
  ops::RmsNorm(ctx, x, L.post_attention_norm, n, E, c.rms_eps, h);
  FfnBlock(ctx, L, c.n_layer, h, n, out);
  ops::AddInPlace(x, out, n * E);
  ops::RmsNorm(ctx, x, mtp_.shared_head_norm, n, E, c.rms_eps, final_rows);
  ctx.Observe("mtp_shared_head_norm", final_rows, n, E);
  ctx.NoteLayerDone();
}

void Model::MtpCatchUp(ops::ComputeContext& ctx, absl::Span<const MtpRows> rows) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_embd;
  const LayerWeights& L = mtp_.block;
  int64_t m = 0;
  for (const MtpRows& r : rows) {
    m += r.state->mtp_deferred() + static_cast<int64_t>(r.tokens.size());
  }
  if (m == 0) return;
  mtp_rows_run_.fetch_add(m, std::memory_order_relaxed);
  // Row p pairs token p with the hidden row of p - 1: the state's input row for the first. A
  // state's rows sit at cells mtp_past() onwards, positions as many before next_position()
  // as it put aside (text: one position per cell).
  std::vector<int32_t> tokens;
  tokens.reserve(m);
  float* hin = Buffer(kMtpIn, m * E);
  positions_.clear();
  positions4_.clear();
  multi_positions_ = false;
  int64_t p = 0;
  for (const MtpRows& r : rows) {
    const SequenceState& st = *r.state;
    const int64_t d = st.mtp_deferred();
    const int64_t ns = static_cast<int64_t>(r.tokens.size());
    const float* before = st.mtp_hidden();
    for (int64_t t = 0; t < d + ns; ++t, ++p) {
      tokens.push_back(t < d ? st.mtp_deferred_tokens()[t] : r.tokens[t - d]);
      std::memcpy(hin + p * E, before, E * sizeof(float));
      before = t < d ? st.mtp_deferred_hidden() + t * E : r.hidden + (t - d) * E;
      positions_.push_back(static_cast<int32_t>(st.next_position() - d + t));
    }
  }
  // Later rows read only this block's keys and values of these positions: the rest of the
  // block runs when drafting.
  float* x = Buffer(kMtpX, m * E);
  MtpInput(ctx, tokens.data(), hin, m, x);
  float* h = Buffer(kH, m * E);
  ops::RmsNorm(ctx, x, L.attn_norm, m, E, c.rms_eps, h);
  float* k = Buffer(kK, m * c.kv_dim());
  float* v = Buffer(kV, m * c.kv_dim());
  ops::MatMul(ctx, h, m, {{&L.attn_k, k}, {&L.attn_v, v}});
  ops::RmsNorm(ctx, k, L.attn_k_norm, m * c.n_head_kv, c.head_dim, c.rms_eps, k);
  ops::RopeNeox(k, m, c.n_head_kv, c.head_dim, c.n_rot, positions_.data(), c.rope_base);
  p = 0;
  for (const MtpRows& r : rows) {
    SequenceState& st = *r.state;
    const int64_t d = st.mtp_deferred();
    const int64_t ns = static_cast<int64_t>(r.tokens.size());
    if (d + ns == 0) continue;
    ops::KvStore(st.kv(L.kind_index), k + p * c.kv_dim(), v + p * c.kv_dim(), st.mtp_past(),
                 d + ns);
    p += d + ns;
    const float* last = ns > 0 ? r.hidden + (ns - 1) * E : st.mtp_deferred_hidden() + (d - 1) * E;
    std::memcpy(st.mtp_hidden(), last, E * sizeof(float));
    st.set_mtp_past(st.mtp_past() + d + ns);
    st.ClearMtpDeferred();
  }
  ctx.NoteLayerDone();
}

absl::Status Model::MtpCatchUpDeferred(ops::ComputeContext& ctx,
                                       absl::Span<SequenceState* const> states) {
  if (!config_.has_mtp) return absl::FailedPreconditionError("the model has no MTP head");
  absl::flat_hash_set<const SequenceState*> seen;
  for (SequenceState* s : states) {
    if (s == nullptr || !seen.insert(s).second) {
      return absl::InvalidArgumentError("a null or repeated sequence state");
    }
  }
  // A pass per sequence: several coming back to drafting at once must not make one pass (and
  // its scratch buffers) of thousands of rows.
  for (SequenceState* s : states) {
    if (s->mtp_deferred() == 0 || !s->mtp_follows()) continue;
    const MtpRows rows[] = {{s, {}, nullptr}};
    MtpCatchUp(ctx, rows);
  }
  return absl::OkStatus();
}

absl::Status Model::MtpDraft(ops::ComputeContext& ctx, absl::Span<const DraftSlot> slots,
                             int64_t draft_vocab) {
  const ModelConfig& c = config_;
  if (!c.has_mtp) return absl::FailedPreconditionError("the model has no MTP head");
  int max_k = 0;
  absl::flat_hash_set<const SequenceState*> seen;
  for (const DraftSlot& d : slots) {
    if (d.state == nullptr || d.drafts == nullptr || d.n_draft < 1) {
      return absl::InvalidArgumentError("a draft slot lacks its state, output or count");
    }
    if (!seen.insert(d.state).second) {
      return absl::InvalidArgumentError("two draft slots share a sequence");
    }
    if (!d.state->has_mtp() || d.state->mtp_past() != d.state->n_past()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the MTP head of a sequence is behind its trunk (", d.state->mtp_past(),
                       " of ", d.state->n_past(), " positions)"));
    }
    if (d.state->n_past() + d.n_draft > d.state->capacity()) {
      return absl::OutOfRangeError(absl::StrCat("drafting ", d.n_draft, " tokens after ",
                                                d.state->n_past(), " exceeds the context of ",
                                                d.state->capacity()));
    }
    if (d.token < 0 || d.token >= c.n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", d.token, " is outside the vocabulary [0, ", c.n_vocab, ")"));
    }
    max_k = std::max(max_k, d.n_draft);
  }
  const int64_t E = c.n_embd;
  const int64_t V = c.n_vocab;
  // The head's vocabulary: [0, V), or [0, n_head) and the special ids above it.
  int64_t n_head = V;
  const bool any_logits = std::any_of(slots.begin(), slots.end(),
                                      [](const DraftSlot& d) { return d.logits != nullptr; });
  if (draft_vocab > 0 && !any_logits) n_head = std::min(V, (draft_vocab + 15) / 16 * 16);
  ops::Weight head = lm_head_;
  head.n_out = n_head;  // packed groups of 16 rows: the first n_head / 16 are a prefix
  if (n_head < V && draft_extra_from_ != n_head) {
    draft_extra_from_ = n_head;
    draft_extra_ids_.clear();
    for (int32_t id : special_ids_) {
      if (id >= n_head) draft_extra_ids_.push_back(id);
    }
    const size_t rb = lm_head_.row_bytes;
    draft_extra_rows_.resize(draft_extra_ids_.size() * rb);
    for (size_t i = 0; i < draft_extra_ids_.size(); ++i) {
      std::memcpy(draft_extra_rows_.data() + i * rb, lm_head_.row(draft_extra_ids_[i]), rb);
    }
    draft_extra_ = lm_head_;
    draft_extra_.data = draft_extra_rows_.data();
    draft_extra_.packed = nullptr;
    draft_extra_.n_out = static_cast<int64_t>(draft_extra_ids_.size());
  }
  const int64_t n_extra = n_head < V ? static_cast<int64_t>(draft_extra_ids_.size()) : int64_t{0};
  std::vector<int32_t> cur(slots.size());
  std::vector<float> hid(slots.size() * E);
  for (size_t j = 0; j < slots.size(); ++j) {
    cur[j] = slots[j].token;
    std::memcpy(hid.data() + j * E, slots[j].state->mtp_hidden(), E * sizeof(float));
    slots[j].drafts->clear();
    if (slots[j].logits != nullptr) slots[j].logits->clear();
  }
  for (int i = 0; i < max_k; ++i) {
    std::vector<Segment> sub;
    std::vector<size_t> which;
    std::vector<int64_t> cell0, pos0;
    for (size_t j = 0; j < slots.size(); ++j) {
      if (slots[j].n_draft <= i) continue;
      SequenceState* st = slots[j].state;
      sub.push_back(Segment{st, absl::MakeConstSpan(&cur[j], 1), Logits::kLast});
      which.push_back(j);
      cell0.push_back(st->n_past() + i);
      pos0.push_back(st->next_position() + i);
    }
    const int64_t m = static_cast<int64_t>(sub.size());
    float* hin = Buffer(kMtpIn, m * E);
    std::vector<int32_t> tokens(m);
    for (int64_t r = 0; r < m; ++r) {
      tokens[r] = cur[which[r]];
      std::memcpy(hin + r * E, hid.data() + which[r] * E, E * sizeof(float));
    }
    TextPositions(sub, pos0);
    float* fin = Buffer(kMtpFinal, m * E);
    MtpBlock(ctx, sub, tokens.data(), hin, m, cell0, fin);
    draft_logits_.resize(m * n_head);
    ops::MatMul(ctx, head, fin, m, draft_logits_.data());
    if (n_extra > 0) {
      draft_extra_logits_.resize(m * n_extra);
      ops::MatMul(ctx, draft_extra_, fin, m, draft_extra_logits_.data());
    }
    for (int64_t r = 0; r < m; ++r) {
      const DraftSlot& d = slots[which[r]];
      const float* l = draft_logits_.data() + r * n_head;
      int32_t best = static_cast<int32_t>(std::max_element(l, l + n_head) - l);
      float best_logit = l[best];
      // Ties go to the lowest id, as over the whole vocabulary: the special ids are above.
      for (int64_t i = 0; i < n_extra; ++i) {
        const float x = draft_extra_logits_[r * n_extra + i];
        if (x > best_logit) {
          best_logit = x;
          best = draft_extra_ids_[i];
        }
      }
      d.drafts->push_back(best);
      if (d.logits != nullptr) d.logits->insert(d.logits->end(), l, l + V);
      cur[which[r]] = best;
      // The next step pairs the draft with the head's own normed output (as llama.cpp does).
      std::memcpy(hid.data() + which[r] * E, fin + r * E, E * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace qwen::model

#include "inference/model/model.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/model/buffer_ids.h"
#include "inference/ops/attention.h"
#include "inference/ops/basic.h"
#include "inference/ops/delta_net.h"
#include "inference/ops/vec.h"
#include "inference/quant/kernels.h"

namespace qwen::model {
namespace {

using quant::GgmlType;

std::string Blk(int il, absl::string_view name) { return absl::StrCat("blk.", il, ".", name); }

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(std::shared_ptr<const gguf::GgufFile> file,
                                                   const LoadOptions& options) {
  std::unique_ptr<Model> m(new Model(std::move(file)));
  ASSIGN_OR_RETURN(m->config_, ModelConfig::FromGguf(*m->file_));
  absl::Status loaded = m->LoadWeights();
  if (loaded.ok()) loaded = m->LoadMtp();
  if (absl::Status s = loaded; !s.ok()) {
    // A missing tensor usually means a file in neither known layout: say what the file is.
    if (s.code() != absl::StatusCode::kNotFound) return s;
    return absl::Status(s.code(), absl::StrCat(s.message(), "; ", DescribeFile(*m->file_)));
  }
  if (!options.packed_dir.empty()) {
    m->packing_.requested = true;
    m->packing_.status = m->UsePackedCopy(options);
  }
  m->buffers_.resize(kNumBuffers);
  return m;
}

std::vector<ops::Weight*> Model::Matrices() {
  // Not token_embd_: it is only looked up by rows (when tied, lm_head_ is its matrix use).
  std::vector<ops::Weight*> out = {&lm_head_};
  for (LayerWeights& L : layers_) {
    for (ops::Weight* w :
         {&L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.attn_q, &L.attn_k, &L.attn_v, &L.attn_output,
          &L.attn_qkv, &L.attn_gate, &L.ssm_alpha, &L.ssm_beta, &L.ssm_out}) {
      if (w->data != nullptr) out.push_back(w);
    }
  }
  if (config_.has_mtp) {
    LayerWeights& L = mtp_.block;
    for (ops::Weight* w : {&mtp_.eh_proj, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.attn_q, &L.attn_k,
                           &L.attn_v, &L.attn_output}) {
      out.push_back(w);
    }
  }
  return out;
}

absl::Status Model::UsePackedCopy(const LoadOptions& options) {
  std::vector<ops::Weight*> weights;
  std::vector<packing::PackRequest> requests;
  for (ops::Weight* w : Matrices()) {
    if (!packing::Packable(w->type, w->n_out)) continue;
    weights.push_back(w);
    requests.push_back({std::string(w->name), w->type, w->data, w->n_in, w->n_out, w->row_bytes,
                        static_cast<uint64_t>(w->data - file_->base())});
  }
  // Nothing to pack (float or Q8_0 weights, or kernels without a packed layout): the file's
  // layout is all there is, not a fallback.
  if (requests.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(packed_, packing::PackedStore::Open(file_->path(), requests, options.packed_dir,
                                                       options.pool));
  for (ops::Weight* w : weights) {
    w->packed = packed_->Find(w->name);
    packing_.packed_tensors += w->packed != nullptr;
  }
  packing_.packed_bytes = static_cast<int64_t>(packed_->info().bytes);
  packing_.info = packed_->info();
  return absl::OkStatus();
}

absl::StatusOr<ops::Weight> Model::Matrix(const std::string& name, int64_t n_in, int64_t n_out) {
  return MatrixOf(file_->FindTensor(name), name, n_in, n_out);
}

absl::StatusOr<ops::Weight> Model::MatrixOf(const gguf::TensorInfo* t, const std::string& name,
                                            int64_t n_in, int64_t n_out) {
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" is missing"));
  if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has shape ",
                                                   t->ShapeString(), ", expected [", n_in, ", ",
                                                   n_out, "]"));
  }
  if (!quant::Traits(t->type).computable) {
    return absl::UnimplementedError(absl::StrCat("tensor \"", name, "\" has type ",
                                                 quant::TypeName(t->type),
                                                 ", which this engine cannot compute with"));
  }
  ops::Weight w;
  w.data = t->data;
  w.type = t->type;
  w.n_in = n_in;
  w.n_out = n_out;
  w.row_bytes = static_cast<size_t>(quant::RowBytes(t->type, n_in));
  w.name = t->name;
  return w;
}

absl::StatusOr<const float*> Model::FindVector(std::initializer_list<std::string> names,
                                               int64_t n) {
  for (const std::string& name : names) {
    if (file_->FindTensor(name) != nullptr) return Vector(name, n);
  }
  return absl::NotFoundError(absl::StrCat("tensor \"", *names.begin(), "\" is missing"));
}

absl::StatusOr<const float*> Model::Vector(const std::string& name, int64_t n) {
  return VectorOf(file_->FindTensor(name), name, n, /*add_one=*/false);
}

absl::StatusOr<const float*> Model::VectorOf(const gguf::TensorInfo* t, const std::string& name,
                                             int64_t n, bool add_one) {
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" is missing"));
  if (t->n_elements != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", name, "\" has shape ", t->ShapeString(), ", expected ", n, " elements"));
  }
  if (!quant::Traits(t->type).computable) {
    return absl::UnimplementedError(
        absl::StrCat("tensor \"", name, "\" has unsupported type ", quant::TypeName(t->type)));
  }
  // Small tensors are copied to float once: they are read in every op and cost little memory.
  std::vector<float>& v = owned_.emplace_back(n);
  quant::DequantizeRow(t->type, t->data, v.data(), n);
  if (add_one) {
    for (float& x : v) x += 1.0f;
  }
  return v.data();
}

absl::Status Model::LoadWeights() {
  const ModelConfig& c = config_;
  ASSIGN_OR_RETURN(token_embd_, Matrix("token_embd.weight", c.n_embd, c.n_vocab));
  if (file_->FindTensor("output.weight") != nullptr) {
    ASSIGN_OR_RETURN(lm_head_, Matrix("output.weight", c.n_embd, c.n_vocab));
  } else {
    lm_head_ = token_embd_;  // tied embeddings
  }
  ASSIGN_OR_RETURN(output_norm_, Vector("output_norm.weight", c.n_embd));
  layers_.resize(c.n_layer);
  int n_attn = 0, n_delta = 0;
  const int64_t d = c.ssm_head_dim;
  for (int il = 0; il < c.n_layer; ++il) {
    LayerWeights& L = layers_[il];
    L.is_attention = c.is_attention[il];
    L.kind_index = L.is_attention ? n_attn++ : n_delta++;
    ASSIGN_OR_RETURN(L.attn_norm, Vector(Blk(il, "attn_norm.weight"), c.n_embd));
    ASSIGN_OR_RETURN(L.post_attention_norm,
                     Vector(Blk(il, "post_attention_norm.weight"), c.n_embd));
    ASSIGN_OR_RETURN(L.ffn_gate, Matrix(Blk(il, "ffn_gate.weight"), c.n_embd, c.n_ff));
    ASSIGN_OR_RETURN(L.ffn_up, Matrix(Blk(il, "ffn_up.weight"), c.n_embd, c.n_ff));
    ASSIGN_OR_RETURN(L.ffn_down, Matrix(Blk(il, "ffn_down.weight"), c.n_ff, c.n_embd));
    if (L.is_attention) {
      ASSIGN_OR_RETURN(L.attn_q, Matrix(Blk(il, "attn_q.weight"), c.n_embd, 2 * c.q_dim()));
      ASSIGN_OR_RETURN(L.attn_k, Matrix(Blk(il, "attn_k.weight"), c.n_embd, c.kv_dim()));
      ASSIGN_OR_RETURN(L.attn_v, Matrix(Blk(il, "attn_v.weight"), c.n_embd, c.kv_dim()));
      ASSIGN_OR_RETURN(L.attn_output, Matrix(Blk(il, "attn_output.weight"), c.q_dim(), c.n_embd));
      ASSIGN_OR_RETURN(L.attn_q_norm, Vector(Blk(il, "attn_q_norm.weight"), c.head_dim));
      ASSIGN_OR_RETURN(L.attn_k_norm, Vector(Blk(il, "attn_k_norm.weight"), c.head_dim));
    } else {
      ASSIGN_OR_RETURN(L.attn_qkv, Matrix(Blk(il, "attn_qkv.weight"), c.n_embd, c.ssm_qkv_dim()));
      ASSIGN_OR_RETURN(L.attn_gate, Matrix(Blk(il, "attn_gate.weight"), c.n_embd, c.ssm_v_dim()));
      ASSIGN_OR_RETURN(L.ssm_alpha, Matrix(Blk(il, "ssm_alpha.weight"), c.n_embd, c.ssm_n_v));
      ASSIGN_OR_RETURN(L.ssm_beta, Matrix(Blk(il, "ssm_beta.weight"), c.n_embd, c.ssm_n_v));
      ASSIGN_OR_RETURN(L.ssm_out, Matrix(Blk(il, "ssm_out.weight"), c.ssm_v_dim(), c.n_embd));
      ASSIGN_OR_RETURN(L.ssm_conv1d,
                       Vector(Blk(il, "ssm_conv1d.weight"), c.ssm_qkv_dim() * c.conv_kernel));
      const gguf::TensorInfo* conv = file_->FindTensor(Blk(il, "ssm_conv1d.weight"));
      if (conv->ne[0] != c.conv_kernel) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", conv->name, "\" has shape ",
                                                       conv->ShapeString(), ", expected [",
                                                       c.conv_kernel, ", ", c.ssm_qkv_dim(), "]"));
      }
      // [channels, K] -> [K, channels], so the conv runs along contiguous channels.
      std::vector<float> transposed(c.ssm_qkv_dim() * c.conv_kernel);
      for (int64_t ch = 0; ch < c.ssm_qkv_dim(); ++ch) {
        for (int j = 0; j < c.conv_kernel; ++j) {
          transposed[j * c.ssm_qkv_dim() + ch] = L.ssm_conv1d[ch * c.conv_kernel + j];
        }
      }
      owned_.back() = std::move(transposed);
      L.ssm_conv1d = owned_.back().data();
      // Ollama's files name the bias ssm_dt.
      ASSIGN_OR_RETURN(L.ssm_dt_bias,
                       FindVector({Blk(il, "ssm_dt.bias"), Blk(il, "ssm_dt")}, c.ssm_n_v));
      ASSIGN_OR_RETURN(L.ssm_a, Vector(Blk(il, "ssm_a"), c.ssm_n_v));
      ASSIGN_OR_RETURN(L.ssm_norm, Vector(Blk(il, "ssm_norm.weight"), d));
    }
  }
  return absl::OkStatus();
}

float* Model::Buffer(int id, size_t n_floats) { return buffers_[id].Get(n_floats); }

absl::StatusOr<std::vector<int32_t>> MropePositions(int64_t n_tokens,
                                                    absl::Span<const ImageSpan> images,
                                                    int64_t start, int64_t* next) {
  std::vector<int32_t> pos(n_tokens * 4);
  int64_t p = start;  // position of the next text token
  int64_t t = 0;
  auto text_until = [&](int64_t end) {
    for (; t < end; ++t, ++p) {
      for (int s = 0; s < 4; ++s) pos[t * 4 + s] = static_cast<int32_t>(p);
    }
  };
  for (size_t k = 0; k < images.size(); ++k) {
    const ImageSpan& im = images[k];
    const int64_t n = int64_t{im.rows} * im.cols;
    if (im.rows <= 0 || im.cols <= 0 || im.offset < t || im.offset + n > n_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image ", k, " (", im.rows, "x", im.cols, " tokens at ", im.offset,
          ") does not fit the prompt of ", n_tokens, " tokens after the previous image"));
    }
    text_until(im.offset);
    for (int r = 0; r < im.rows; ++r) {
      for (int c = 0; c < im.cols; ++c, ++t) {
        pos[t * 4 + 0] = static_cast<int32_t>(p);
        pos[t * 4 + 1] = static_cast<int32_t>(p + r);
        pos[t * 4 + 2] = static_cast<int32_t>(p + c);
        pos[t * 4 + 3] = 0;
      }
    }
    p += std::max(im.rows, im.cols);
  }
  text_until(n_tokens);
  if (next != nullptr) *next = p;
  return pos;
}

int64_t Model::LogitRows(absl::Span<const Segment> segments) {
  int64_t rows = 0;
  for (const Segment& s : segments) {
    if (s.logits == Logits::kAll) rows += static_cast<int64_t>(s.tokens.size());
    if (s.logits == Logits::kLast) rows += 1;
  }
  return rows;
}

absl::Status Model::Forward(ops::ComputeContext& ctx, absl::Span<const Segment> segments,
                            float* logits) {
  const ModelConfig& c = config_;
  if (segments.empty()) return absl::InvalidArgumentError("empty batch");
  int64_t n = 0;
  absl::flat_hash_set<const SequenceState*> seen;
  for (const Segment& s : segments) {
    if (s.tokens.empty()) return absl::InvalidArgumentError("a segment has no tokens");
    if (!seen.insert(s.state).second) {
      return absl::InvalidArgumentError("two segments of one batch share a sequence");
    }
    if (s.state->n_past() + static_cast<int64_t>(s.tokens.size()) > s.state->capacity()) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence would hold ", s.state->n_past() + s.tokens.size(),
                       " tokens, more than its context of ", s.state->capacity()));
    }
    if (!s.positions.empty() && s.positions.size() != 4 * s.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat("a segment of ", s.tokens.size(),
                                                     " tokens has ", s.positions.size(),
                                                     " positions, expected 4 per token"));
    }
    if (!s.embeddings.empty() && s.embeddings.size() != s.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat("a segment of ", s.tokens.size(),
                                                     " tokens has ", s.embeddings.size(),
                                                     " embedding entries"));
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= c.n_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " is outside the vocabulary [0, ", c.n_vocab, ")"));
      }
    }
    if (s.keep_states) {
      if (!s.positions.empty() || !s.embeddings.empty()) {
        return absl::InvalidArgumentError("a segment that keeps its states must be text");
      }
      if (s.tokens.size() > 1) RETURN_IF_ERROR(s.state->ReserveCheckpoints(s.tokens.size() - 1));
    }
    n += static_cast<int64_t>(s.tokens.size());
  }
  // Segments whose MTP head follows: text, and the head following so far. It runs with them,
  // or takes their rows later (Segment::mtp_defer) while not too many wait.
  std::vector<bool> mtp_run(segments.size(), false), mtp_later(segments.size(), false);
  bool need_hidden = false;
  for (size_t k = 0; k < segments.size(); ++k) {
    const Segment& s = segments[k];
    const bool follows =
        c.has_mtp && s.mtp && s.positions.empty() && s.embeddings.empty() && s.state->mtp_follows();
    mtp_later[k] =
        follows && s.mtp_defer &&
        s.state->mtp_deferred() + static_cast<int64_t>(s.tokens.size()) <= kMaxMtpDeferredRows;
    mtp_run[k] = follows && !mtp_later[k];
    need_hidden |= follows || (s.keep_states && c.has_mtp);
  }

  std::vector<int32_t> tokens;
  tokens.reserve(n);
  positions_.clear();
  multi_positions_ = false;
  for (const Segment& s : segments) multi_positions_ |= !s.positions.empty();
  positions4_.clear();
  std::vector<int64_t> next_position;  // per segment
  for (const Segment& s : segments) {
    tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
    const int64_t p0 = s.state->next_position();
    int64_t next = p0 + static_cast<int64_t>(s.tokens.size());
    if (!s.positions.empty()) {
      next = p0;
      for (int32_t p : s.positions) next = std::max<int64_t>(next, int64_t{p} + 1);
      positions4_.insert(positions4_.end(), s.positions.begin(), s.positions.end());
    } else {
      for (size_t t = 0; t < s.tokens.size(); ++t) {
        const int32_t p = static_cast<int32_t>(p0 + t);
        positions_.push_back(p);
        if (multi_positions_) positions4_.insert(positions4_.end(), {p, p, p, p});
      }
    }
    next_position.push_back(next);
  }

  const int64_t E = c.n_embd;
  float* x = Buffer(kX, n * E);
  float* h = Buffer(kH, n * E);
  float* out = Buffer(kOut, n * E);
  ops::GetRows(token_embd_, tokens.data(), n, x);
  int64_t offset0 = 0;
  for (const Segment& s : segments) {
    for (size_t t = 0; t < s.embeddings.size(); ++t) {
      if (s.embeddings[t] != nullptr) {
        std::memcpy(x + (offset0 + t) * E, s.embeddings[t], E * sizeof(float));
      }
    }
    offset0 += static_cast<int64_t>(s.tokens.size());
  }
  ctx.Observe("model.input_embed", x, n, E);

  for (int il = 0; il < c.n_layer; ++il) {
    const LayerWeights& L = layers_[il];
    ops::RmsNorm(ctx, x, L.attn_norm, n, E, c.rms_eps, h);
    ctx.Observe(absl::StrCat("attn_norm-", il), h, n, E);
    if (L.is_attention) {
      AttentionBlock(ctx, L, segments, h, n, out);
    } else {
      DeltaNetBlock(ctx, L, segments, h, n, out);
    }
    ops::AddInPlace(x, out, n * E);
    ctx.Observe(absl::StrCat("attn_residual-", il), x, n, E);

    ops::RmsNorm(ctx, x, L.post_attention_norm, n, E, c.rms_eps, h);
    ctx.Observe(absl::StrCat("attn_post_norm-", il), h, n, E);
    FfnBlock(ctx, L, il, h, n, out);
    ops::AddInPlace(x, out, n * E);
    ctx.Observe(absl::StrCat("l_out-", il), x, n, E);
    ctx.NoteLayerDone();
  }

  // Only the rows that need logits go through the LM head, the largest matrix of the model.
  // The norm is per row, so normalising every row first gives the logit rows the same bits.
  float* hidden = nullptr;
  if (need_hidden) {
    hidden = Buffer(kHidden, n * E);
    ops::RmsNorm(ctx, x, output_norm_, n, E, c.rms_eps, hidden);
  }
  const int64_t rows = LogitRows(segments);
  float* final_rows = Buffer(kFinal, rows * E);
  int64_t row = 0, offset = 0;
  for (const Segment& s : segments) {
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    const int64_t first = s.logits == Logits::kAll ? offset : offset + ns - 1;
    const int64_t count = s.logits == Logits::kAll ? ns : s.logits == Logits::kLast ? 1 : 0;
    // A chunk without logits leaves final_rows empty (null): no memcpy from or to null.
    if (count > 0) {
      std::memcpy(final_rows + row * E, (hidden != nullptr ? hidden : x) + first * E,
                  count * E * sizeof(float));
    }
    row += count;
    offset += ns;
  }
  if (rows > 0) {
    if (hidden == nullptr) {
      ops::RmsNorm(ctx, final_rows, output_norm_, rows, E, c.rms_eps, final_rows);
    }
    ctx.Observe("result_norm", final_rows, rows, E);
    ops::MatMul(ctx, lm_head_, final_rows, rows, logits);
    ctx.Observe("result_output", logits, rows, c.n_vocab);
  }

  // Verify segments: the MTP input row after each token, for Rollback().
  offset = 0;
  for (const Segment& s : segments) {
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    if (s.keep_states && c.has_mtp) {
      for (int64_t t = 0; t + 1 < ns; ++t) {
        std::memcpy(s.state->checkpoint_hidden(t), hidden + (offset + t) * E, E * sizeof(float));
      }
    }
    offset += ns;
  }
  std::vector<MtpRows> mtp_rows;
  offset = 0;
  for (size_t k = 0; k < segments.size(); ++k) {
    const Segment& s = segments[k];
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    if (mtp_run[k]) {
      // Its waiting rows in a pass of their own (at most kMaxMtpDeferredRows), then this
      // batch's rows together.
      if (s.state->mtp_deferred() > 0) {
        const MtpRows waiting[] = {{s.state, {}, nullptr}};
        MtpCatchUp(ctx, waiting);
      }
      mtp_rows.push_back({s.state, s.tokens, hidden + offset * E});
    } else if (mtp_later[k]) {
      s.state->DeferMtp(s.tokens.data(), hidden + offset * E, ns);
    } else if (s.state->mtp_deferred() > 0) {
      s.state->ClearMtpDeferred();  // the head falls behind for good: its rows are of no use
    }
    offset += ns;
  }
  if (!mtp_rows.empty()) MtpCatchUp(ctx, mtp_rows);

  for (size_t k = 0; k < segments.size(); ++k) {
    SequenceState& st = *segments[k].state;
    const int64_t ns = static_cast<int64_t>(segments[k].tokens.size());
    if (segments[k].keep_states) st.MarkCheckpointed(st.n_past(), st.next_position(), ns);
    st.Advance(ns, next_position[k]);
  }
  return absl::OkStatus();
}

void Model::FfnBlock(ops::ComputeContext& ctx, const LayerWeights& L, int il, const float* h,
                     int64_t n, float* out) {
  const ModelConfig& c = config_;
  float* gate = Buffer(kFfnGate, n * c.n_ff);
  float* up = Buffer(kFfnUp, n * c.n_ff);
  ops::MatMul(ctx, h, n, {{&L.ffn_gate, gate}, {&L.ffn_up, up}});
  ctx.Observe(absl::StrCat("ffn_gate-", il), gate, n, c.n_ff);
  ctx.Observe(absl::StrCat("ffn_up-", il), up, n, c.n_ff);
  ops::SwiGlu(ctx, gate, up, n * c.n_ff, gate);
  ctx.Observe(absl::StrCat("ffn_swiglu-", il), gate, n, c.n_ff);
  ops::MatMul(ctx, L.ffn_down, gate, n, out);
  ctx.Observe(absl::StrCat("ffn_out-", il), out, n, c.n_embd);
}

void Model::AttentionBlock(ops::ComputeContext& ctx, const LayerWeights& L,
                           absl::Span<const Segment> segments, const float* h, int64_t n,
                           float* out, absl::Span<const int64_t> cell0) {
  const ModelConfig& c = config_;
  const int hd = c.head_dim;
  const int il = &L == &mtp_.block ? c.n_layer : static_cast<int>(&L - layers_.data());
  float* q_full = Buffer(kQFull, n * 2 * c.q_dim());
  float* k = Buffer(kK, n * c.kv_dim());
  float* v = Buffer(kV, n * c.kv_dim());
  ops::MatMul(ctx, h, n, {{&L.attn_q, q_full}, {&L.attn_k, k}, {&L.attn_v, v}});
  ctx.Observe(absl::StrCat("Qcur_full-", il), q_full, n, 2 * c.q_dim());
  ctx.Observe(absl::StrCat("Kcur-", il), k, n, c.kv_dim());  // llama.cpp's name for the raw K
  ctx.Observe(absl::StrCat("Vcur-", il), v, n, c.kv_dim());

  // Per head the projection holds [query | gate].
  float* q = Buffer(kQ, n * c.q_dim());
  float* gate = Buffer(kGate, n * c.q_dim());
  for (int64_t t = 0; t < n; ++t) {
    for (int hh = 0; hh < c.n_head; ++hh) {
      const float* src = q_full + (t * c.n_head + hh) * 2 * hd;
      std::memcpy(q + (t * c.n_head + hh) * hd, src, hd * sizeof(float));
      std::memcpy(gate + (t * c.n_head + hh) * hd, src + hd, hd * sizeof(float));
    }
  }
  ops::RmsNorm(ctx, q, L.attn_q_norm, n * c.n_head, hd, c.rms_eps, q);
  ops::RmsNorm(ctx, k, L.attn_k_norm, n * c.n_head_kv, hd, c.rms_eps, k);
  ctx.Observe(absl::StrCat("Qcur_normed-", il), q, n, c.q_dim());
  ctx.Observe(absl::StrCat("Kcur_normed-", il), k, n, c.kv_dim());
  if (multi_positions_) {
    int sections[4] = {0, 0, 0, 0};
    for (size_t j = 0; j < 4 && j < c.rope_sections.size(); ++j) sections[j] = c.rope_sections[j];
    ops::RopeMulti(q, n, c.n_head, hd, c.n_rot, positions4_.data(), c.rope_base, sections);
    ops::RopeMulti(k, n, c.n_head_kv, hd, c.n_rot, positions4_.data(), c.rope_base, sections);
  } else {
    // Text only: all four M-RoPE streams are equal, which is plain rotary.
    ops::RopeNeox(q, n, c.n_head, hd, c.n_rot, positions_.data(), c.rope_base);
    ops::RopeNeox(k, n, c.n_head_kv, hd, c.n_rot, positions_.data(), c.rope_base);
  }
  ctx.Observe(absl::StrCat("Qcur-", il), q, n, c.q_dim());
  ctx.Observe(absl::StrCat("Kcur_roped-", il), k, n, c.kv_dim());

  float* attn = Buffer(kAttn, n * c.q_dim());
  int64_t offset = 0;
  for (size_t si = 0; si < segments.size(); ++si) {
    const Segment& s = segments[si];
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    const ops::KvView kv = s.state->kv(L.kind_index);
    const int64_t pos0 = cell0.empty() ? s.state->n_past() : cell0[si];
    ops::KvStore(kv, k + offset * c.kv_dim(), v + offset * c.kv_dim(), pos0, ns);
    ops::CausalAttention(ctx, q + offset * c.q_dim(), ns, c.n_head, kv, pos0,
                         attn + offset * c.q_dim());
    offset += ns;
  }
  ctx.Observe(absl::StrCat("attn_pregate-", il), attn, n, c.q_dim());
  ops::SigmoidGate(ctx, gate, attn, n * c.q_dim());
  ctx.Observe(absl::StrCat("attn_gated-", il), attn, n, c.q_dim());
  ops::MatMul(ctx, L.attn_output, attn, n, out);
  ctx.Observe(absl::StrCat("attn_output-", il), out, n, c.n_embd);
}

void Model::DeltaNetBlock(ops::ComputeContext& ctx, const LayerWeights& L,
                          absl::Span<const Segment> segments, const float* h, int64_t n,
                          float* out) {
  const ModelConfig& c = config_;
  const int il = static_cast<int>(&L - layers_.data());
  const int d = c.ssm_head_dim;
  const int64_t qkv = c.ssm_qkv_dim();
  const int64_t vdim = c.ssm_v_dim();
  const int nv = c.ssm_n_v;
  const int nk = c.ssm_n_k;
  float* mixed = Buffer(kMixed, n * qkv);
  float* z = Buffer(kZ, n * vdim);
  float* g = Buffer(kAlpha, n * nv);
  float* beta = Buffer(kBeta, n * nv);
  ops::MatMul(ctx, h, n,
              {{&L.attn_qkv, mixed}, {&L.attn_gate, z}, {&L.ssm_alpha, g}, {&L.ssm_beta, beta}});
  ctx.Observe(absl::StrCat("linear_attn_qkv_mixed-", il), mixed, n, qkv);
  ctx.Observe(absl::StrCat("z-", il), z, n, vdim);
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < nv; ++j) {
      float& gj = g[t * nv + j];
      gj = L.ssm_a[j] * ops::Softplus(gj + L.ssm_dt_bias[j]);
      beta[t * nv + j] = ops::Sigmoid(beta[t * nv + j]);
    }
  }
  ctx.Observe(absl::StrCat("gate-", il), g, n, nv);
  ctx.Observe(absl::StrCat("beta_sigmoid-", il), beta, n, nv);

  float* conv = Buffer(kConv, n * qkv);
  const size_t conv_floats = static_cast<size_t>(c.conv_kernel - 1) * qkv;
  const size_t ssm_floats = static_cast<size_t>(nv) * d * d;
  int64_t offset = 0;
  for (const Segment& s : segments) {
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    float* conv_state = s.state->conv_state(L.kind_index);
    if (s.keep_states) {
      // One token at a time (the same bits: channels are independent of the token count),
      // keeping the state after each but the last for Rollback().
      for (int64_t t = 0; t < ns; ++t) {
        ops::CausalConv1dSilu(ctx, mixed + (offset + t) * qkv, 1, qkv, L.ssm_conv1d, c.conv_kernel,
                              conv_state, conv + (offset + t) * qkv);
        if (t + 1 < ns) {
          std::memcpy(s.state->checkpoint_conv(L.kind_index, t), conv_state,
                      conv_floats * sizeof(float));
        }
      }
    } else {
      ops::CausalConv1dSilu(ctx, mixed + offset * qkv, ns, qkv, L.ssm_conv1d, c.conv_kernel,
                            conv_state, conv + offset * qkv);
    }
    offset += ns;
  }
  ctx.Observe(absl::StrCat("conv_output_silu-", il), conv, n, qkv);
  // q and k heads of each token are L2-normalised; v passes through.
  ctx.pool().ParallelFor(n, 16, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int hh = 0; hh < 2 * nk; ++hh) {
        float* row = conv + t * qkv + int64_t{hh} * d;
        const float norm = static_cast<float>(std::sqrt(ops::Vec().sum_squares(row, d)));
        ops::Vec().scale_mul(row, 1.0f / std::max(norm, c.rms_eps), nullptr, row, d);
      }
    }
  });
  if (ctx.observing()) {
    float* tmp = Buffer(kObserve, n * qkv);
    const int64_t widths[3] = {int64_t{nk} * d, int64_t{nk} * d, vdim};
    const int64_t starts[3] = {0, int64_t{nk} * d, 2 * int64_t{nk} * d};
    const char* names[3] = {"q_conv_predelta-", "k_conv_predelta-", "v_conv_predelta-"};
    for (int p = 0; p < 3; ++p) {
      for (int64_t t = 0; t < n; ++t) {
        std::memcpy(tmp + t * widths[p], conv + t * qkv + starts[p], widths[p] * sizeof(float));
      }
      ctx.Observe(absl::StrCat(names[p], il), tmp, n, widths[p]);
    }
  }

  float* core = Buffer(kCore, n * vdim);
  offset = 0;
  for (const Segment& s : segments) {
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    ops::DeltaRuleArgs a;
    a.q = conv + offset * qkv;
    a.k = a.q + int64_t{nk} * d;
    a.v = a.q + 2 * int64_t{nk} * d;
    a.row_stride = qkv;
    a.g = g + offset * nv;
    a.beta = beta + offset * nv;
    a.n_tokens = ns;
    a.n_k = nk;
    a.n_v = nv;
    a.d = d;
    a.v_tiled = c.ssm_v_tiled;
    a.state = s.state->recurrent_state(L.kind_index);
    a.out = core + offset * vdim;
    // Token by token for prompts too: a token's result does not depend on how its prompt was
    // cut into segments (ops/delta_net.h).
    if (s.keep_states) {
      // Verification: one call per token (the same bits), keeping the state after each.
      for (int64_t t = 0; t < ns; ++t) {
        ops::DeltaRuleArgs at = a;
        at.q = a.q + t * qkv;
        at.k = a.k + t * qkv;
        at.v = a.v + t * qkv;
        at.g = a.g + t * nv;
        at.beta = a.beta + t * nv;
        at.n_tokens = 1;
        at.out = a.out + t * vdim;
        ops::GatedDeltaRuleRecurrent(ctx, at);
        if (t + 1 < ns) {
          std::memcpy(s.state->checkpoint_recurrent(L.kind_index, t), a.state,
                      ssm_floats * sizeof(float));
        }
      }
    } else {
      ops::GatedDeltaRuleRecurrent(ctx, a);
    }
    offset += ns;
  }
  ctx.Observe(absl::StrCat("attn_output-", il), core, n, vdim);
  // Gated RMSNorm per value head: rmsnorm(o) * ssm_norm * silu(z).
  ops::RmsNorm(ctx, core, L.ssm_norm, n * nv, d, c.rms_eps, core);
  ops::SiluGate(ctx, z, core, n * vdim);
  ctx.Observe(absl::StrCat("final_output-", il), core, n, vdim);
  ops::MatMul(ctx, L.ssm_out, core, n, out);
  ctx.Observe(absl::StrCat("linear_attn_out-", il), out, n, c.n_embd);
}

}  // namespace qwen::model

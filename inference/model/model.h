// The Qwen3.5 hybrid model: 3 gated delta-net blocks for every gated full-attention block.
#ifndef QWEN_INFERENCE_MODEL_MODEL_H_
#define QWEN_INFERENCE_MODEL_MODEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/config.h"
#include "inference/model/state.h"
#include "inference/ops/compute.h"
#include "inference/ops/matmul.h"
#include "inference/packing/packed_store.h"

namespace qwen::model {

// Weights of one block. Matrices are views into the GGUF mapping; the small vectors (norms,
// conv kernel, decay parameters) are float copies.
struct LayerWeights {
  bool is_attention = false;
  int kind_index = 0;  // index among layers of the same kind (KV cache / delta state slot)
  const float* attn_norm = nullptr;            // [n_embd]
  const float* post_attention_norm = nullptr;  // [n_embd]
  ops::Weight ffn_gate, ffn_up;                // [n_embd] -> [n_ff]
  ops::Weight ffn_down;                        // [n_ff] -> [n_embd]

  // Gated full attention.
  ops::Weight attn_q;                  // [n_embd] -> [n_head, 2 * head_dim]: per head query | gate
  ops::Weight attn_k;                  // [n_embd] -> [n_head_kv, head_dim]
  ops::Weight attn_v;                  // [n_embd] -> [n_head_kv, head_dim]
  ops::Weight attn_output;             // [n_head * head_dim] -> [n_embd]
  const float* attn_q_norm = nullptr;  // [head_dim]
  const float* attn_k_norm = nullptr;  // [head_dim]

  // Gated delta net.
  ops::Weight attn_qkv;                // [n_embd] -> [q (n_k * d) | k (n_k * d) | v (n_v * d)]
  ops::Weight attn_gate;               // [n_embd] -> z [n_v * d]
  ops::Weight ssm_alpha;               // [n_embd] -> [n_v]
  ops::Weight ssm_beta;                // [n_embd] -> [n_v]
  ops::Weight ssm_out;                 // [n_v * d] -> [n_embd]
  const float* ssm_conv1d = nullptr;   // [conv_kernel, qkv channels] (transposed at load)
  const float* ssm_dt_bias = nullptr;  // [n_v]
  const float* ssm_a = nullptr;        // [n_v], already -exp(A_log)
  const float* ssm_norm = nullptr;     // [d]
};

// Which rows of a segment get logits.
enum class Logits {
  kNone,  // none (a prompt chunk that does not end the prompt)
  kLast,  // the last token's (the next-token distribution)
  kAll,   // every token's (teacher forcing, scoring)
};

// One sequence's tokens in a batch.
struct Segment {
  SequenceState* state;
  absl::Span<const int32_t> tokens;  // appended at cache cells state->n_past() onwards
  Logits logits = Logits::kLast;
  // Empty: token t has rotary position state->next_position() + t in all four M-RoPE streams.
  // Else [tokens.size(), 4]: (time, row, column, extra) per token, e.g. from MropePositions().
  absl::Span<const int32_t> positions = {};
  // Empty, or one entry per token: a row [n_embd] fed instead of the token's embedding (an
  // image token's vision embedding), or null for the token's own embedding.
  absl::Span<const float* const> embeddings = {};
  // Speculative verification (text only: no positions, no embeddings): keep the delta-net
  // states after each token so that SequenceState::Rollback() can cut this segment back to its
  // first tokens. Each token is computed exactly as without it.
  bool keep_states = false;
  // With the MTP head loaded: run the MTP block over these tokens too (text only), so that its
  // KV cache and input row follow the trunk (MtpDraft() needs them). Ignored, and the head left
  // behind (mtp_past() < n_past()), when the state's head was behind already. Without it (or
  // for a segment that is not text) the head falls behind for good, and the rows it had put
  // aside are dropped.
  bool mtp = false;
  // With `mtp`: the head may take these rows later instead of now (SequenceState::DeferMtp). They
  // wait for the next pass that runs the head for this sequence (a Forward() segment without
  // mtp_defer, or Model::MtpCatchUpDeferred()), which runs them first: the same keys and values
  // as now, but none are computed for a sequence that never drafts again. At most
  // kMaxMtpDeferredRows wait; a segment that would pass that runs the head at once.
  bool mtp_defer = false;
};

// The multi-token-prediction block of Qwen3.5: the embedding of a token through `enorm` and the
// trunk's final-normed hidden row through `hnorm`, concatenated, through `eh_proj`, then one
// full-attention decoder block with its own KV cache, `shared_head_norm` and the LM head.
struct MtpWeights {
  ops::Weight eh_proj;                      // [2 * n_embd] -> [n_embd]: embedding | hidden
  const float* enorm = nullptr;             // [n_embd]
  const float* hnorm = nullptr;             // [n_embd]
  const float* shared_head_norm = nullptr;  // [n_embd] (the trunk's output norm when absent)
  LayerWeights block;                       // full attention; kind_index: its KV layer
};

// One sequence's drafting request for Model::MtpDraft().
struct DraftSlot {
  SequenceState* state;  // caught up: mtp_past() == n_past()
  int32_t token = 0;     // the token sampled last, not yet fed to the trunk (position n_past())
  int n_draft = 1;       // tokens to draft, >= 1
  std::vector<int32_t>* drafts = nullptr;  // receives n_draft tokens
  std::vector<float>* logits = nullptr;    // optional: receives [n_draft, n_vocab] draft logits
};

// Where an image sits in a prompt: rows * cols consecutive prompt entries from `offset`, one per
// merged patch, row-major.
struct ImageSpan {
  int64_t offset = 0;
  int rows = 0;
  int cols = 0;
};

// M-RoPE positions [n_tokens, 4] of a prompt whose first token goes at position `start`: text
// token at p gets (p, p, p, p); image token (r, c) of an image starting at p0 gets
// (p0, p0 + r, p0 + c, 0), and the text after it starts at p0 + max(rows, cols) (Qwen-VL's rule:
// one past the largest position so far). Images must be sorted, in range and not overlap.
// `*next` receives the position after the prompt.
absl::StatusOr<std::vector<int32_t>> MropePositions(int64_t n_tokens,
                                                    absl::Span<const ImageSpan> images,
                                                    int64_t start, int64_t* next);

// How Load() prepares the weights.
struct LoadOptions {
  // Directory for the packed copy of the weight matrices (packing::PackedStore), shared by every
  // process serving the same file; empty: the kernels read the file's own rows. When the copy
  // cannot be made (no packed layout in these kernels, no space), the model falls back to the
  // file's rows and says why in packing().
  std::string packed_dir;
  ThreadPool* pool = nullptr;  // packs in parallel when this process writes the copy
};

// What became of the packed copy, for start-up logs.
struct PackingReport {
  bool requested = false;         // LoadOptions::packed_dir was set
  int packed_tensors = 0;         // matrices read from the packed copy (0 with status OK: the
                                  // file's types have no packed layout in these kernels)
  int64_t packed_bytes = 0;       // their bytes (the store file's size)
  absl::Status status;            // why there is no packed copy, when requested and not made
  packing::PackedStoreInfo info;  // the store, when made
};

// Loads the weights (views into the mapping, and into the packed copy when LoadOptions asks for
// one, which is a file shared by every process: nothing large is copied per process) and runs
// forward passes.
//
// Load() checks every tensor the trunk needs against the configuration and refuses with an error
// naming the tensor when one is missing or has the wrong shape or an unsupported type. The MTP
// block is loaded from either layout (layout.h: FindMtpTensors) when the file has one; a file
// without it serves as before, and one whose MTP block is incomplete or malformed is refused
// with the tensor named. Vision tensors are ignored.
//
// Thread-safety: the weights are immutable, but Forward() uses per-instance activation buffers;
// run one Forward() at a time per Model (a worker runs one model on one scheduler thread).
class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(std::shared_ptr<const gguf::GgufFile> file,
                                                     const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const gguf::GgufFile& file() const { return *file_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  bool has_mtp() const { return config_.has_mtp; }
  const MtpWeights& mtp() const { return mtp_; }
  const PackingReport& packing() const { return packing_; }

  absl::StatusOr<std::unique_ptr<SequenceState>> NewState(int64_t n_ctx,
                                                          KvType kv_type = KvType::kF16) const {
    return SequenceState::Create(config_, n_ctx, kv_type);
  }

  // Number of logit rows Forward() writes for these segments.
  static int64_t LogitRows(absl::Span<const Segment> segments);

  // Appends each segment's tokens to its sequence and writes logits [LogitRows, n_vocab] in
  // segment order. Segments must belong to different sequences. Fails (changing nothing) when a
  // token is out of the vocabulary or a sequence would exceed its capacity.
  //
  // Every op computes a position from its own row and its sequence's state alone, in an order
  // fixed by the kernels (ops/vec.h, ops/matmul.h): a row's logits are the same bits whatever
  // other segments share the call, however its sequence's tokens are split between calls, and
  // at every kernel level (tests/model/batch_invariance_test.cc).
  absl::Status Forward(ops::ComputeContext& ctx, absl::Span<const Segment> segments, float* logits);

  // Drafts tokens with the MTP head, greedily (each draft is the argmax of the head's logits,
  // ties to the lowest id), for several sequences at once: draft i of a slot goes at cell
  // n_past() + i and rotary position next_position() + i of the head's KV cache, which the
  // next Forward() with Segment::mtp overwrites with the true values. The trunk's state is not
  // touched. FAILED_PRECONDITION without the head or when a sequence's head is behind its trunk.
  //
  // `draft_vocab` > 0 (and below the vocabulary) limits the head's choice to the token ids
  // below it (rounded up to a multiple of 16) and the vocabulary's control and user-defined
  // tokens (end of turn, </think>, <tool_call>, ...): a draft step then reads that share of the
  // LM head instead of all of it, which for the 4B model's 248,320 tokens is a quarter of the
  // weights. Qwen's ids are BPE merge ranks, so low ids are the frequent tokens (the idea of
  // FR-Spec, Zhao et al. 2025). Verification still scores the whole vocabulary: only how often a
  // draft is right can change, never the output. A slot that asks for its draft logits gets the
  // whole vocabulary's.
  absl::Status MtpDraft(ops::ComputeContext& ctx, absl::Span<const DraftSlot> slots,
                        int64_t draft_vocab = 0);

  // Runs the rows these sequences' heads put aside (Segment::mtp_defer), a pass per sequence
  // (at most kMaxMtpDeferredRows rows each), so that each head follows its trunk again
  // (mtp_past() == n_past()). States without such rows are left alone. FAILED_PRECONDITION
  // without the head, INVALID_ARGUMENT for a null or repeated state.
  absl::Status MtpCatchUpDeferred(ops::ComputeContext& ctx,
                                  absl::Span<SequenceState* const> states);

  // Rows the MTP head's catch-up has run since the model was loaded (every Forward() segment
  // with Segment::mtp, and MtpCatchUpDeferred()), for tests and benchmarks.
  int64_t mtp_rows_run() const { return mtp_rows_run_.load(std::memory_order_relaxed); }

 private:
  // One sequence's rows for MtpCatchUp(): those its state put aside, then `tokens` (about to be
  // appended at n_past()) with the trunk's final-normed hidden row after each (`hidden`
  // [tokens.size(), n_embd]; none without tokens).
  struct MtpRows {
    SequenceState* state = nullptr;
    absl::Span<const int32_t> tokens;
    const float* hidden = nullptr;
  };

  explicit Model(std::shared_ptr<const gguf::GgufFile> file) : file_(std::move(file)) {}
  absl::Status LoadWeights();
  // Points the weight matrices at a packed copy under options.packed_dir (see LoadOptions).
  absl::Status UsePackedCopy(const LoadOptions& options);
  std::vector<ops::Weight*> Matrices();
  absl::StatusOr<ops::Weight> Matrix(const std::string& name, int64_t n_in, int64_t n_out);
  absl::StatusOr<ops::Weight> MatrixOf(const gguf::TensorInfo* t, const std::string& name,
                                       int64_t n_in, int64_t n_out);
  absl::StatusOr<const float*> Vector(const std::string& name, int64_t n);
  absl::StatusOr<const float*> VectorOf(const gguf::TensorInfo* t, const std::string& name,
                                        int64_t n, bool add_one);
  // Loads the MTP block when the file has one (model_mtp.cc).
  absl::Status LoadMtp();
  absl::StatusOr<const float*> FindVector(std::initializer_list<std::string> names, int64_t n);

  // `cell0`: per segment, the KV cell of its first row (empty: the state's n_past()).
  void AttentionBlock(ops::ComputeContext& ctx, const LayerWeights& L,
                      absl::Span<const Segment> segments, const float* h, int64_t n, float* out,
                      absl::Span<const int64_t> cell0 = {});
  void FfnBlock(ops::ComputeContext& ctx, const LayerWeights& L, int il, const float* h, int64_t n,
                float* out);
  // The MTP block over n rows (tokens, and the hidden row each is paired with) of `segments`
  // (text; positions_ set for these rows), KV at `cell0` (see AttentionBlock). Writes the
  // shared-head-normed rows [n, n_embd] to `final_rows`.
  void MtpBlock(ops::ComputeContext& ctx, absl::Span<const Segment> segments, const int32_t* tokens,
                const float* hidden_in, int64_t n, absl::Span<const int64_t> cell0,
                float* final_rows);
  // Sets positions_ (text rotary positions) for rows of `segments` starting at `pos0`.
  void TextPositions(absl::Span<const Segment> segments, absl::Span<const int64_t> pos0);
  // Stores the MTP block's keys and values for these rows (all the block's later rows need of
  // them), pairing each token with the trunk's hidden row before it (the state's input row for
  // the first), and moves the states' MTP input rows and mtp_past() past them.
  void MtpCatchUp(ops::ComputeContext& ctx, absl::Span<const MtpRows> rows);
  // The MTP head's input for n rows: [rmsnorm(embedding) * enorm | rmsnorm(hidden) * hnorm]
  // through eh_proj, into x [n, n_embd].
  void MtpInput(ops::ComputeContext& ctx, const int32_t* tokens, const float* hidden_in, int64_t n,
                float* x);
  void DeltaNetBlock(ops::ComputeContext& ctx, const LayerWeights& L,
                     absl::Span<const Segment> segments, const float* h, int64_t n, float* out);
  float* Buffer(int id, size_t n_floats);

  std::shared_ptr<const gguf::GgufFile> file_;
  std::unique_ptr<packing::PackedStore> packed_;
  PackingReport packing_;
  ModelConfig config_;
  ops::Weight token_embd_;
  ops::Weight lm_head_;  // output.weight, or token_embd when tied
  const float* output_norm_ = nullptr;
  std::vector<LayerWeights> layers_;
  MtpWeights mtp_;
  std::vector<std::vector<float>> owned_;  // float copies of small tensors
  std::vector<ops::ScratchBuffer> buffers_;
  std::vector<int32_t> positions_;   // [n] rotary position of each token of the batch
  std::vector<int32_t> positions4_;  // [n, 4] M-RoPE streams, when a segment brings them
  bool multi_positions_ = false;     // positions4_ is in use for this batch
  std::vector<float> draft_logits_;  // MtpDraft's logit rows of one step
  std::atomic<int64_t> mtp_rows_run_{0};
  // The vocabulary's control and user-defined token ids, ascending (MtpDraft's draft_vocab).
  std::vector<int32_t> special_ids_;
  // The LM head's rows of the special ids at or above draft_extra_from_, copied from the file's
  // rows (not packed: a few hundred rows at most), for a draft vocabulary of that size.
  int64_t draft_extra_from_ = -1;
  std::vector<int32_t> draft_extra_ids_;
  std::vector<uint8_t> draft_extra_rows_;
  ops::Weight draft_extra_;
  std::vector<float> draft_extra_logits_;  // [n, draft_extra_ids_.size()]
};

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_MODEL_H_

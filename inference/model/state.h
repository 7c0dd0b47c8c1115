// Per-sequence state of the hybrid model: the attention layers' KV cache and the delta-net
// layers' convolution and recurrent states.
#ifndef QWEN_INFERENCE_MODEL_STATE_H_
#define QWEN_INFERENCE_MODEL_STATE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/model/config.h"
#include "inference/ops/attention.h"

namespace qwen::model {

// The KV cache's element type. F16 is the default everywhere (half the memory; the logits stay
// within the tolerances tests/model holds them to).
enum class KvType { kF16, kF32 };
inline constexpr KvType kDefaultKvType = KvType::kF16;

// The one parser of a KV type's name, as --kv_type takes it: "f16" or "f32". INVALID_ARGUMENT
// "--kv_type must be f16 or f32, not \"NAME\"" otherwise.
absl::StatusOr<KvType> ParseKvType(absl::string_view name);
// "f16" or "f32".
absl::string_view KvTypeName(KvType type);

// Rows the MTP head of one sequence may leave for later (Segment::mtp_defer): 512 rows of the
// 4B model's hidden size are 5 MiB.
inline constexpr int64_t kMaxMtpDeferredRows = 512;

// The memory one sequence needs, by part.
struct StateSize {
  size_t kv_bytes_per_token = 0;  // all attention layers (the MTP block's too), K and V
  size_t kv_bytes_reserved = 0;   // for the whole context (address space, not resident)
  size_t recurrent_bytes = 0;     // delta-net states, and the MTP head's input row
  size_t conv_bytes = 0;          // conv states
  // Speculative decoding: one verify checkpoint (ReserveCheckpoints: the delta-net recurrent and
  // conv states, and with the MTP head its input row), and with the head the most rows it puts
  // aside (kMaxMtpDeferredRows).
  size_t checkpoint_bytes = 0;
  size_t mtp_deferred_bytes = 0;
  size_t resident_bytes(int64_t n_tokens) const {
    return kv_bytes_per_token * n_tokens + recurrent_bytes + conv_bytes;
  }
  // What a sequence that drafts up to max_draft tokens a step adds, at most.
  size_t speculative_bytes(int max_draft) const {
    return max_draft > 0 ? static_cast<size_t>(max_draft) * checkpoint_bytes + mtp_deferred_bytes
                         : 0;
  }
};

// The state of one sequence. The KV cache reserves address space for `n_ctx` tokens up front
// (anonymous mapping, not committed), so memory grows with the tokens actually stored; the
// delta-net states are fixed-size and overwritten by every token.
//
// With the MTP head loaded (ModelConfig::has_mtp) it also holds the MTP block's KV cache (the
// last KV layer) and the head's input for the next position: the trunk's final-normed hidden
// row of the last token, with how many MTP cells are valid (mtp_past()).
//
// Speculative verification: a forward pass may keep the delta-net states after each token of a
// segment (Segment::keep_states); Rollback() then cuts the segment back to its first tokens,
// leaving the state exactly as if only those had been fed (the KV rows after them are simply
// not counted any more).
//
// Thread-compatible: a state belongs to one sequence and is touched by one forward pass at a time.
class SequenceState {
 public:
  static absl::StatusOr<std::unique_ptr<SequenceState>> Create(const ModelConfig& config,
                                                               int64_t n_ctx, KvType kv_type);
  static StateSize SizeFor(const ModelConfig& config, int64_t n_ctx, KvType kv_type);
  ~SequenceState();
  SequenceState(const SequenceState&) = delete;
  SequenceState& operator=(const SequenceState&) = delete;

  int64_t n_past() const { return n_past_; }
  // Rotary position of the next token: one past the largest position used so far. Equals
  // n_past() for text; an image's tokens take rows * cols cache cells but only
  // max(rows, cols) positions (M-RoPE), so after one it is smaller.
  int64_t next_position() const { return next_pos_; }
  int64_t capacity() const { return n_ctx_; }
  KvType kv_type() const { return kv_type_; }
  const StateSize& size() const { return size_; }

  // Forgets every token: the next forward pass starts a new sequence.
  void Reset();

  // The MTP head (has_mtp only): the trunk's final-normed hidden row [n_embd] of token
  // mtp_past() - 1 (zeros before the first), and how many MTP KV cells hold values computed
  // from the true tokens and hidden rows (equal to n_past() while every pass caught the head
  // up; less by mtp_deferred() while rows wait).
  bool has_mtp() const { return !mtp_hidden_.empty(); }
  float* mtp_hidden() { return mtp_hidden_.data(); }
  const float* mtp_hidden() const { return mtp_hidden_.data(); }
  int64_t mtp_past() const { return mtp_past_; }
  void set_mtp_past(int64_t n) { mtp_past_ = n; }
  // Rows put aside for the head (Segment::mtp_defer): the tokens at cells [mtp_past(),
  // mtp_past() + mtp_deferred()), each with the trunk's final-normed hidden row after it, not yet
  // through the head. Running them later gives the head the same keys and values, bit for bit
  // (the kernels' column independence), so a sequence that does not draft need not pay for its
  // head until it drafts again. The head follows the trunk while mtp_follows().
  int64_t mtp_deferred() const { return static_cast<int64_t>(mtp_deferred_tokens_.size()); }
  const int32_t* mtp_deferred_tokens() const { return mtp_deferred_tokens_.data(); }
  const float* mtp_deferred_hidden() const { return mtp_deferred_hidden_.data(); }  // [n, n_embd]
  bool mtp_follows() const { return has_mtp() && mtp_past_ + mtp_deferred() == n_past_; }
  // Appends n rows (tokens about to be appended at n_past(), and their hidden rows [n, n_embd]).
  void DeferMtp(const int32_t* tokens, const float* hidden, int64_t n);
  // Forgets the rows put aside: after they went through the head (which moved mtp_past()), or
  // to leave the head behind for good.
  void ClearMtpDeferred() {
    mtp_deferred_tokens_.clear();
    mtp_deferred_hidden_.clear();
  }
  int mtp_kv_index() const { return n_attn_ - 1; }  // the MTP block's KV layer, with has_mtp

  // Per-token checkpoints of a verify segment (Segment::keep_states): room for `n` tokens.
  // RESOURCE_EXHAUSTED when the memory cannot be had (nothing changes then).
  absl::Status ReserveCheckpoints(int64_t n);
  int64_t checkpoint_capacity() const { return n_checkpoints_; }
  float* checkpoint_conv(int delta_index, int64_t t) {
    return ck_conv_.data() + (t * n_delta_ + delta_index) * conv_floats_;
  }
  float* checkpoint_recurrent(int delta_index, int64_t t) {
    return ck_ssm_.data() + (t * n_delta_ + delta_index) * ssm_floats_;
  }
  float* checkpoint_hidden(int64_t t) { return ck_hidden_.data() + t * mtp_hidden_.size(); }
  // Records that the last forward pass appended `n` tokens at cell `base_past`, rotary position
  // `base_pos`, keeping checkpoints (called by Model::Forward).
  void MarkCheckpointed(int64_t base_past, int64_t base_pos, int64_t n) {
    ck_base_past_ = base_past;
    ck_base_pos_ = base_pos;
    ck_tokens_ = n;
  }
  // Keeps the first `keep` tokens (1 <= keep <= n) of the segment the last forward pass fed with
  // keep_states: the delta-net states, the MTP input row and the token count become what they
  // were after token keep - 1 (with rows put aside for the head, those of the tokens cut go
  // instead). FAILED_PRECONDITION when no such pass preceded it.
  absl::Status Rollback(int64_t keep);
  // Makes this state equal to `other` (same model and capacity): for forking a sequence.
  absl::Status CopyFrom(const SequenceState& other);

  // Views for the forward pass. `attn_index` / `delta_index` count layers of that kind.
  ops::KvView kv(int attn_index) const;
  float* conv_state(int delta_index) { return conv_.get() + delta_index * conv_floats_; }
  float* recurrent_state(int delta_index) { return ssm_.get() + delta_index * ssm_floats_; }
  // Records n more tokens whose largest position was next_position - 1.
  void Advance(int64_t n, int64_t next_position) {
    n_past_ += n;
    next_pos_ = next_position;
  }
  void Advance(int64_t n) { Advance(n, next_pos_ + n); }

  // Snapshots, for the prefix cache. KV rows are packed per attention layer, K then V, per KV
  // head, position-major: kv_bytes_per_token * (end - begin) bytes. The recurrent part is every
  // delta-net layer's conv state then its recurrent state: recurrent_bytes + conv_bytes bytes.
  void ExportKv(int64_t begin, int64_t end, uint8_t* dst) const;
  void ImportKv(int64_t begin, int64_t end, const uint8_t* src);
  // The MTP head's part is as of mtp_past(): rows put aside are not in it, so a state imported
  // from it that had some has its head behind (it never drafts with the head).
  void ExportRecurrent(uint8_t* dst) const;
  void ImportRecurrent(const uint8_t* src);
  // Declares positions [0, n) filled (after ImportKv/ImportRecurrent of a prefix of n tokens);
  // the next forward pass appends at n.
  // The next rotary position becomes n too (text); SetNextPosition() corrects it when the
  // prefix holds images.
  void SetPast(int64_t n) {
    n_past_ = n;
    next_pos_ = n;
  }
  void SetNextPosition(int64_t p) { next_pos_ = p; }

 private:
  SequenceState() = default;
  struct FreeFloats {
    void operator()(float* p) const;
  };

  int64_t n_ctx_ = 0;
  KvType kv_type_ = KvType::kF16;
  int64_t n_past_ = 0;
  int64_t next_pos_ = 0;
  int n_attn_ = 0;
  int n_head_kv_ = 0;
  int head_dim_ = 0;
  size_t kv_layer_bytes_ = 0;  // K or V of one layer
  void* kv_mapping_ = nullptr;
  size_t kv_mapping_bytes_ = 0;
  size_t conv_floats_ = 0;
  size_t ssm_floats_ = 0;
  int n_delta_ = 0;
  std::unique_ptr<float, FreeFloats> conv_;
  std::unique_ptr<float, FreeFloats> ssm_;
  std::vector<float> mtp_hidden_;  // [n_embd] with the MTP head, else empty
  int64_t mtp_past_ = 0;
  std::vector<int32_t> mtp_deferred_tokens_;  // [mtp_deferred()]
  std::vector<float> mtp_deferred_hidden_;    // [mtp_deferred(), n_embd]
  // Verify checkpoints: [n_checkpoints_][n_delta_] conv and recurrent states, [..][n_embd] rows.
  int64_t n_checkpoints_ = 0;
  std::vector<float> ck_conv_, ck_ssm_, ck_hidden_;
  int64_t ck_base_past_ = 0, ck_base_pos_ = 0, ck_tokens_ = 0;  // ck_tokens_ 0: none to roll back
  StateSize size_;
};

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_STATE_H_

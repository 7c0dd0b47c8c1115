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

// The memory one sequence needs, by part.
struct StateSize {
  size_t kv_bytes_per_token = 0;  // all attention layers, K and V
  size_t kv_bytes_reserved = 0;   // for the whole context (address space, not resident)
  size_t recurrent_bytes = 0;     // delta-net states
  size_t conv_bytes = 0;          // conv states
  size_t resident_bytes(int64_t n_tokens) const {
    return kv_bytes_per_token * n_tokens + recurrent_bytes + conv_bytes;
  }
};

// The state of one sequence. The KV cache reserves address space for `n_ctx` tokens up front
// (anonymous mapping, not committed), so memory grows with the tokens actually stored; the
// delta-net states are fixed-size and overwritten by every token.
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
  StateSize size_;
};

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_STATE_H_

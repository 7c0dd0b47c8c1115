// Hyperparameters of a Qwen3.5 hybrid model, read from GGUF metadata.
#ifndef QWEN_INFERENCE_MODEL_CONFIG_H_
#define QWEN_INFERENCE_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/layout.h"

namespace qwen::model {

// Everything the forward pass needs to know about the model's shape. Read from the `qwen35.*`
// keys; both llama.cpp's layout and Ollama's own (per-layer head_count_kv, 3 rope sections, MTP
// as mtp.* tensors) are accepted. A plain value type; thread-compatible.
struct ModelConfig {
  std::string architecture;  // "qwen35"
  std::string name;          // general.name, if any
  FileLayout layout = FileLayout::kLlamaCpp;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int n_layer = 0;  // trunk blocks that the forward pass runs
  int n_nextn = 0;  // MTP blocks stored (llama.cpp: after the trunk; Ollama: mtp.*)
  // The MTP draft head is loaded (Model::Load sets it; FromGguf leaves it false): sequence
  // states then hold its KV cache and input row (SequenceState).
  bool has_mtp = false;
  int64_t context_length = 0;
  float rms_eps = 1e-6f;

  // Gated full attention.
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // key_length == value_length
  int n_rot = 0;     // rotated dims per head (partial rotary)
  float rope_base = 10000.0f;
  std::vector<int> rope_sections;  // M-RoPE sections (time, height, width, extra)

  // Gated delta net.
  int conv_kernel = 0;      // causal conv width (4)
  int ssm_head_dim = 0;     // state_size: key and value head dim (128)
  int ssm_n_k = 0;          // group_count: key/query heads
  int ssm_n_v = 0;          // time_step_rank: value heads
  bool ssm_v_tiled = true;  // value head j reads key head j % n_k (else j / (n_v / n_k))

  std::vector<bool> is_attention;  // per trunk layer: full attention (else delta net)

  int64_t ssm_qkv_dim() const { return int64_t{2} * ssm_n_k * ssm_head_dim + ssm_v_dim(); }
  int64_t ssm_v_dim() const { return int64_t{ssm_n_v} * ssm_head_dim; }
  int64_t q_dim() const { return int64_t{n_head} * head_dim; }
  int64_t kv_dim() const { return int64_t{n_head_kv} * head_dim; }
  int n_attention_layers() const;
  // KV caches a sequence holds: the trunk's attention layers, plus the MTP block's when loaded
  // (the last one).
  int n_kv_layers() const { return n_attention_layers() + (has_mtp ? 1 : 0); }
  int n_delta_layers() const { return n_layer - n_attention_layers(); }
  // Key head that delta-net value head j reads.
  int KeyHeadOf(int j) const { return ssm_v_tiled ? j % ssm_n_k : j / (ssm_n_v / ssm_n_k); }

  // Reads and checks the configuration. Refuses another architecture and inconsistent values
  // with an error naming the key.
  static absl::StatusOr<ModelConfig> FromGguf(const gguf::GgufFile& file);
};

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_CONFIG_H_

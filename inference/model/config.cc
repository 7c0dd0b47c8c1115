#include "inference/model/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::model {
namespace {

absl::Status Invalid(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("model metadata \"", key, "\": ", why));
}

}  // namespace

int ModelConfig::n_attention_layers() const {
  return static_cast<int>(std::count(is_attention.begin(), is_attention.end(), true));
}

absl::StatusOr<ModelConfig> ModelConfig::FromGguf(const gguf::GgufFile& file) {
  ModelConfig c;
  ASSIGN_OR_RETURN(absl::string_view arch, file.GetString("general.architecture"));
  c.architecture = std::string(arch);
  if (arch != "qwen35") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported architecture \"", arch,
                     "\": this engine runs Qwen3.5 hybrid models (general.architecture = qwen35); ",
                     DescribeFile(file)));
  }
  c.layout = DetectLayout(file);
  if (auto name = file.GetString("general.name"); name.ok()) c.name = std::string(*name);
  const std::string p = "qwen35.";
  auto key = [&p](absl::string_view k) { return absl::StrCat(p, k); };

  ASSIGN_OR_RETURN(uint32_t block_count, file.GetU32(key("block_count")));
  // Bounded before anything is sized by it: a corrupt file can say four billion (found by
  // tests/fuzz/gguf_fuzzer: the layer table was allocated from it, or from its negative int).
  constexpr uint32_t kMaxBlocks = 4096;
  if (block_count == 0 || block_count > kMaxBlocks) {
    return Invalid(key("block_count"),
                   absl::StrCat(block_count, " is not between 1 and ", kMaxBlocks));
  }
  ASSIGN_OR_RETURN(uint32_t nextn, file.GetU32Or(key("nextn_predict_layers"), 0));
  if (nextn >= block_count) {
    return Invalid(key("nextn_predict_layers"),
                   absl::StrCat(nextn, " is not below block_count ", block_count));
  }
  c.n_layer = static_cast<int>(block_count - nextn);
  c.n_nextn = static_cast<int>(nextn);
  // Ollama's block_count counts the trunk only; its MTP block is stored as mtp.* tensors.
  if (c.layout == FileLayout::kOllama && nextn == 0) c.n_nextn = CountOllamaMtpBlocks(file);
  ASSIGN_OR_RETURN(uint32_t n_embd, file.GetU32(key("embedding_length")));
  ASSIGN_OR_RETURN(uint32_t n_ff, file.GetU32(key("feed_forward_length")));
  ASSIGN_OR_RETURN(uint32_t ctx, file.GetU32(key("context_length")));
  c.n_embd = n_embd;
  c.n_ff = n_ff;
  c.context_length = ctx;
  ASSIGN_OR_RETURN(c.rms_eps, file.GetF32(key("attention.layer_norm_rms_epsilon")));

  ASSIGN_OR_RETURN(uint32_t n_head, file.GetU32(key("attention.head_count")));
  c.n_head = static_cast<int>(n_head);
  ASSIGN_OR_RETURN(uint32_t key_length, file.GetU32(key("attention.key_length")));
  ASSIGN_OR_RETURN(uint32_t value_length, file.GetU32(key("attention.value_length")));
  if (key_length != value_length) {
    return Invalid(key("attention.value_length"),
                   absl::StrCat(value_length, " differs from key_length ", key_length));
  }
  c.head_dim = static_cast<int>(key_length);
  ASSIGN_OR_RETURN(uint32_t n_rot, file.GetU32(key("rope.dimension_count")));
  c.n_rot = static_cast<int>(n_rot);
  ASSIGN_OR_RETURN(c.rope_base, file.GetF32Or(key("rope.freq_base"), 10000.0f));
  if (file.Has(key("rope.dimension_sections"))) {
    ASSIGN_OR_RETURN(std::vector<int64_t> s, file.GetIntArray(key("rope.dimension_sections")));
    for (int64_t v : s) c.rope_sections.push_back(static_cast<int>(v));
    c.rope_sections.resize(4, 0);  // Ollama writes three
  }

  ASSIGN_OR_RETURN(uint32_t conv, file.GetU32(key("ssm.conv_kernel")));
  ASSIGN_OR_RETURN(uint32_t d_state, file.GetU32(key("ssm.state_size")));
  ASSIGN_OR_RETURN(uint32_t n_k, file.GetU32(key("ssm.group_count")));
  ASSIGN_OR_RETURN(uint32_t n_v, file.GetU32(key("ssm.time_step_rank")));
  ASSIGN_OR_RETURN(uint32_t inner, file.GetU32(key("ssm.inner_size")));
  c.conv_kernel = static_cast<int>(conv);
  c.ssm_head_dim = static_cast<int>(d_state);
  c.ssm_n_k = static_cast<int>(n_k);
  c.ssm_n_v = static_cast<int>(n_v);
  ASSIGN_OR_RETURN(c.ssm_v_tiled, file.GetBoolOr(key("ssm.v_head_reordered"), true));

  // Layer kinds: Ollama stores head_count_kv per layer with 0 for recurrent layers; llama.cpp
  // stores a scalar and the interval.
  const gguf::Value* hkv = file.Find(key("attention.head_count_kv"));
  if (hkv == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("metadata key \"", key("attention.head_count_kv"), "\" is missing"));
  }
  c.is_attention.assign(c.n_layer, false);
  if (hkv->type == gguf::ValueType::kArray) {
    ASSIGN_OR_RETURN(std::vector<int64_t> per_layer,
                     file.GetIntArray(key("attention.head_count_kv")));
    if (per_layer.size() < static_cast<size_t>(c.n_layer)) {
      return Invalid(key("attention.head_count_kv"),
                     absl::StrCat("has ", per_layer.size(), " entries for ", c.n_layer, " layers"));
    }
    int64_t max_kv = 0;
    for (int i = 0; i < c.n_layer; ++i) {
      c.is_attention[i] = per_layer[i] != 0;
      max_kv = std::max(max_kv, per_layer[i]);
      if (per_layer[i] != 0 && per_layer[i] != per_layer[0] && per_layer[0] != 0) {
        return Invalid(key("attention.head_count_kv"), "attention layers differ in KV heads");
      }
    }
    c.n_head_kv = static_cast<int>(max_kv);
  } else {
    ASSIGN_OR_RETURN(uint32_t n_head_kv, file.GetU32(key("attention.head_count_kv")));
    c.n_head_kv = static_cast<int>(n_head_kv);
    ASSIGN_OR_RETURN(uint32_t interval, file.GetU32Or(key("full_attention_interval"), 4));
    if (interval == 0) return Invalid(key("full_attention_interval"), "must be positive");
    for (int i = 0; i < c.n_layer; ++i) c.is_attention[i] = (i + 1) % interval == 0;
  }

  // Consistency.
  if (c.n_layer <= 0) return Invalid(key("block_count"), "no trunk layers");
  if (c.n_embd <= 0 || c.n_ff <= 0) return Invalid(key("embedding_length"), "must be positive");
  if (c.n_head <= 0 || c.n_head_kv <= 0 || c.n_head % c.n_head_kv != 0) {
    return Invalid(key("attention.head_count_kv"),
                   absl::StrCat(c.n_head_kv, " KV heads do not divide ", c.n_head, " query heads"));
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return Invalid(key("attention.key_length"), "must be a positive even number");
  }
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2 != 0) {
    return Invalid(key("rope.dimension_count"),
                   absl::StrCat(c.n_rot, " must be even and at most the head dim ", c.head_dim));
  }
  if (c.conv_kernel < 1 || c.conv_kernel > 16) {
    return Invalid(key("ssm.conv_kernel"), absl::StrCat(c.conv_kernel, " is out of range"));
  }
  if (c.ssm_head_dim <= 0 || c.ssm_n_k <= 0 || c.ssm_n_v <= 0 || c.ssm_n_v % c.ssm_n_k != 0) {
    return Invalid(
        key("ssm.time_step_rank"),
        absl::StrCat(c.ssm_n_v, " value heads are not a multiple of ", c.ssm_n_k, " key heads"));
  }
  if (static_cast<int64_t>(inner) != c.ssm_v_dim()) {
    return Invalid(
        key("ssm.inner_size"),
        absl::StrCat(inner, " differs from time_step_rank x state_size = ", c.ssm_v_dim()));
  }
  if (c.context_length <= 0) return Invalid(key("context_length"), "must be positive");

  // The vocabulary is as large as the embedding matrix (it may exceed the tokenizer's list when
  // the converter padded it).
  const gguf::TensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::NotFoundError("tensor \"token_embd.weight\" is missing");
  if (embd->n_dims != 2 || embd->ne[0] != c.n_embd) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"token_embd.weight\" has shape ",
                                                   embd->ShapeString(), ", expected [", c.n_embd,
                                                   ", n_vocab]"));
  }
  c.n_vocab = embd->ne[1];
  return c;
}

}  // namespace qwen::model

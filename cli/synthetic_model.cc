#include "cli/synthetic_model.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/synth_data.h"
#include "inference/common/fp16.h"
#include "inference/common/status_macros.h"
#include "inference/gguf/gguf_file.h"
#include "inference/gguf/gguf_writer.h"

namespace qwen::cli {
namespace {

using quant::GgmlType;

struct Shape {
  int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_rot;
  int ssm_n_k, ssm_n_v, ssm_d, conv;
  int64_t n_vocab, n_ctx;
};

constexpr Shape kQwen35_4B = {32, 2560, 9216, 16, 4, 256, 64, 16, 32, 128, 4, 248320, 262144};
constexpr Shape kTiny = {8, 256, 512, 2, 1, 256, 64, 2, 4, 128, 4, 1024, 8192};

// splitmix64: fast, good enough for weights nobody reads.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform() { return static_cast<float>(Next() >> 40) * 0x1.0p-24f; }  // [0, 1)
};

// Fills quantized blocks of `type` whose values have roughly standard deviation `sigma`.
void FillBlocks(GgmlType type, float sigma, uint64_t seed, uint8_t* dst, uint64_t offset,
                uint64_t n) {
  Rng rng{seed ^ (offset * 0x2545f4914f6cdd1dull)};
  const int64_t bs = quant::Traits(type).type_size;
  auto put_f16 = [](uint8_t* p, float v) {
    const uint16_t h = Fp32ToFp16(v);
    std::memcpy(p, &h, 2);
  };
  auto fill_random = [&](uint8_t* p, size_t len) {
    for (size_t i = 0; i < len; i += 8) {
      const uint64_t r = rng.Next();
      std::memcpy(p + i, &r, std::min<size_t>(8, len - i));
    }
  };
  for (uint64_t b = 0; b < n / bs; ++b) {
    uint8_t* p = dst + b * bs;
    fill_random(p, bs);
    // Then overwrite the scale fields with sane values. Unsigned codes are uniform, so the
    // standard deviation of a value is about d * scale * range / sqrt(12).
    switch (type) {
      case GgmlType::kQ8_0:  // d f16, 32 int8
        put_f16(p, sigma / 73.9f);
        break;
      case GgmlType::kQ3_K:  // hmask[32] qs[64] scales[12] d: values (q - 4) * (s - 32) * d
        // 6-bit scales: keep them near 32 + 8 by setting the packed bytes to a fixed pattern.
        // Each scale is 40 (= 32 + 8): low nibbles 8, high bit pairs 2.
        std::memset(p + 96, 0x88, 8);
        std::memset(p + 104, 0xAA, 4);
        put_f16(p + 108, sigma / (8.0f * 2.29f));
        break;
      case GgmlType::kQ4_K:  // d dmin scales[12] qs[128]
      case GgmlType::kQ5_K: {
        const float range = type == GgmlType::kQ4_K ? 15.0f : 31.0f;
        // All 6-bit scales and mins 32 (bytes 0-7: low 6 bits 32, top 2 bits the high bits of
        // scales and mins 4-7, also 32; bytes 8-11: their low nibbles, 0). With dmin = d *
        // range / 2 the values d * 32 * q - dmin * 32 have mean zero.
        std::memset(p + 4, 0xA0, 8);
        std::memset(p + 12, 0x00, 4);
        const float d = sigma / (32.0f * range / 3.46f);
        put_f16(p, d);
        put_f16(p + 2, d * range / 2.0f);
        break;
      }
      case GgmlType::kQ6_K: {  // ql[128] qh[64] scales[16] d: values (q - 32) * s * d
        for (int i = 0; i < 16; ++i) p[192 + i] = 16;
        put_f16(p + 208, sigma / (16.0f * 18.5f));
        break;
      }
      default:
        break;
    }
  }
}

void FillF32(float value, float jitter, uint64_t seed, uint8_t* dst, uint64_t offset, uint64_t n) {
  Rng rng{seed ^ offset};
  for (uint64_t i = 0; i < n / 4; ++i) {
    const float v = value + jitter * (rng.Uniform() * 2.0f - 1.0f);
    std::memcpy(dst + i * 4, &v, 4);
  }
}

// Fills float weights (F32, F16 or BF16) uniform with standard deviation `sigma`.
void FillFloat(GgmlType type, float sigma, uint64_t seed, uint8_t* dst, uint64_t offset,
               uint64_t n) {
  const int64_t size = type == GgmlType::kF32 ? 4 : 2;
  Rng rng{seed ^ (offset * 0x2545f4914f6cdd1dull)};
  const float a = sigma * 1.7320508f;  // uniform [-a, a] has standard deviation a / sqrt(3)
  for (uint64_t i = 0; i < n / size; ++i) {
    const float v = a * (rng.Uniform() * 2.0f - 1.0f);
    if (type == GgmlType::kF32) {
      std::memcpy(dst + i * 4, &v, 4);
    } else {
      const uint16_t h = type == GgmlType::kF16 ? Fp32ToFp16(v) : Fp32ToBf16(v);
      std::memcpy(dst + i * 2, &h, 2);
    }
  }
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::Status WriteSyntheticModel(const SynthOptions& o, const std::string& path) {
  Shape s;
  if (o.shape == "qwen3.5-4b") {
    s = kQwen35_4B;
  } else if (o.shape == "tiny") {
    s = kTiny;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--shape: unknown shape \"", o.shape, "\" (qwen3.5-4b or tiny)"));
  }
  if (o.type != "q3_k_m" && o.type != "q4_k_m" && o.type != "q8_0") {
    return absl::InvalidArgumentError(
        absl::StrCat("--type: unknown type \"", o.type, "\" (q3_k_m, q4_k_m or q8_0)"));
  }
  gguf::GgufWriter w;
  const std::string a = "qwen35.";
  w.AddString("general.architecture", "qwen35");
  w.AddString("general.name", absl::StrCat("synthetic-", o.shape, "-", o.type));
  w.AddU32(a + "context_length", static_cast<uint32_t>(s.n_ctx));
  w.AddU32(a + "embedding_length", s.n_embd);
  w.AddU32(a + "block_count", s.n_layer + (o.mtp ? 1 : 0));
  if (o.mtp) w.AddU32(a + "nextn_predict_layers", 1);
  w.AddU32(a + "feed_forward_length", s.n_ff);
  w.AddU32(a + "attention.head_count", s.n_head);
  w.AddU32(a + "attention.head_count_kv", s.n_head_kv);
  w.AddU32(a + "attention.key_length", s.head_dim);
  w.AddU32(a + "attention.value_length", s.head_dim);
  w.AddF32(a + "rope.freq_base", 1e7f);
  w.AddU32(a + "rope.dimension_count", s.n_rot);
  w.AddI32Array(a + "rope.dimension_sections", {11, 11, 10, 0});
  w.AddF32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  w.AddU32(a + "ssm.conv_kernel", s.conv);
  w.AddU32(a + "ssm.inner_size", s.ssm_n_v * s.ssm_d);
  w.AddU32(a + "ssm.state_size", s.ssm_d);
  w.AddU32(a + "ssm.time_step_rank", s.ssm_n_v);
  w.AddU32(a + "ssm.group_count", s.ssm_n_k);
  w.AddU32(a + "full_attention_interval", 4);

  // Vocabulary: a real tokenizer's when given, padded to the model's size.
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  uint32_t eos = 0, pad = 0;
  if (!o.vocab_gguf.empty()) {
    std::unique_ptr<gguf::GgufFile> vf;
    if (o.vocab_gguf == kBuiltin) {
      const absl::Span<const uint8_t> bytes = BuiltinVocabGguf();
      ASSIGN_OR_RETURN(vf, gguf::GgufFile::FromBuffer(bytes.data(), bytes.size()));
    } else {
      ASSIGN_OR_RETURN(vf, gguf::GgufFile::Open(o.vocab_gguf));
    }
    ASSIGN_OR_RETURN(auto tv, vf->GetStringArray("tokenizer.ggml.tokens"));
    ASSIGN_OR_RETURN(auto tt, vf->GetIntArray("tokenizer.ggml.token_type"));
    ASSIGN_OR_RETURN(auto mv, vf->GetStringArray("tokenizer.ggml.merges"));
    for (auto t : tv) tokens.emplace_back(t);
    for (auto t : tt) types.push_back(static_cast<int32_t>(t));
    for (auto m : mv) merges.emplace_back(m);
    ASSIGN_OR_RETURN(eos, vf->GetU32("tokenizer.ggml.eos_token_id"));
    ASSIGN_OR_RETURN(pad, vf->GetU32Or("tokenizer.ggml.padding_token_id", eos));
  } else {
    // Byte-level tokens only: the GPT-2 byte-to-unicode mapping of the 256 bytes.
    for (int b = 0; b < 256; ++b) {
      int cp = b;
      if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int extra = 0;
        for (int c = 0; c < b; ++c) {
          if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) {
            ++extra;
          }
        }
        cp = 256 + extra;
      }
      std::string u;
      if (cp < 0x80) {
        u += static_cast<char>(cp);
      } else {
        u += static_cast<char>(0xC0 | (cp >> 6));
        u += static_cast<char>(0x80 | (cp & 0x3F));
      }
      tokens.push_back(u);
      types.push_back(1);
    }
    tokens.push_back("<|endoftext|>");
    types.push_back(3);
    eos = pad = 256;
  }
  if (static_cast<int64_t>(tokens.size()) > s.n_vocab) {
    tokens.resize(s.n_vocab);
    types.resize(s.n_vocab);
  }
  while (static_cast<int64_t>(tokens.size()) < s.n_vocab) {
    tokens.push_back(absl::StrCat("[PAD", tokens.size(), "]"));
    types.push_back(5);  // unused
  }
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "qwen35");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddI32Array("tokenizer.ggml.token_type", types);
  w.AddStringArray("tokenizer.ggml.merges", merges);
  w.AddU32("tokenizer.ggml.eos_token_id", eos);
  w.AddU32("tokenizer.ggml.padding_token_id", pad);
  w.AddBool("tokenizer.ggml.add_bos_token", false);
  if (!o.chat_template_file.empty()) {
    const std::string tmpl = o.chat_template_file == kBuiltin ? std::string(BuiltinChatTemplate())
                                                              : ReadText(o.chat_template_file);
    if (tmpl.empty()) {
      return absl::NotFoundError(
          absl::StrCat("cannot read the chat template ", o.chat_template_file));
    }
    w.AddString("tokenizer.chat_template", tmpl);
  }
  w.AddU32("general.quantization_version", 2);
  w.AddU32("general.file_type", o.type == "q3_k_m" ? 12 : o.type == "q4_k_m" ? 15 : 7);

  // The type mix of llama-quantize for this architecture.
  const bool q8 = o.type == "q8_0";
  const bool q4 = o.type == "q4_k_m";
  auto more_bits = [&](int i) {  // llama.cpp's use_more_bits for Q4_K_M
    return i < s.n_layer / 8 || i >= 7 * s.n_layer / 8 || (i - s.n_layer / 8) % 3 == 2;
  };
  uint64_t seed = o.seed;
  auto matrix = [&](const std::string& name, GgmlType type, int64_t n_in, int64_t n_out) {
    const float sigma = 1.0f / std::sqrt(static_cast<float>(n_in));
    const uint64_t sd = seed++ * 0x9e3779b97f4a7c15ull;
    w.AddTensor(name, type, {n_in, n_out},
                [type, sigma, sd](uint8_t* dst, uint64_t off, uint64_t n) {
                  FillBlocks(type, sigma, sd, dst, off, n);
                });
  };
  auto vec = [&](const std::string& name, std::vector<int64_t> ne, float value, float jitter) {
    const uint64_t sd = seed++;
    w.AddTensor(name, GgmlType::kF32, ne,
                [value, jitter, sd](uint8_t* dst, uint64_t off, uint64_t n) {
                  FillF32(value, jitter, sd, dst, off, n);
                });
  };
  const GgmlType Q3 = q8 ? GgmlType::kQ8_0 : q4 ? GgmlType::kQ4_K : GgmlType::kQ3_K;
  const GgmlType Q4 = q8 ? GgmlType::kQ8_0 : GgmlType::kQ4_K;
  const GgmlType Q5 = q8 ? GgmlType::kQ8_0 : q4 ? GgmlType::kQ5_K : GgmlType::kQ5_K;
  const GgmlType Q6 = q8 ? GgmlType::kQ8_0 : GgmlType::kQ6_K;

  matrix("token_embd.weight", Q6, s.n_embd, s.n_vocab);
  vec("output_norm.weight", {s.n_embd}, 1.0f, 0.1f);
  const int64_t qkv = int64_t{2} * s.ssm_n_k * s.ssm_d + int64_t{s.ssm_n_v} * s.ssm_d;
  int delta_index = 0;
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string b = absl::StrCat("blk.", il, ".");
    const bool attn = (il + 1) % 4 == 0;
    vec(b + "attn_norm.weight", {s.n_embd}, 1.0f, 0.1f);
    vec(b + "post_attention_norm.weight", {s.n_embd}, 1.0f, 0.1f);
    matrix(b + "ffn_gate.weight", Q3, s.n_embd, s.n_ff);
    matrix(b + "ffn_up.weight", Q3, s.n_embd, s.n_ff);
    const GgmlType down = q4 ? (more_bits(il) ? Q6 : Q4) : (il < 2 ? Q5 : Q4);
    matrix(b + "ffn_down.weight", down, s.n_ff, s.n_embd);
    if (attn) {
      matrix(b + "attn_q.weight", Q3, s.n_embd, 2 * s.n_head * s.head_dim);
      matrix(b + "attn_k.weight", Q3, s.n_embd, s.n_head_kv * s.head_dim);
      matrix(b + "attn_v.weight", q4 ? (more_bits(il) ? Q6 : Q4) : Q4, s.n_embd,
             s.n_head_kv * s.head_dim);
      matrix(b + "attn_output.weight", Q4, s.n_head * s.head_dim, s.n_embd);
      vec(b + "attn_q_norm.weight", {s.head_dim}, 1.0f, 0.1f);
      vec(b + "attn_k_norm.weight", {s.head_dim}, 1.0f, 0.1f);
    } else {
      matrix(b + "attn_qkv.weight", delta_index < 2 ? Q5 : Q4, s.n_embd, qkv);
      matrix(b + "attn_gate.weight", Q3, s.n_embd, s.ssm_n_v * s.ssm_d);
      matrix(b + "ssm_alpha.weight", Q3, s.n_embd, s.ssm_n_v);
      matrix(b + "ssm_beta.weight", Q3, s.n_embd, s.ssm_n_v);
      matrix(b + "ssm_out.weight", Q3, s.ssm_n_v * s.ssm_d, s.n_embd);
      vec(b + "ssm_conv1d.weight", {s.conv, qkv}, 0.0f, 0.5f);
      vec(b + "ssm_dt.bias", {s.ssm_n_v}, 0.0f, 1.0f);
      vec(b + "ssm_a", {s.ssm_n_v}, -1.0f, 0.5f);
      vec(b + "ssm_norm.weight", {s.ssm_d}, 1.0f, 0.1f);
      ++delta_index;
    }
  }
  if (o.mtp) {
    // The MTP block after the trunk: a full-attention block plus the nextn tensors.
    const std::string b = absl::StrCat("blk.", s.n_layer, ".");
    vec(b + "attn_norm.weight", {s.n_embd}, 1.0f, 0.1f);
    vec(b + "post_attention_norm.weight", {s.n_embd}, 1.0f, 0.1f);
    matrix(b + "ffn_gate.weight", Q3, s.n_embd, s.n_ff);
    matrix(b + "ffn_up.weight", Q3, s.n_embd, s.n_ff);
    matrix(b + "ffn_down.weight", q4 ? Q6 : Q5, s.n_ff, s.n_embd);
    matrix(b + "attn_q.weight", Q3, s.n_embd, 2 * s.n_head * s.head_dim);
    matrix(b + "attn_k.weight", Q3, s.n_embd, s.n_head_kv * s.head_dim);
    matrix(b + "attn_v.weight", q4 ? Q6 : Q4, s.n_embd, s.n_head_kv * s.head_dim);
    matrix(b + "attn_output.weight", Q4, s.n_head * s.head_dim, s.n_embd);
    vec(b + "attn_q_norm.weight", {s.head_dim}, 1.0f, 0.1f);
    vec(b + "attn_k_norm.weight", {s.head_dim}, 1.0f, 0.1f);
    matrix(b + "nextn.eh_proj.weight", Q4, 2 * s.n_embd, s.n_embd);
    vec(b + "nextn.enorm.weight", {s.n_embd}, 1.0f, 0.1f);
    vec(b + "nextn.hnorm.weight", {s.n_embd}, 1.0f, 0.1f);
    vec(b + "nextn.shared_head_norm.weight", {s.n_embd}, 1.0f, 0.1f);
  }
  return w.WriteFile(path);
}

absl::Status WriteSyntheticMmproj(const SynthOptions& o, const std::string& path) {
  struct VisionShape {
    int n_layer, n_embd, n_ff, n_head, pos_side, projection_dim;
  };
  // Qwen3.5-4B's tower (Qwen3-VL's 4B vision config): 24 blocks of 1024, 16 heads of 64, a 48x48
  // learned position grid, merger to the text width 2560. "tiny": the fixtures' tower.
  VisionShape s;
  if (o.shape == "qwen3.5-4b") {
    s = {24, 1024, 4096, 16, 48, 2560};
  } else if (o.shape == "tiny") {
    s = {3, 96, 176, 4, 8, 256};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--shape: unknown shape \"", o.shape, "\" (qwen3.5-4b or tiny)"));
  }
  GgmlType mat;
  if (o.type == "f16") {
    mat = GgmlType::kF16;
  } else if (o.type == "bf16") {
    mat = GgmlType::kBF16;
  } else if (o.type == "f32") {
    mat = GgmlType::kF32;
  } else if (o.type == "q8_0") {
    mat = GgmlType::kQ8_0;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--mmproj_type: unknown type \"", o.type, "\" (f16, bf16, f32 or q8_0)"));
  }
  // The converter keeps the patch kernels in F16 (F32 in an F32 file); biases, norms and the
  // position table stay F32.
  const GgmlType kernel = mat == GgmlType::kF32 ? GgmlType::kF32 : GgmlType::kF16;
  const int P = 16, C = s.n_embd;
  gguf::GgufWriter w;
  w.AddString("general.architecture", "clip");
  w.AddString("general.type", "mmproj");
  w.AddString("general.name", absl::StrCat("synthetic-", o.shape, "-vision-", o.type));
  w.AddU32("general.file_type", mat == GgmlType::kF32    ? 0
                                : mat == GgmlType::kF16  ? 1
                                : mat == GgmlType::kQ8_0 ? 7
                                                         : 32);
  w.AddBool("clip.has_vision_encoder", true);
  w.AddString("clip.projector_type", "qwen3vl_merger");
  w.AddBool("clip.use_gelu", true);
  w.AddU32("clip.vision.projection_dim", s.projection_dim);
  w.AddU32("clip.vision.image_size", s.pos_side * P);
  w.AddU32("clip.vision.patch_size", P);
  w.AddU32("clip.vision.embedding_length", C);
  w.AddU32("clip.vision.feed_forward_length", s.n_ff);
  w.AddU32("clip.vision.block_count", s.n_layer);
  w.AddU32("clip.vision.attention.head_count", s.n_head);
  w.AddF32("clip.vision.attention.layer_norm_epsilon", 1e-6f);
  w.AddF32Array("clip.vision.image_mean", {0.5f, 0.5f, 0.5f});
  w.AddF32Array("clip.vision.image_std", {0.5f, 0.5f, 0.5f});
  w.AddU32("clip.vision.spatial_merge_size", 2);
  w.AddU32("general.quantization_version", 2);

  uint64_t seed = o.seed;
  auto tensor = [&](const std::string& name, GgmlType type, std::vector<int64_t> ne, float sigma) {
    const uint64_t sd = seed++ * 0x9e3779b97f4a7c15ull;
    w.AddTensor(name, type, ne, [type, sigma, sd](uint8_t* dst, uint64_t off, uint64_t n) {
      if (type == GgmlType::kQ8_0) {
        FillBlocks(type, sigma, sd, dst, off, n);
      } else {
        FillFloat(type, sigma, sd, dst, off, n);
      }
    });
  };
  auto matrix = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    // Rows that are no whole number of Q8_0 blocks stay F16, as llama-quantize leaves them.
    const GgmlType t = mat == GgmlType::kQ8_0 && n_in % 32 != 0 ? GgmlType::kF16 : mat;
    tensor(name, t, {n_in, n_out}, 1.0f / std::sqrt(static_cast<float>(n_in)));
  };
  auto vec = [&](const std::string& name, std::vector<int64_t> ne, float value, float jitter) {
    const uint64_t sd = seed++;
    w.AddTensor(name, GgmlType::kF32, ne,
                [value, jitter, sd](uint8_t* dst, uint64_t off, uint64_t n) {
                  FillF32(value, jitter, sd, dst, off, n);
                });
  };
  const float kernel_sigma = 0.5f / std::sqrt(3.0f * P * P);
  tensor("v.patch_embd.weight", kernel, {P, P, 3, C}, kernel_sigma);
  tensor("v.patch_embd.weight.1", kernel, {P, P, 3, C}, kernel_sigma);
  vec("v.patch_embd.bias", {C}, 0.0f, 0.05f);
  tensor("v.position_embd.weight", GgmlType::kF32, {C, int64_t{s.pos_side} * s.pos_side}, 0.2f);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string b = absl::StrCat("v.blk.", il, ".");
    vec(b + "ln1.weight", {C}, 1.0f, 0.1f);
    vec(b + "ln1.bias", {C}, 0.0f, 0.05f);
    matrix(b + "attn_qkv.weight", C, 3 * C);
    vec(b + "attn_qkv.bias", {3 * C}, 0.0f, 0.05f);
    matrix(b + "attn_out.weight", C, C);
    vec(b + "attn_out.bias", {C}, 0.0f, 0.05f);
    vec(b + "ln2.weight", {C}, 1.0f, 0.1f);
    vec(b + "ln2.bias", {C}, 0.0f, 0.05f);
    matrix(b + "ffn_up.weight", C, s.n_ff);
    vec(b + "ffn_up.bias", {s.n_ff}, 0.0f, 0.05f);
    matrix(b + "ffn_down.weight", s.n_ff, C);
    vec(b + "ffn_down.bias", {C}, 0.0f, 0.05f);
  }
  vec("v.post_ln.weight", {C}, 1.0f, 0.1f);
  vec("v.post_ln.bias", {C}, 0.0f, 0.05f);
  matrix("mm.0.weight", 4 * C, 4 * C);
  vec("mm.0.bias", {4 * C}, 0.0f, 0.05f);
  matrix("mm.2.weight", 4 * C, s.projection_dim);
  vec("mm.2.bias", {s.projection_dim}, 0.0f, 0.05f);
  return w.WriteFile(path);
}

}  // namespace qwen::cli

// The Qwen3-VL vision tower (projector "qwen3vl_merger"): the math of the model's
// Qwen3VLVisionModel, from a llama.cpp mmproj or the tower bundled in an Ollama GGUF.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/fp16.h"
#include "inference/common/status_macros.h"
#include "inference/ops/matmul.h"
#include "inference/ops/vec.h"
#include "inference/quant/kernels.h"
#include "inference/quant/types.h"
#include "inference/vision/vision.h"

namespace qwen::vision {

using quant::GgmlType;

struct VisionLayer {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [n_embd]
  // [n_embd -> 3 n_embd] as [q | k | v] output columns: one fused matrix (llama.cpp) or three
  // (split layouts), each writing its columns of the qkv buffer.
  std::vector<ops::Weight> qkv;
  std::vector<float> qkv_b;  // [3 n_embd]
  ops::Weight attn_out;
  std::vector<float> attn_out_b;
  ops::Weight ffn_up;  // [n_embd -> n_ff]
  std::vector<float> ffn_up_b;
  ops::Weight ffn_down;  // [n_ff -> n_embd]
  std::vector<float> ffn_down_b;
};

struct VisionWeights {
  // The Conv3D patch kernel with its two temporal slices side by side: row o is
  // [W0[o] | W1[o]], [n_embd][2 * 3 * patch * patch], input index t * 3 P^2 + c * P^2 + ky * P +
  // kx. A frame pair's patch is [first frame's pixels | second frame's], so both slices are one
  // product (one chain of multiply-adds per output); a still image is the pair of two identical
  // frames and takes exactly the same path, which is what makes an image and the two-frame video
  // of it give the same bits. (Summing W0 + W1 once would halve this product, 0.5% of an encode,
  // but round differently from the pair.)
  std::vector<float> patch_kernel;
  ops::Weight patch;  // view of patch_kernel
  std::vector<float> patch_b;
  std::vector<float> pos;  // [n_pos_side^2][n_embd], row = y * side + x
  std::vector<VisionLayer> layers;
  std::vector<float> post_ln_w, post_ln_b;
  ops::Weight mm0;  // [4 n_embd -> 4 n_embd]
  std::vector<float> mm0_b;
  ops::Weight mm2;  // [4 n_embd -> projection_dim]
  std::vector<float> mm2_b;
};

namespace {

// ---------------------------------------------------------------------------------------------
// Tensor names: the one place that knows how a file spells the tower's tensors.

// Two layouts of the same tower:
// - kClip: llama.cpp's mmproj (general.architecture "clip"): clip.vision.* keys, the Conv3D patch
//   kernel as two temporal slices v.patch_embd.weight{,.1} [P, P, 3, C], fused v.blk.i.attn_qkv,
//   ln1/ln2, ffn_up/ffn_down, v.post_ln, mm.0/mm.2.
// - kOllama: the tower bundled in Ollama's own Qwen3.5 GGUF (text architecture, keys
//   <arch>.vision.*): one v.patch_embed.weight [P, P, 2, C * 3] (HF's [C, 3, 2, P, P] with out
//   and in folded), split attn_q/attn_k/attn_v, norm1/norm2, mlp.linear_fc1/fc2,
//   v.merger.norm/linear_fc1/linear_fc2. No feed_forward_length or projection_dim keys: taken
//   from the tensors' shapes.
enum class Layout { kClip, kOllama };

// The roles of the tower's tensors; TowerLayout::Name spells them for a layout.
enum class Role {
  kPatchBias,
  kPosEmbd,
  kLn1,  // block roles take a layer index and a suffix ("weight" / "bias")
  kLn2,
  kAttnQkv,  // kClip only
  kAttnQ,    // kOllama only
  kAttnK,
  kAttnV,
  kAttnOut,
  kFfnUp,
  kFfnDown,
  kPostLn,
  kMerger0,
  kMerger2,
};

struct TowerLayout {
  Layout layout = Layout::kClip;

  static TowerLayout Detect(const gguf::GgufFile& f) {
    TowerLayout l;
    if (f.FindTensor("v.patch_embed.weight") != nullptr) l.layout = Layout::kOllama;
    return l;
  }

  std::string Name(Role role, absl::string_view suffix = "weight", int il = -1) const {
    const bool clip = layout == Layout::kClip;
    const std::string blk = absl::StrCat("v.blk.", il, ".");
    const char* base = "";
    switch (role) {
      case Role::kPatchBias:
        return clip ? "v.patch_embd.bias" : "v.patch_embed.bias";
      case Role::kPosEmbd:
        return clip ? "v.position_embd.weight" : "v.pos_embed.weight";
      case Role::kLn1:
        base = clip ? "ln1" : "norm1";
        break;
      case Role::kLn2:
        base = clip ? "ln2" : "norm2";
        break;
      case Role::kAttnQkv:
        base = "attn_qkv";
        break;
      case Role::kAttnQ:
        base = "attn_q";
        break;
      case Role::kAttnK:
        base = "attn_k";
        break;
      case Role::kAttnV:
        base = "attn_v";
        break;
      case Role::kAttnOut:
        base = "attn_out";
        break;
      case Role::kFfnUp:
        base = clip ? "ffn_up" : "mlp.linear_fc1";
        break;
      case Role::kFfnDown:
        base = clip ? "ffn_down" : "mlp.linear_fc2";
        break;
      case Role::kPostLn:
        return absl::StrCat(clip ? "v.post_ln." : "v.merger.norm.", suffix);
      case Role::kMerger0:
        return absl::StrCat(clip ? "mm.0." : "v.merger.linear_fc1.", suffix);
      case Role::kMerger2:
        return absl::StrCat(clip ? "mm.2." : "v.merger.linear_fc2.", suffix);
    }
    return absl::StrCat(blk, base, ".", suffix);
  }
};

float Fp32FromFp16Round(float x) { return Fp16ToFp32(Fp32ToFp16(x)); }

bool IsMatrixType(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 || t == GgmlType::kQ8_0;
}

class Loader {
 public:
  explicit Loader(const gguf::GgufFile& f) : f_(f) {}

  absl::StatusOr<const gguf::TensorInfo*> Tensor(const std::string& name) const {
    const gguf::TensorInfo* t = f_.FindTensor(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("vision model: missing tensor ", name));
    }
    return t;
  }

  // A tensor of exactly `n` elements, converted to float.
  absl::StatusOr<std::vector<float>> Floats(const std::string& name, int64_t n) const {
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Tensor(name));
    if (t->n_elements != n) {
      return absl::InvalidArgumentError(absl::StrCat("vision model: tensor ", name, " has shape ",
                                                     t->ShapeString(), ", expected ", n,
                                                     " elements"));
    }
    if (!IsMatrixType(t->type) || n % quant::Traits(t->type).block_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vision model: tensor ", name, " has unsupported type ", quant::TypeName(t->type)));
    }
    std::vector<float> out(n);
    quant::DequantizeRow(t->type, t->data, out.data(), n);
    return out;
  }

  // A matrix with GGUF ne = [n_in, n_out] (n_out rows of n_in), or rows [r0, r0 + n_out) of a
  // taller one.
  absl::StatusOr<ops::Weight> Matrix(const std::string& name, int64_t n_in, int64_t n_out,
                                     int64_t total_rows = -1, int64_t r0 = 0) const {
    if (total_rows < 0) total_rows = n_out;
    ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Tensor(name));
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != total_rows) {
      return absl::InvalidArgumentError(absl::StrCat("vision model: tensor ", name, " has shape ",
                                                     t->ShapeString(), ", expected [", n_in, ", ",
                                                     total_rows, "]"));
    }
    if (!IsMatrixType(t->type) || n_in % quant::Traits(t->type).block_size != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("vision model: tensor ", name, " has unsupported type ",
                       quant::TypeName(t->type), " (supported: F32, F16, BF16, Q8_0)"));
    }
    ops::Weight w;
    w.type = t->type;
    w.n_in = n_in;
    w.n_out = n_out;
    w.row_bytes = static_cast<size_t>(quant::RowBytes(t->type, n_in));
    w.data = t->data + static_cast<size_t>(r0) * w.row_bytes;
    w.name = t->name;
    return w;
  }

 private:
  const gguf::GgufFile& f_;
};

absl::StatusOr<int> PositiveInt(const gguf::GgufFile& f, absl::string_view key) {
  ASSIGN_OR_RETURN(uint32_t v, f.GetU32(key));
  if (v == 0 || v > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("vision model: ", key, " = ", v, " is out of range"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<int> TensorDim(const gguf::GgufFile& f, const std::string& name, int dim) {
  const gguf::TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("vision model: missing tensor ", name));
  }
  return static_cast<int>(t->ne[dim]);
}

absl::StatusOr<VisionConfig> ReadConfig(const gguf::GgufFile& f, const TowerLayout& names) {
  VisionConfig c;
  std::string k;  // key prefix: "clip.vision." or "<arch>.vision."
  if (names.layout == Layout::kOllama) {
    ASSIGN_OR_RETURN(absl::string_view arch, f.GetString("general.architecture"));
    k = absl::StrCat(arch, ".vision.");
    ASSIGN_OR_RETURN(c.patch_size, PositiveInt(f, k + "patch_size"));
    ASSIGN_OR_RETURN(c.n_embd, PositiveInt(f, k + "embedding_length"));
    ASSIGN_OR_RETURN(c.n_head, PositiveInt(f, k + "attention.head_count"));
    ASSIGN_OR_RETURN(c.n_layer, PositiveInt(f, k + "block_count"));
    ASSIGN_OR_RETURN(c.n_ff, TensorDim(f, names.Name(Role::kFfnUp, "weight", 0), 1));
    ASSIGN_OR_RETURN(c.projection_dim, TensorDim(f, names.Name(Role::kMerger2), 1));
    ASSIGN_OR_RETURN(c.rope_theta, f.GetF32Or(k + "rope.freq_base", c.rope_theta));
  } else {
    k = "clip.vision.";
    auto proj = f.GetString("clip.projector_type");
    if (!proj.ok()) {
      return absl::InvalidArgumentError(
          "vision model: no clip.projector_type (is this a llama.cpp mmproj file?)");
    }
    if (*proj != "qwen3vl_merger") {
      return absl::InvalidArgumentError(absl::StrCat("vision model: clip.projector_type \"", *proj,
                                                     "\" is not supported (expected "
                                                     "qwen3vl_merger)"));
    }
    ASSIGN_OR_RETURN(c.patch_size, PositiveInt(f, k + "patch_size"));
    ASSIGN_OR_RETURN(c.n_embd, PositiveInt(f, k + "embedding_length"));
    ASSIGN_OR_RETURN(c.n_head, PositiveInt(f, k + "attention.head_count"));
    ASSIGN_OR_RETURN(c.n_layer, PositiveInt(f, k + "block_count"));
    ASSIGN_OR_RETURN(c.n_ff, PositiveInt(f, k + "feed_forward_length"));
    ASSIGN_OR_RETURN(c.projection_dim, PositiveInt(f, k + "projection_dim"));
    ASSIGN_OR_RETURN(uint32_t image_size, f.GetU32Or(k + "image_size", 0));
    c.image_size = static_cast<int>(image_size);
  }
  ASSIGN_OR_RETURN(uint32_t merge, f.GetU32Or(k + "spatial_merge_size", 2));
  if (merge != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision model: ", k, "spatial_merge_size = ", merge, " (only 2 is supported)"));
  }
  c.spatial_merge_size = 2;
  ASSIGN_OR_RETURN(c.eps, f.GetF32Or(k + "attention.layer_norm_epsilon", 1e-6f));
  for (const char* what : {"image_mean", "image_std"}) {
    const std::string key = k + what;
    if (!f.Has(key)) continue;
    ASSIGN_OR_RETURN(std::vector<float> v, f.GetF32Array(key));
    if (v.size() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("vision model: ", key, " has ", v.size(), " values, expected 3"));
    }
    auto& dst = std::string(what) == "image_mean" ? c.image_mean : c.image_std;
    std::copy(v.begin(), v.end(), dst.begin());
  }
  for (float s : c.image_std) {
    if (!(s > 0)) return absl::InvalidArgumentError("vision model: clip.vision.image_std <= 0");
  }
  if (c.n_embd % c.n_head != 0 || c.head_dim() % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vision model: embedding_length ", c.n_embd, " / head_count ", c.n_head,
                     " does not give a head size divisible by 4 (2-D rotary)"));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Row ops of the encoder.

// out[r] = (x[r] - mean) / sqrt(var + eps) * w + b over `width` values. out may alias x.
void LayerNorm(ops::ComputeContext& ctx, const float* x, const float* w, const float* b,
               int64_t n_rows, int64_t width, float eps, float* out) {
  ctx.pool().ParallelFor(n_rows, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * width;
      float* o = out + r * width;
      double sum = 0;
      for (int64_t i = 0; i < width; ++i) sum += xr[i];
      const float mean = static_cast<float>(sum / width);
      double var = 0;
      for (int64_t i = 0; i < width; ++i) {
        const double d = xr[i] - mean;
        var += d * d;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(var / width + eps));
      for (int64_t i = 0; i < width; ++i) o[i] = (xr[i] - mean) * inv * w[i] + b[i];
    }
  });
}

// y[t][o] (row stride ldy) = sum_i x[t][i] W[o][i] + b[o] (b may be null), for all n tokens.
//
// The kernels' float tiles (quant::KernelTable::dot_tile): each output is one fused multiply-add
// chain over i, whatever the matrix's shape, so a tower whose q, k and v are one matrix (llama.cpp's
// mmproj) and one whose are three (Ollama's bundled tower) give the same bits, as do all CPUs.
// The output rows are cut into chunks handed to the pool's threads. Float weights (F32, F16,
// BF16) are read in place; other types (Q8_0) are converted to F32 per chunk in the thread's
// scratch, which keeps the resident tower at its file size.
void Linear(ops::ComputeContext& ctx, const ops::Weight& w, const float* b, const float* x,
            int64_t n, float* y, int64_t ldy) {
  constexpr int64_t kChunk = 64;
  const int64_t n_chunks = (w.n_out + kChunk - 1) / kChunk;
  const quant::KernelTable& k = quant::Kernels();
  const bool in_place =
      w.type == GgmlType::kF32 || w.type == GgmlType::kF16 || w.type == GgmlType::kBF16;
  const size_t x_stride = static_cast<size_t>(w.n_in) * sizeof(float);
  ctx.pool().ParallelFor(n_chunks, 1, [&](int64_t c0, int64_t c1, int thread) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * kChunk, rows = std::min(kChunk, w.n_out - r0);
      if (in_place) {
        k.dot_tile[static_cast<int>(w.type)](w.row(r0), w.row_bytes, rows, x, x_stride, n, y + r0,
                                             static_cast<size_t>(ldy), w.n_in);
      } else {
        float* buf = ctx.ThreadScratch(thread, 0, static_cast<size_t>(rows * w.n_in));
        const auto dequant = k.dequantize[static_cast<int>(w.type)];
        for (int64_t r = 0; r < rows; ++r) dequant(w.row(r0 + r), buf + r * w.n_in, w.n_in);
        k.dot_tile[static_cast<int>(GgmlType::kF32)](buf, x_stride, rows, x, x_stride, n, y + r0,
                                                     static_cast<size_t>(ldy), w.n_in);
      }
      if (b != nullptr) {
        for (int64_t t = 0; t < n; ++t) {
          float* yt = y + t * ldy + r0;
          for (int64_t r = 0; r < rows; ++r) yt[r] += b[r0 + r];
        }
      }
    }
  });
}

// gelu_pytorch_tanh, the vision blocks' activation (HF's hidden_act).
inline float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + 0.044715f * x * x)));
}

// nn.GELU() (exact erf form), the merger's activation in the model. llama.cpp uses the tanh
// approximation there (ffn_gelu); the two differ by < 1e-3 per value.
inline float GeluErf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

// ggml's CPU GELU: the tanh form looked up in an F16 table (EncoderOptions::llama_cpp_numerics).
inline float GeluF16Table(float x) {
  if (x <= -10.0f) return 0.0f;
  if (x >= 10.0f) return x;
  return Fp32FromFp16Round(GeluTanh(Fp32FromFp16Round(x)));
}

// y[r] = act(y[r]) with act = GELU (tanh, erf or tanh via F16 table).
enum class Act { kGeluTanh, kGeluErf, kGeluF16Table };
void Activate(ops::ComputeContext& ctx, float* y, int64_t n_rows, int64_t width, Act act) {
  ctx.pool().ParallelFor(n_rows, 4, [&](int64_t r0, int64_t r1, int thread) {
    float* z = ctx.ThreadScratch(thread, 2, static_cast<size_t>(width));
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * width;
      switch (act) {
        case Act::kGeluTanh:
          // 0.5 (1 + tanh(u)) = sigmoid(2u): x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), with
          // the SIMD sigmoid.
          for (int64_t i = 0; i < width; ++i) {
            const float x = yr[i];
            z[i] = 1.5957691216057308f * (x + 0.044715f * x * x * x);
          }
          ops::Vec().sigmoid_mul(z, yr, width);
          break;
        case Act::kGeluErf:
          for (int64_t i = 0; i < width; ++i) yr[i] = GeluErf(yr[i]);
          break;
        case Act::kGeluF16Table:
          for (int64_t i = 0; i < width; ++i) yr[i] = GeluF16Table(yr[i]);
          break;
      }
    }
  });
}

// x += y.
void AddResidual(ops::ComputeContext& ctx, float* x, const float* y, int64_t n_rows,
                 int64_t width) {
  ctx.pool().ParallelFor(n_rows, 32, [&](int64_t r0, int64_t r1, int) {
    for (int64_t i = r0 * width; i < r1 * width; ++i) x[i] += y[i];
  });
}

// 2-D rotary on (row, column) of each patch: in a head of size d, pair (k, k + d/2) (rotate
// half) turns by row * theta^(-2k / (d/2)) for k < d/4 and by col * theta^(-2(k - d/4) / (d/2))
// for d/4 <= k < d/2: HF's VisionRotaryEmbedding(head_dim / 2) over (h, w) position ids.
// x: [n_tokens, n_head, head_dim] with rows of stride `stride`.
void Rope2D(ops::ComputeContext& ctx, float* x, int64_t n_tokens, int64_t stride, int n_head,
            int head_dim, const std::vector<int>& row, const std::vector<int>& col, float theta) {
  const int half = head_dim / 2, quarter = head_dim / 4;
  std::vector<float> inv(half);
  for (int k = 0; k < half; ++k) {
    const int j = k < quarter ? k : k - quarter;
    inv[k] = static_cast<float>(std::pow(static_cast<double>(theta), -2.0 * j / half));
  }
  ctx.pool().ParallelFor(n_tokens, 16, [&](int64_t t0, int64_t t1, int) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = t0; t < t1; ++t) {
      for (int k = 0; k < half; ++k) {
        const double a = static_cast<double>(k < quarter ? row[t] : col[t]) * inv[k];
        cs[k] = static_cast<float>(std::cos(a));
        sn[k] = static_cast<float>(std::sin(a));
      }
      for (int h = 0; h < n_head; ++h) {
        float* v = x + t * stride + static_cast<int64_t>(h) * head_dim;
        for (int k = 0; k < half; ++k) {
          const float x0 = v[k], x1 = v[k + half];
          v[k] = x0 * cs[k] - x1 * sn[k];
          v[k + half] = x0 * sn[k] + x1 * cs[k];
        }
      }
    }
  });
}

// Bidirectional attention over all n tokens. q, k, v: [n, n_head * head_dim] with row stride
// ld (columns of the fused qkv buffer); out: [n, n_head * head_dim].
// Work unit = (head, block of query rows): scores = Q Kᵀ by the kernels' float tiles (keys as
// the rows), scaled, softmax, then P V by the float tiles again (the head's V transposed as the
// rows) straight into the head's columns of `out`. Every product is the kernels' chain, so a
// query's output is the same bits on every CPU and whatever the work split.
void Attention(ops::ComputeContext& ctx, const float* q, const float* k, const float* v, int64_t ld,
               int64_t n, int n_head, int head_dim, float* out) {
  const int64_t width = static_cast<int64_t>(n_head) * head_dim;
  constexpr int64_t kRowBlock = 64;
  const int64_t blocks_per_head = (n + kRowBlock - 1) / kRowBlock;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const auto tile = quant::Kernels().dot_tile[static_cast<int>(GgmlType::kF32)];
  const size_t row_floats = static_cast<size_t>(ld) * sizeof(float);
  ctx.pool().ParallelFor(n_head * blocks_per_head, 1, [&](int64_t u0, int64_t u1, int thread) {
    float* s = ctx.ThreadScratch(thread, 1, static_cast<size_t>(kRowBlock * n));
    float* vt = ctx.ThreadScratch(thread, 2, static_cast<size_t>(head_dim * n));  // [d][n]
    float inv_sum[kRowBlock];
    int64_t vt_head = -1;
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t h = u / blocks_per_head;
      const int64_t r0 = (u % blocks_per_head) * kRowBlock;
      const int64_t rows = std::min(kRowBlock, n - r0);
      const float* qh = q + r0 * ld + h * head_dim;
      const float* kh = k + h * head_dim;
      const float* vh = v + h * head_dim;
      // s[r][j] = q_r · k_j, then times 1 / sqrt(d).
      tile(kh, row_floats, n, qh, row_floats, rows, s, static_cast<size_t>(n), head_dim);
      const auto& vec = ops::Vec();
      for (int64_t r = 0; r < rows; ++r) {
        float* sr = s + r * n;
        for (int64_t j = 0; j < n; ++j) sr[j] *= scale;
        float mx = sr[0];
        for (int64_t j = 1; j < n; ++j) mx = std::max(mx, sr[j]);
        const float sum = vec.exp_sub_sum(sr, mx, n);
        // The 1/sum is applied to the head's output row instead of the n scores.
        inv_sum[r] = 1.0f / sum;
      }
      if (vt_head != h) {
        for (int64_t j = 0; j < n; ++j) {
          for (int d = 0; d < head_dim; ++d) vt[d * n + j] = vh[j * ld + d];
        }
        vt_head = h;
      }
      float* o = out + r0 * width + h * head_dim;
      tile(vt, static_cast<size_t>(n) * sizeof(float), head_dim, s, static_cast<size_t>(n) * sizeof(float),
           rows, o, static_cast<size_t>(width), n);
      for (int64_t r = 0; r < rows; ++r) {
        for (int d = 0; d < head_dim; ++d) o[r * width + d] *= inv_sum[r];
      }
    }
  });
}

// Bilinear interpolation of the side x side position table to rows x cols with aligned corners
// (HF's fast_pos_embed_interpolate: linspace(0, side - 1, n) source coordinates), returned in
// raster order [rows * cols][n_embd].
std::vector<float> InterpolatePositions(const std::vector<float>& table, int side, int rows,
                                        int cols, int n_embd) {
  std::vector<float> out(static_cast<size_t>(rows) * cols * n_embd);
  if (rows == side && cols == side) {
    std::copy(table.begin(), table.end(), out.begin());
    return out;
  }
  auto coord = [side](int i, int n) {
    // float32 as HF's torch.linspace and ggml compute it.
    const float c =
        n > 1 ? static_cast<float>(i) * static_cast<float>(side - 1) / static_cast<float>(n - 1)
              : 0.0f;
    const int c0 = std::clamp(static_cast<int>(std::floor(c)), 0, side - 1);
    const int c1 = std::min(c0 + 1, side - 1);
    return std::make_tuple(c0, c1, std::clamp(c - static_cast<float>(c0), 0.0f, 1.0f));
  };
  for (int y = 0; y < rows; ++y) {
    const auto [y0, y1, dy] = coord(y, rows);
    for (int x = 0; x < cols; ++x) {
      const auto [x0, x1, dx] = coord(x, cols);
      const float* a = &table[(static_cast<size_t>(y0) * side + x0) * n_embd];
      const float* b = &table[(static_cast<size_t>(y0) * side + x1) * n_embd];
      const float* c = &table[(static_cast<size_t>(y1) * side + x0) * n_embd];
      const float* d = &table[(static_cast<size_t>(y1) * side + x1) * n_embd];
      const float wa = (1 - dx) * (1 - dy), wb = dx * (1 - dy), wc = (1 - dx) * dy, wd = dx * dy;
      float* o = &out[(static_cast<size_t>(y) * cols + x) * n_embd];
      for (int i = 0; i < n_embd; ++i) o[i] = a[i] * wa + b[i] * wb + c[i] * wc + d[i] * wd;
    }
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

VisionEncoder::~VisionEncoder() = default;

absl::StatusOr<std::unique_ptr<VisionEncoder>> VisionEncoder::Load(
    std::shared_ptr<const gguf::GgufFile> file, const EncoderOptions& options) {
  if (file == nullptr) return absl::InvalidArgumentError("vision model: no file");
  std::unique_ptr<VisionEncoder> enc(new VisionEncoder());
  enc->file_ = file;
  enc->options_ = options;
  const TowerLayout names = TowerLayout::Detect(*file);
  ASSIGN_OR_RETURN(enc->config_, ReadConfig(*file, names));
  VisionConfig& c = enc->config_;
  const Loader ld(*file);
  auto w = std::make_unique<VisionWeights>();
  const int64_t C = c.n_embd, P = c.patch_size, K = 3 * P * P;

  // Patch kernel: both temporal slices, side by side (see VisionWeights::patch_kernel).
  std::vector<float> slices[2];  // [C][3][P][P] each
  if (names.layout == Layout::kClip) {
    for (int t = 0; t < 2; ++t) {
      const std::string name = t == 0 ? "v.patch_embd.weight" : "v.patch_embd.weight.1";
      ASSIGN_OR_RETURN(slices[t], ld.Floats(name, K * C));
    }
  } else {
    // [C * 3][2][P][P] (ne [P, P, 2, 3 C]): slice t of (out, in) is at ((out * 3 + in) * 2 + t).
    ASSIGN_OR_RETURN(std::vector<float> both, ld.Floats("v.patch_embed.weight", 2 * K * C));
    for (int t = 0; t < 2; ++t) {
      slices[t].resize(K * C);
      for (int64_t oc = 0; oc < 3 * C; ++oc) {
        std::copy_n(&both[(oc * 2 + t) * P * P], P * P, &slices[t][oc * P * P]);
      }
    }
  }
  for (int t = 0; t < 2; ++t) {
    if (options.llama_cpp_numerics) {
      for (float& e : slices[t]) e = Fp32FromFp16Round(e);
    }
  }
  w->patch_kernel.resize(static_cast<size_t>(2 * K * C));
  for (int64_t o = 0; o < C; ++o) {
    for (int t = 0; t < 2; ++t) {
      std::copy_n(&slices[t][o * K], K, &w->patch_kernel[(2 * o + t) * K]);
    }
  }
  w->patch.data = reinterpret_cast<const uint8_t*>(w->patch_kernel.data());
  w->patch.type = GgmlType::kF32;
  w->patch.n_in = 2 * K;
  w->patch.n_out = C;
  w->patch.row_bytes = static_cast<size_t>(2 * K) * sizeof(float);
  w->patch.name = "v.patch_embd.weight|.1";
  ASSIGN_OR_RETURN(w->patch_b, ld.Floats(names.Name(Role::kPatchBias), C));

  ASSIGN_OR_RETURN(const gguf::TensorInfo* pos, ld.Tensor(names.Name(Role::kPosEmbd)));
  const int64_t n_pos = pos->n_elements / C;
  const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_pos))));
  if (pos->ne[0] != C || int64_t{side} * side != n_pos) {
    return absl::InvalidArgumentError(absl::StrCat("vision model: ", names.Name(Role::kPosEmbd),
                                                   " has shape ", pos->ShapeString(),
                                                   ", expected [", C, ", side^2]"));
  }
  c.n_pos_side = side;
  ASSIGN_OR_RETURN(w->pos, ld.Floats(names.Name(Role::kPosEmbd), n_pos * C));

  w->layers.resize(c.n_layer);
  for (int il = 0; il < c.n_layer; ++il) {
    VisionLayer& l = w->layers[il];
    ASSIGN_OR_RETURN(l.ln1_w, ld.Floats(names.Name(Role::kLn1, "weight", il), C));
    ASSIGN_OR_RETURN(l.ln1_b, ld.Floats(names.Name(Role::kLn1, "bias", il), C));
    ASSIGN_OR_RETURN(l.ln2_w, ld.Floats(names.Name(Role::kLn2, "weight", il), C));
    ASSIGN_OR_RETURN(l.ln2_b, ld.Floats(names.Name(Role::kLn2, "bias", il), C));
    if (names.layout == Layout::kClip) {
      ASSIGN_OR_RETURN(ops::Weight qkv,
                       ld.Matrix(names.Name(Role::kAttnQkv, "weight", il), C, 3 * C));
      l.qkv = {qkv};
      ASSIGN_OR_RETURN(l.qkv_b, ld.Floats(names.Name(Role::kAttnQkv, "bias", il), 3 * C));
    } else {
      for (Role r : {Role::kAttnQ, Role::kAttnK, Role::kAttnV}) {
        ASSIGN_OR_RETURN(ops::Weight part, ld.Matrix(names.Name(r, "weight", il), C, C));
        l.qkv.push_back(part);
        ASSIGN_OR_RETURN(std::vector<float> b, ld.Floats(names.Name(r, "bias", il), C));
        l.qkv_b.insert(l.qkv_b.end(), b.begin(), b.end());
      }
    }
    ASSIGN_OR_RETURN(l.attn_out, ld.Matrix(names.Name(Role::kAttnOut, "weight", il), C, C));
    ASSIGN_OR_RETURN(l.attn_out_b, ld.Floats(names.Name(Role::kAttnOut, "bias", il), C));
    ASSIGN_OR_RETURN(l.ffn_up, ld.Matrix(names.Name(Role::kFfnUp, "weight", il), C, c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_up_b, ld.Floats(names.Name(Role::kFfnUp, "bias", il), c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_down, ld.Matrix(names.Name(Role::kFfnDown, "weight", il), c.n_ff, C));
    ASSIGN_OR_RETURN(l.ffn_down_b, ld.Floats(names.Name(Role::kFfnDown, "bias", il), C));
  }
  ASSIGN_OR_RETURN(w->post_ln_w, ld.Floats(names.Name(Role::kPostLn, "weight"), C));
  ASSIGN_OR_RETURN(w->post_ln_b, ld.Floats(names.Name(Role::kPostLn, "bias"), C));
  const int64_t M = 4 * C;  // merged width
  ASSIGN_OR_RETURN(w->mm0, ld.Matrix(names.Name(Role::kMerger0, "weight"), M, M));
  ASSIGN_OR_RETURN(w->mm0_b, ld.Floats(names.Name(Role::kMerger0, "bias"), M));
  ASSIGN_OR_RETURN(w->mm2, ld.Matrix(names.Name(Role::kMerger2, "weight"), M, c.projection_dim));
  ASSIGN_OR_RETURN(w->mm2_b, ld.Floats(names.Name(Role::kMerger2, "bias"), c.projection_dim));
  enc->w_ = std::move(w);
  return enc;
}

size_t VisionEncoder::owned_bytes() const {
  size_t n = w_->patch_kernel.size() + w_->patch_b.size() + w_->pos.size() + w_->post_ln_w.size() +
             w_->post_ln_b.size() + w_->mm0_b.size() + w_->mm2_b.size();
  for (const VisionLayer& l : w_->layers) {
    n += l.ln1_w.size() * 4 + l.qkv_b.size() + l.attn_out_b.size() + l.ffn_up_b.size() +
         l.ffn_down_b.size();
  }
  return n * sizeof(float);
}

absl::StatusOr<ImageEmbedding> VisionEncoder::EncodePixels(absl::Span<const float> pixels,
                                                           int height, int width,
                                                           ops::ComputeContext& ctx) const {
  return EncodeFramePair(pixels, pixels, height, width, ctx);
}

absl::StatusOr<ImageEmbedding> VisionEncoder::EncodeFramePair(absl::Span<const float> first,
                                                              absl::Span<const float> second,
                                                              int height, int width,
                                                              ops::ComputeContext& ctx) const {
  const VisionConfig& c = config_;
  const int P = c.patch_size, a = c.align();
  if (height <= 0 || width <= 0 || height % a != 0 || width % a != 0) {
    return absl::InvalidArgumentError(absl::StrCat("vision: pixel grid ", width, "x", height,
                                                   " is not a positive multiple of ", a));
  }
  for (absl::Span<const float> frame : {first, second}) {
    if (frame.size() != static_cast<size_t>(3) * height * width) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vision: ", frame.size(), " pixel values for a 3x", height, "x", width, " grid"));
    }
  }
  const VisionWeights& w = *w_;
  ImageGrid grid;
  grid.merge = c.spatial_merge_size;
  grid.patch_rows = height / P;
  grid.patch_cols = width / P;
  const int64_t n = grid.n_patches();
  const int64_t C = c.n_embd, K = 3 * int64_t{P} * P;

  // Token order: 2x2 merge blocks in raster order, raster order inside each block, so that the
  // four patches of a merged token are consecutive rows.
  std::vector<int> prow(n), pcol(n);
  {
    int64_t t = 0;
    for (int by = 0; by < grid.rows(); ++by) {
      for (int bx = 0; bx < grid.cols(); ++bx) {
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx, ++t) {
            prow[t] = 2 * by + dy;
            pcol[t] = 2 * bx + dx;
          }
        }
      }
    }
  }

  // Patch embedding: im2col [n, 2 * 3 * P * P] (index t * 3 P^2 + c * P^2 + ky * P + kx, t the
  // frame of the pair) times both temporal kernels at once.
  std::vector<float> x(n * C);  // [n, C] residual stream
  {
    std::vector<float> cols(n * 2 * K);
    const bool round_f16 = options_.llama_cpp_numerics;
    ctx.pool().ParallelFor(n, 16, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t) {
        for (int f = 0; f < 2; ++f) {
          const float* pixels = f == 0 ? first.data() : second.data();
          float* dst = &cols[(2 * t + f) * K];
          for (int ch = 0; ch < 3; ++ch) {
            for (int ky = 0; ky < P; ++ky) {
              const float* src = pixels +
                                 (static_cast<size_t>(ch) * height +
                                  static_cast<size_t>(prow[t]) * P + ky) *
                                     width +
                                 static_cast<size_t>(pcol[t]) * P;
              if (round_f16) {
                for (int kx = 0; kx < P; ++kx) {
                  dst[(ch * P + ky) * P + kx] = Fp32FromFp16Round(src[kx]);
                }
              } else {
                std::memcpy(dst + (ch * P + ky) * P, src, P * sizeof(float));
              }
            }
          }
        }
      }
    });
    Linear(ctx, w.patch, w.patch_b.data(), cols.data(), n, x.data(), C);
  }
  ctx.Observe("patch_bias", x.data(), n, C);

  {
    const std::vector<float> pos =
        InterpolatePositions(w.pos, c.n_pos_side, grid.patch_rows, grid.patch_cols, C);
    for (int64_t t = 0; t < n; ++t) {
      const float* p = &pos[(static_cast<size_t>(prow[t]) * grid.patch_cols + pcol[t]) * C];
      for (int64_t i = 0; i < C; ++i) x[t * C + i] += p[i];
    }
  }
  ctx.Observe("inp_pos_emb", x.data(), n, C);

  // The model: gelu_pytorch_tanh in the blocks, exact (erf) GELU in the merger.
  const bool llama = options_.llama_cpp_numerics;
  const Act block_act = llama ? Act::kGeluF16Table : Act::kGeluTanh;
  const Act merger_act = llama ? Act::kGeluF16Table : Act::kGeluErf;
  const int64_t C3 = 3 * C;
  std::vector<float> h(n * C), qkv(n * C3), att(n * C), ff(n * c.n_ff);
  for (int il = 0; il < c.n_layer; ++il) {
    // A large image takes seconds: a request that ends meanwhile (or a worker shutting down)
    // should not keep the cores busy until the last layer.
    if (ctx.cancelled()) return absl::CancelledError("the image encode was cancelled");
    const VisionLayer& l = w.layers[il];
    LayerNorm(ctx, x.data(), l.ln1_w.data(), l.ln1_b.data(), n, C, c.eps, h.data());
    int64_t col = 0;  // [n, q | k | v]
    for (const ops::Weight& part : l.qkv) {
      Linear(ctx, part, l.qkv_b.data() + col, h.data(), n, qkv.data() + col, C3);
      col += part.n_out;
    }
    float* q = qkv.data();
    float* k = qkv.data() + C;
    const float* v = qkv.data() + 2 * C;
    Rope2D(ctx, q, n, C3, c.n_head, c.head_dim(), prow, pcol, c.rope_theta);
    Rope2D(ctx, k, n, C3, c.n_head, c.head_dim(), prow, pcol, c.rope_theta);
    Attention(ctx, q, k, v, C3, n, c.n_head, c.head_dim(), att.data());
    Linear(ctx, l.attn_out, l.attn_out_b.data(), att.data(), n, h.data(), C);
    ctx.Observe(absl::StrCat("attn_out-", il), h.data(), n, C);
    AddResidual(ctx, x.data(), h.data(), n, C);
    ctx.Observe(absl::StrCat("ffn_inp-", il), x.data(), n, C);

    LayerNorm(ctx, x.data(), l.ln2_w.data(), l.ln2_b.data(), n, C, c.eps, h.data());
    Linear(ctx, l.ffn_up, l.ffn_up_b.data(), h.data(), n, ff.data(), c.n_ff);
    Activate(ctx, ff.data(), n, c.n_ff, block_act);
    Linear(ctx, l.ffn_down, l.ffn_down_b.data(), ff.data(), n, h.data(), C);
    AddResidual(ctx, x.data(), h.data(), n, C);
    ctx.Observe(absl::StrCat("layer_out-", il), x.data(), n, C);
    ctx.NoteLayerDone();
  }

  LayerNorm(ctx, x.data(), w.post_ln_w.data(), w.post_ln_b.data(), n, C, c.eps, x.data());
  ctx.Observe(absl::StrCat("norm_b-", c.n_layer), x.data(), n, C);

  // Merger: the four patches of each 2x2 block are consecutive rows, so x viewed as
  // [n / 4, 4 C] is the concatenation.
  const int64_t n_tok = grid.n_tokens(), M = 4 * C;
  std::vector<float> m(n_tok * M);
  Linear(ctx, w.mm0, w.mm0_b.data(), x.data(), n_tok, m.data(), M);
  Activate(ctx, m.data(), n_tok, M, merger_act);
  ImageEmbedding out;
  out.grid = grid;
  out.data.resize(n_tok * c.projection_dim);
  Linear(ctx, w.mm2, w.mm2_b.data(), m.data(), n_tok, out.data.data(), c.projection_dim);
  ctx.Observe("embd", out.data.data(), n_tok, c.projection_dim);
  return out;
}

absl::StatusOr<ImageEmbedding> VisionEncoder::Encode(const RgbImage& image,
                                                     const PreprocessOptions& options,
                                                     ops::ComputeContext& ctx) const {
  ImageGrid grid;
  ASSIGN_OR_RETURN(std::vector<float> pixels, Preprocess(image, config_, options, &grid));
  return EncodePixels(pixels, grid.patch_rows * config_.patch_size,
                      grid.patch_cols * config_.patch_size, ctx);
}

}  // namespace qwen::vision

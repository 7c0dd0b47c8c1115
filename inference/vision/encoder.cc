// The Qwen3-VL vision tower (projector "qwen3vl_merger"): the math of the model's
// Qwen3VLVisionModel, with llama.cpp's tensor names.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/common/status_macros.h"
#include "inference/ops/matmul.h"
#include "inference/quant/kernels.h"
#include "inference/quant/types.h"
#include "inference/vision/vision.h"

namespace qwen::vision {

using quant::GgmlType;

struct VisionLayer {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [n_embd]
  ops::Weight q, k, v;                            // [n_embd -> n_embd] each
  std::vector<float> q_b, k_b, v_b;               // [n_embd]
  ops::Weight attn_out;
  std::vector<float> attn_out_b;
  ops::Weight ffn_up;  // [n_embd -> n_ff]
  std::vector<float> ffn_up_b;
  ops::Weight ffn_down;  // [n_ff -> n_embd]
  std::vector<float> ffn_down_b;
};

struct VisionWeights {
  // Both temporal slices of the Conv3D patch kernel summed: a still image feeds the same pixels
  // to both, so conv(W0, x) + conv(W1, x) = conv(W0 + W1, x). [n_embd][3 * patch * patch],
  // input index c * patch^2 + ky * patch + kx.
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

enum class Layout { kLlamaCpp };

struct TowerLayout {
  Layout layout = Layout::kLlamaCpp;

  std::string PatchKernel(int t) const {
    return t == 0 ? "v.patch_embd.weight" : "v.patch_embd.weight.1";
  }
  std::string PatchBias() const { return "v.patch_embd.bias"; }
  std::string PosEmbd() const { return "v.position_embd.weight"; }
  std::string Blk(int il, absl::string_view what) const {
    return absl::StrCat("v.blk.", il, ".", what);
  }
  std::string PostLn(absl::string_view what) const { return absl::StrCat("v.post_ln.", what); }
  std::string Merger(int i, absl::string_view what) const {
    return absl::StrCat("mm.", i, ".", what);
  }
};

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

absl::StatusOr<VisionConfig> ReadConfig(const gguf::GgufFile& f) {
  VisionConfig c;
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
  ASSIGN_OR_RETURN(c.patch_size, PositiveInt(f, "clip.vision.patch_size"));
  ASSIGN_OR_RETURN(c.n_embd, PositiveInt(f, "clip.vision.embedding_length"));
  ASSIGN_OR_RETURN(c.n_head, PositiveInt(f, "clip.vision.attention.head_count"));
  ASSIGN_OR_RETURN(c.n_layer, PositiveInt(f, "clip.vision.block_count"));
  ASSIGN_OR_RETURN(c.n_ff, PositiveInt(f, "clip.vision.feed_forward_length"));
  ASSIGN_OR_RETURN(c.projection_dim, PositiveInt(f, "clip.vision.projection_dim"));
  ASSIGN_OR_RETURN(uint32_t image_size, f.GetU32Or("clip.vision.image_size", 0));
  c.image_size = static_cast<int>(image_size);
  ASSIGN_OR_RETURN(uint32_t merge, f.GetU32Or("clip.vision.spatial_merge_size", 2));
  if (merge != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision model: clip.vision.spatial_merge_size = ", merge, " (only 2 is supported)"));
  }
  c.spatial_merge_size = 2;
  ASSIGN_OR_RETURN(c.eps, f.GetF32Or("clip.vision.attention.layer_norm_epsilon", 1e-6f));
  for (const char* key : {"clip.vision.image_mean", "clip.vision.image_std"}) {
    if (!f.Has(key)) continue;
    ASSIGN_OR_RETURN(std::vector<float> v, f.GetF32Array(key));
    if (v.size() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("vision model: ", key, " has ", v.size(), " values, expected 3"));
    }
    auto& dst = std::string(key) == "clip.vision.image_mean" ? c.image_mean : c.image_std;
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

// gelu_pytorch_tanh, the vision blocks' activation (HF's hidden_act).
inline float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + 0.044715f * x * x)));
}

// nn.GELU() (exact erf form), the merger's activation in the model. llama.cpp uses the tanh
// approximation there (ffn_gelu); the two differ by < 1e-3 per value.
inline float GeluErf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

// y[r] = act(y[r] + b) with act = GELU (tanh or erf) or identity.
enum class Act { kNone, kGeluTanh, kGeluErf };
void BiasAct(ops::ComputeContext& ctx, float* y, const float* b, int64_t n_rows, int64_t width,
             Act act) {
  ctx.pool().ParallelFor(n_rows, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * width;
      switch (act) {
        case Act::kNone:
          for (int64_t i = 0; i < width; ++i) yr[i] += b[i];
          break;
        case Act::kGeluTanh:
          for (int64_t i = 0; i < width; ++i) yr[i] = GeluTanh(yr[i] + b[i]);
          break;
        case Act::kGeluErf:
          for (int64_t i = 0; i < width; ++i) yr[i] = GeluErf(yr[i] + b[i]);
          break;
      }
    }
  });
}

// x[r] += y[r] + b.
void AddResidual(ops::ComputeContext& ctx, float* x, const float* y, const float* b, int64_t n_rows,
                 int64_t width) {
  ctx.pool().ParallelFor(n_rows, 32, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < width; ++i) x[r * width + i] += y[r * width + i] + b[i];
    }
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

// Bidirectional attention over all n tokens. q, k, v, out: [n, n_head * head_dim].
// Work unit = (head, block of query rows): scores = Q Kᵀ / sqrt(d) by sgemm, softmax, then P V
// by sgemm straight into the head's columns of `out`.
void Attention(ops::ComputeContext& ctx, const float* q, const float* k, const float* v, int64_t n,
               int n_head, int head_dim, float* out) {
  const int64_t width = static_cast<int64_t>(n_head) * head_dim;
  constexpr int64_t kRowBlock = 64;
  const int64_t blocks_per_head = (n + kRowBlock - 1) / kRowBlock;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  ctx.pool().ParallelFor(n_head * blocks_per_head, 1, [&](int64_t u0, int64_t u1, int thread) {
    float* s = ctx.ThreadScratch(thread, 1, static_cast<size_t>(kRowBlock * n));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t h = u / blocks_per_head;
      const int64_t r0 = (u % blocks_per_head) * kRowBlock;
      const int64_t rows = std::min(kRowBlock, n - r0);
      const float* qh = q + r0 * width + h * head_dim;
      const float* kh = k + h * head_dim;
      const float* vh = v + h * head_dim;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(n), head_dim, scale, qh, static_cast<int>(width), kh,
                  static_cast<int>(width), 0.0f, s, static_cast<int>(n));
      for (int64_t r = 0; r < rows; ++r) {
        float* sr = s + r * n;
        float mx = sr[0];
        for (int64_t j = 1; j < n; ++j) mx = std::max(mx, sr[j]);
        float sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          sr[j] = std::exp(sr[j] - mx);
          sum += sr[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) sr[j] *= inv;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), head_dim,
                  static_cast<int>(n), 1.0f, s, static_cast<int>(n), vh, static_cast<int>(width),
                  0.0f, out + r0 * width + h * head_dim, static_cast<int>(width));
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
    std::shared_ptr<const gguf::GgufFile> file) {
  if (file == nullptr) return absl::InvalidArgumentError("vision model: no file");
  std::unique_ptr<VisionEncoder> enc(new VisionEncoder());
  enc->file_ = file;
  ASSIGN_OR_RETURN(enc->config_, ReadConfig(*file));
  VisionConfig& c = enc->config_;
  const TowerLayout names;
  const Loader ld(*file);
  auto w = std::make_unique<VisionWeights>();
  const int64_t C = c.n_embd, P = c.patch_size, K = 3 * P * P;

  // Patch kernels: ne [P, P, 3, C] each.
  for (int t = 0; t < 2; ++t) {
    ASSIGN_OR_RETURN(std::vector<float> k, ld.Floats(names.PatchKernel(t), K * C));
    if (t == 0) {
      w->patch_kernel = std::move(k);
    } else {
      for (int64_t i = 0; i < K * C; ++i) w->patch_kernel[i] += k[i];
    }
  }
  w->patch.data = reinterpret_cast<const uint8_t*>(w->patch_kernel.data());
  w->patch.type = GgmlType::kF32;
  w->patch.n_in = K;
  w->patch.n_out = C;
  w->patch.row_bytes = static_cast<size_t>(K) * sizeof(float);
  w->patch.name = "v.patch_embd.weight(+.1)";
  ASSIGN_OR_RETURN(w->patch_b, ld.Floats(names.PatchBias(), C));

  ASSIGN_OR_RETURN(const gguf::TensorInfo* pos, ld.Tensor(names.PosEmbd()));
  const int64_t n_pos = pos->n_elements / C;
  const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_pos))));
  if (pos->ne[0] != C || int64_t{side} * side != n_pos) {
    return absl::InvalidArgumentError(absl::StrCat("vision model: ", names.PosEmbd(), " has shape ",
                                                   pos->ShapeString(), ", expected [", C,
                                                   ", side^2]"));
  }
  c.n_pos_side = side;
  ASSIGN_OR_RETURN(w->pos, ld.Floats(names.PosEmbd(), n_pos * C));

  w->layers.resize(c.n_layer);
  for (int il = 0; il < c.n_layer; ++il) {
    VisionLayer& l = w->layers[il];
    ASSIGN_OR_RETURN(l.ln1_w, ld.Floats(names.Blk(il, "ln1.weight"), C));
    ASSIGN_OR_RETURN(l.ln1_b, ld.Floats(names.Blk(il, "ln1.bias"), C));
    ASSIGN_OR_RETURN(l.ln2_w, ld.Floats(names.Blk(il, "ln2.weight"), C));
    ASSIGN_OR_RETURN(l.ln2_b, ld.Floats(names.Blk(il, "ln2.bias"), C));
    // Fused [q | k | v] rows, viewed as three matrices.
    const std::string qkv = names.Blk(il, "attn_qkv.weight");
    ASSIGN_OR_RETURN(l.q, ld.Matrix(qkv, C, C, 3 * C, 0));
    ASSIGN_OR_RETURN(l.k, ld.Matrix(qkv, C, C, 3 * C, C));
    ASSIGN_OR_RETURN(l.v, ld.Matrix(qkv, C, C, 3 * C, 2 * C));
    ASSIGN_OR_RETURN(std::vector<float> qkv_b, ld.Floats(names.Blk(il, "attn_qkv.bias"), 3 * C));
    l.q_b.assign(qkv_b.begin(), qkv_b.begin() + C);
    l.k_b.assign(qkv_b.begin() + C, qkv_b.begin() + 2 * C);
    l.v_b.assign(qkv_b.begin() + 2 * C, qkv_b.end());
    ASSIGN_OR_RETURN(l.attn_out, ld.Matrix(names.Blk(il, "attn_out.weight"), C, C));
    ASSIGN_OR_RETURN(l.attn_out_b, ld.Floats(names.Blk(il, "attn_out.bias"), C));
    ASSIGN_OR_RETURN(l.ffn_up, ld.Matrix(names.Blk(il, "ffn_up.weight"), C, c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_up_b, ld.Floats(names.Blk(il, "ffn_up.bias"), c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_down, ld.Matrix(names.Blk(il, "ffn_down.weight"), c.n_ff, C));
    ASSIGN_OR_RETURN(l.ffn_down_b, ld.Floats(names.Blk(il, "ffn_down.bias"), C));
  }
  ASSIGN_OR_RETURN(w->post_ln_w, ld.Floats(names.PostLn("weight"), C));
  ASSIGN_OR_RETURN(w->post_ln_b, ld.Floats(names.PostLn("bias"), C));
  const int64_t M = 4 * C;  // merged width
  ASSIGN_OR_RETURN(w->mm0, ld.Matrix(names.Merger(0, "weight"), M, M));
  ASSIGN_OR_RETURN(w->mm0_b, ld.Floats(names.Merger(0, "bias"), M));
  ASSIGN_OR_RETURN(w->mm2, ld.Matrix(names.Merger(2, "weight"), M, c.projection_dim));
  ASSIGN_OR_RETURN(w->mm2_b, ld.Floats(names.Merger(2, "bias"), c.projection_dim));
  enc->w_ = std::move(w);
  return enc;
}

size_t VisionEncoder::owned_bytes() const {
  size_t n = w_->patch_kernel.size() + w_->patch_b.size() + w_->pos.size() + w_->post_ln_w.size() +
             w_->post_ln_b.size() + w_->mm0_b.size() + w_->mm2_b.size();
  for (const VisionLayer& l : w_->layers) {
    n += l.ln1_w.size() * 4 + l.q_b.size() * 3 + l.attn_out_b.size() + l.ffn_up_b.size() +
         l.ffn_down_b.size();
  }
  return n * sizeof(float);
}

absl::StatusOr<ImageEmbedding> VisionEncoder::EncodePixels(absl::Span<const float> pixels,
                                                           int height, int width,
                                                           ops::ComputeContext& ctx) const {
  const VisionConfig& c = config_;
  const int P = c.patch_size, a = c.align();
  if (height <= 0 || width <= 0 || height % a != 0 || width % a != 0) {
    return absl::InvalidArgumentError(absl::StrCat("vision: pixel grid ", width, "x", height,
                                                   " is not a positive multiple of ", a));
  }
  if (pixels.size() != static_cast<size_t>(3) * height * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision: ", pixels.size(), " pixel values for a 3x", height, "x", width, " grid"));
  }
  ops::InitBlas();
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

  // Patch embedding: im2col [n, 3 * P * P] (index c * P^2 + ky * P + kx) times the kernel.
  std::vector<float> x(n * C);  // [n, C] residual stream
  {
    std::vector<float> cols(n * K);
    ctx.pool().ParallelFor(n, 16, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t) {
        float* dst = &cols[t * K];
        for (int ch = 0; ch < 3; ++ch) {
          for (int ky = 0; ky < P; ++ky) {
            const float* src =
                pixels.data() +
                (static_cast<size_t>(ch) * height + static_cast<size_t>(prow[t]) * P + ky) * width +
                static_cast<size_t>(pcol[t]) * P;
            std::memcpy(dst + (ch * P + ky) * P, src, P * sizeof(float));
          }
        }
      }
    });
    ops::MatMul(ctx, w.patch, cols.data(), n, x.data());
  }
  BiasAct(ctx, x.data(), w.patch_b.data(), n, C, Act::kNone);
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

  std::vector<float> h(n * C), q(n * C), k(n * C), v(n * C), att(n * C), ff(n * c.n_ff);
  for (int il = 0; il < c.n_layer; ++il) {
    const VisionLayer& l = w.layers[il];
    LayerNorm(ctx, x.data(), l.ln1_w.data(), l.ln1_b.data(), n, C, c.eps, h.data());
    ops::MatMul(ctx, h.data(), n, {{&l.q, q.data()}, {&l.k, k.data()}, {&l.v, v.data()}});
    BiasAct(ctx, q.data(), l.q_b.data(), n, C, Act::kNone);
    BiasAct(ctx, k.data(), l.k_b.data(), n, C, Act::kNone);
    BiasAct(ctx, v.data(), l.v_b.data(), n, C, Act::kNone);
    Rope2D(ctx, q.data(), n, C, c.n_head, c.head_dim(), prow, pcol, c.rope_theta);
    Rope2D(ctx, k.data(), n, C, c.n_head, c.head_dim(), prow, pcol, c.rope_theta);
    Attention(ctx, q.data(), k.data(), v.data(), n, c.n_head, c.head_dim(), att.data());
    ops::MatMul(ctx, l.attn_out, att.data(), n, h.data());
    if (ctx.observing()) {
      BiasAct(ctx, h.data(), l.attn_out_b.data(), n, C, Act::kNone);
      ctx.Observe(absl::StrCat("attn_out-", il), h.data(), n, C);
      AddResidual(ctx, x.data(), h.data(), std::vector<float>(C, 0.0f).data(), n, C);
    } else {
      AddResidual(ctx, x.data(), h.data(), l.attn_out_b.data(), n, C);
    }
    ctx.Observe(absl::StrCat("ffn_inp-", il), x.data(), n, C);

    LayerNorm(ctx, x.data(), l.ln2_w.data(), l.ln2_b.data(), n, C, c.eps, h.data());
    ops::MatMul(ctx, l.ffn_up, h.data(), n, ff.data());
    BiasAct(ctx, ff.data(), l.ffn_up_b.data(), n, c.n_ff, Act::kGeluTanh);
    ops::MatMul(ctx, l.ffn_down, ff.data(), n, h.data());
    AddResidual(ctx, x.data(), h.data(), l.ffn_down_b.data(), n, C);
    ctx.Observe(absl::StrCat("layer_out-", il), x.data(), n, C);
    ctx.NoteLayerDone();
  }

  LayerNorm(ctx, x.data(), w.post_ln_w.data(), w.post_ln_b.data(), n, C, c.eps, x.data());
  ctx.Observe(absl::StrCat("norm_b-", c.n_layer), x.data(), n, C);

  // Merger: the four patches of each 2x2 block are consecutive rows, so x viewed as
  // [n / 4, 4 C] is the concatenation.
  const int64_t n_tok = grid.n_tokens(), M = 4 * C;
  std::vector<float> m(n_tok * M);
  ops::MatMul(ctx, w.mm0, x.data(), n_tok, m.data());
  BiasAct(ctx, m.data(), w.mm0_b.data(), n_tok, M, Act::kGeluErf);
  ImageEmbedding out;
  out.grid = grid;
  out.data.resize(n_tok * c.projection_dim);
  ops::MatMul(ctx, w.mm2, m.data(), n_tok, out.data.data());
  BiasAct(ctx, out.data.data(), w.mm2_b.data(), n_tok, c.projection_dim, Act::kNone);
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

// The Qwen3.5 (Qwen3-VL) vision tower: image -> embeddings the text model consumes in place of
// image placeholder tokens.
//
// Pipeline: DecodeImage (image.h) -> Preprocess (resize to a grid of 32-pixel multiples,
// normalise) -> VisionEncoder::EncodePixels (patch embedding, ViT blocks with 2-D rotary, 2x2
// patch merger). Encode() runs the last two.
//
// File layouts (detected by VisionEncoder::Load): a llama.cpp "clip" mmproj GGUF with
// clip.projector_type = "qwen3vl_merger" and clip.vision.* metadata, or the tower Ollama bundles
// in its Qwen3.5 GGUF (<arch>.vision.* keys, v.patch_embed / v.pos_embed / v.merger.* names,
// split q/k/v). Tensor names go through one mapping point (TowerLayout in encoder.cc).
#ifndef QWEN_INFERENCE_VISION_VISION_H_
#define QWEN_INFERENCE_VISION_VISION_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "inference/gguf/gguf_file.h"
#include "inference/ops/compute.h"
#include "inference/vision/image.h"

namespace qwen::vision {

// Hyperparameters of the tower, from the clip.vision.* keys.
struct VisionConfig {
  int image_size = 0;          // clip.vision.image_size (the training resolution; informative)
  int patch_size = 16;         // clip.vision.patch_size
  int n_embd = 0;              // clip.vision.embedding_length
  int n_head = 0;              // clip.vision.attention.head_count
  int n_layer = 0;             // clip.vision.block_count
  int n_ff = 0;                // clip.vision.feed_forward_length
  int spatial_merge_size = 2;  // clip.vision.spatial_merge_size
  int projection_dim = 0;      // clip.vision.projection_dim (= the text model's n_embd)
  int n_pos_side = 0;          // side of the learned position-embedding grid (sqrt of its rows)
  std::array<float, 3> image_mean = {0.5f, 0.5f, 0.5f};  // clip.vision.image_mean
  std::array<float, 3> image_std = {0.5f, 0.5f, 0.5f};   // clip.vision.image_std
  float eps = 1e-6f;                                     // clip.vision.attention.layer_norm_epsilon
  float rope_theta = 10000.0f;  // 2-D rotary base (no key in the file; the model's value)

  int head_dim() const { return n_embd / n_head; }
  // Side of the pixel grid the resized image snaps to: patch_size * spatial_merge_size (32).
  int align() const { return patch_size * spatial_merge_size; }
};

// Pixel-count bounds of the resized image (see PlanGrid). Defaults: at least 8 image tokens
// (8192 px, as llama.cpp's default, so that e.g. a 128x128 image is used as is), at most 1024
// image tokens (1,048,576 px = 1024x1024). The model's own processor allows up to 16,777,216
// px (16384 tokens) and llama.cpp 4096 tokens; on a CPU the encoder's attention is quadratic in
// the patch count, so a 1024-token image (4096 patches) is the default ceiling. Raise it per
// deployment when larger images are worth their encoding time.
struct PreprocessOptions {
  int64_t min_pixels = 8 * 32 * 32;
  int64_t max_pixels = 1024 * 32 * 32;
};

// Grid of an image after resizing.
struct ImageGrid {
  int patch_rows = 0;  // resized height / patch_size
  int patch_cols = 0;  // resized width / patch_size
  int merge = 2;       // spatial_merge_size

  // Merged grid: one image token per merge x merge block of patches.
  int rows() const { return patch_rows / merge; }
  int cols() const { return patch_cols / merge; }
  int64_t n_tokens() const { return int64_t{rows()} * cols(); }
  int64_t n_patches() const { return int64_t{patch_rows} * patch_cols; }
};

// The grid an image of width x height gets, without its pixels (lets the front end count image
// tokens). The rule is the model's image processor's smart_resize (Qwen2-VL / Qwen3-VL), with
// a = align() = 32:
//   h' = max(a, round(h / a) * a), w' likewise (round half to even, as Python's round());
//   if h' * w' > max_pixels: b = sqrt(h * w / max_pixels), h' = max(a, floor(h / b / a) * a),
//                            w' likewise;
//   else if h' * w' < min_pixels: b = sqrt(min_pixels / (h * w)), h' = ceil(h * b / a) * a,
//                                 w' likewise.
// So the aspect ratio is kept as closely as the 32-pixel grid allows, small images are
// upscaled and large ones downscaled. Differences from llama.cpp: llama.cpp rounds halves away
// from zero (an 80-pixel side gives 96, here 64). When max(h, w) / min(h, w) > 200 the image is
// refused (INVALID_ARGUMENT), as the model's processor does. Options with min_pixels >
// max_pixels or max_pixels below one merged token are INVALID_ARGUMENT.
absl::StatusOr<ImageGrid> PlanGrid(int width, int height, const VisionConfig& config,
                                   const PreprocessOptions& options);

// Resizes `image` to PlanGrid's size and normalises it: out = (u8 / 255 - mean) / std per
// channel, planar [3][H][W] float (H = grid.patch_rows * patch_size). Resampling is bicubic
// (a = -0.5) with antialiasing when shrinking and half-pixel centres, rounded to uint8 before
// normalisation: the PIL resize the model's processor uses. The image is stretched to the grid
// (no padding). llama.cpp instead letterboxes the image into the grid (black bars, aspect
// exactly kept) with its own align-corners bilinear filter; this follows the model.
absl::StatusOr<std::vector<float>> Preprocess(const RgbImage& image, const VisionConfig& config,
                                              const PreprocessOptions& options, ImageGrid* grid);

// The second half of Preprocess for a grid planned elsewhere (every frame of a video is resized
// to the one grid planned for the whole video): the same resize and normalisation.
absl::StatusOr<std::vector<float>> PreprocessToGrid(const RgbImage& image,
                                                    const VisionConfig& config,
                                                    const ImageGrid& grid);

// Embeddings of one image: [grid.n_tokens(), projection_dim], row-major. Row i is merged token
// (i / grid.cols(), i % grid.cols()): raster order over the merged grid, the order the text
// model consumes them.
struct ImageEmbedding {
  ImageGrid grid;
  std::vector<float> data;
};

struct VisionWeights;  // encoder.cc

// Numerical choices of the encoder.
struct EncoderOptions {
  // Reproduce llama.cpp's CPU numerics where they depart from the model's float math, to
  // compare every intermediate with llama.cpp tightly (tests): pixels and both patch kernels
  // rounded to F16 before the patch convolution (ggml_conv_2d's im2col is F16, even for an F32
  // tower); GELU as y = f16(gelu_tanh(f16(x))) (ggml's F16 table); the merger's GELU in tanh
  // form (llama.cpp's ffn_gelu) instead of the model's exact erf. Off by default: the model's
  // math in float32.
  bool llama_cpp_numerics = false;
};

// The vision tower of one mmproj file.
//
// Thread-safety: immutable after Load; concurrent Encode calls are safe with different
// ComputeContexts (a context runs one pass at a time).
//
// Observable intermediates (ComputeContext::Observe, shapes [n_patches, n_embd] in 2x2-merge
// order unless noted; names as llama.cpp's clip graph): patch_bias, inp_pos_emb, attn_out-L,
// ffn_inp-L, layer_out-L, norm_b-<n_layer> (after the post-LayerNorm), embd ([n_tokens,
// projection_dim]).
class VisionEncoder {
 public:
  // Reads the hyperparameters and maps the weights (F32, F16, BF16 or Q8_0 matrices). The file
  // must outlive nothing: the encoder keeps `file` alive. Errors name the missing or malformed
  // key or tensor.
  static absl::StatusOr<std::unique_ptr<VisionEncoder>> Load(
      std::shared_ptr<const gguf::GgufFile> file, const EncoderOptions& options = {});
  ~VisionEncoder();

  const VisionConfig& config() const { return config_; }
  // Must equal the text model's n_embd; the caller checks.
  int64_t projection_dim() const { return config_.projection_dim; }
  // Bytes of weights the encoder holds outside the file mapping (converted tensors).
  size_t owned_bytes() const;

  // Normalised pixels, planar [3][height][width] (height and width multiples of align()) ->
  // embeddings. CANCELLED when ctx.cancelled() is found set before a ViT block. A still image
  // is a frame pair of two identical frames: EncodePixels(x) is EncodeFramePair(x, x).
  absl::StatusOr<ImageEmbedding> EncodePixels(absl::Span<const float> pixels, int height, int width,
                                              ops::ComputeContext& ctx) const;
  // Two consecutive frames of a video (the model's temporal patch size is 2), each normalised
  // as for EncodePixels and of the same size: `first` goes through the Conv3D's first temporal
  // kernel (v.patch_embd.weight), `second` through the second (v.patch_embd.weight.1), summed in
  // one product. Everything after the patch embedding (positions, rotary, blocks, merger) is
  // per pair as for an image: the pair's patches attend to each other only.
  absl::StatusOr<ImageEmbedding> EncodeFramePair(absl::Span<const float> first,
                                                 absl::Span<const float> second, int height,
                                                 int width, ops::ComputeContext& ctx) const;
  // Preprocess + EncodePixels.
  absl::StatusOr<ImageEmbedding> Encode(const RgbImage& image, const PreprocessOptions& options,
                                        ops::ComputeContext& ctx) const;

 private:
  VisionEncoder() = default;
  std::shared_ptr<const gguf::GgufFile> file_;
  VisionConfig config_;
  EncoderOptions options_;
  std::unique_ptr<VisionWeights> w_;
};

}  // namespace qwen::vision

#endif  // QWEN_INFERENCE_VISION_VISION_H_

// Image -> normalised pixel grid, as the model's image processor (Qwen2-VL / Qwen3-VL
// smart_resize + PIL bicubic resize + rescale/normalise) does it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/vision/vision.h"

namespace qwen::vision {
namespace {

// The model's processor refuses images more elongated than this.
constexpr double kMaxAspectRatio = 200.0;

// PIL's bicubic kernel (a = -0.5), support 2.
double Bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Taps of a 1-D resampling from in_size to out_size, PIL's way: half-pixel centres, the kernel
// stretched by the shrink factor (antialiasing), weights normalised to sum 1.
struct Taps {
  std::vector<int> first;      // [out_size] first input index
  std::vector<int> count;      // [out_size]
  std::vector<float> weights;  // [out_size, max_count]
  int max_count = 0;
};

Taps MakeTaps(int in_size, int out_size) {
  Taps t;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  t.max_count = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.max_count, 0.0f);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::min(hi - lo, t.max_count);
    double sum = 0;
    std::vector<double> w(n);
    for (int k = 0; k < n; ++k) {
      w[k] = Bicubic((lo + k - center + 0.5) / filter_scale);
      sum += w[k];
    }
    for (int k = 0; k < n; ++k) {
      t.weights[static_cast<size_t>(o) * t.max_count + k] =
          static_cast<float>(sum != 0 ? w[k] / sum : 0);
    }
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

uint8_t Clip8(float v) {
  const float r = std::nearbyint(v);
  return static_cast<uint8_t>(std::clamp(r, 0.0f, 255.0f));
}

// Resamples interleaved 3-channel rows: horizontal pass, then vertical (PIL's order, with a
// uint8 intermediate image like PIL's).
std::vector<uint8_t> ResizeBicubic(const RgbImage& in, int out_w, int out_h) {
  std::vector<uint8_t> mid;
  const uint8_t* src = in.pixels.data();
  int w = in.width;
  if (out_w != in.width) {
    const Taps t = MakeTaps(in.width, out_w);
    mid.resize(static_cast<size_t>(out_w) * in.height * 3);
    for (int y = 0; y < in.height; ++y) {
      const uint8_t* row = src + static_cast<size_t>(y) * in.width * 3;
      uint8_t* out = mid.data() + static_cast<size_t>(y) * out_w * 3;
      for (int x = 0; x < out_w; ++x) {
        const float* wt = &t.weights[static_cast<size_t>(x) * t.max_count];
        float acc[3] = {0, 0, 0};
        for (int k = 0; k < t.count[x]; ++k) {
          const uint8_t* p = row + static_cast<size_t>(t.first[x] + k) * 3;
          for (int c = 0; c < 3; ++c) acc[c] += wt[k] * p[c];
        }
        for (int c = 0; c < 3; ++c) out[3 * x + c] = Clip8(acc[c]);
      }
    }
    src = mid.data();
    w = out_w;
  }
  std::vector<uint8_t> out(static_cast<size_t>(out_w) * out_h * 3);
  if (out_h == in.height) {
    std::copy(src, src + out.size(), out.begin());
    return out;
  }
  const Taps t = MakeTaps(in.height, out_h);
  const size_t row_len = static_cast<size_t>(w) * 3;
  std::vector<float> acc(row_len);
  for (int y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* wt = &t.weights[static_cast<size_t>(y) * t.max_count];
    for (int k = 0; k < t.count[y]; ++k) {
      const uint8_t* row = src + static_cast<size_t>(t.first[y] + k) * row_len;
      const float wk = wt[k];
      for (size_t i = 0; i < row_len; ++i) acc[i] += wk * row[i];
    }
    uint8_t* o = out.data() + static_cast<size_t>(y) * row_len;
    for (size_t i = 0; i < row_len; ++i) o[i] = Clip8(acc[i]);
  }
  return out;
}

}  // namespace

absl::StatusOr<ImageGrid> PlanGrid(int width, int height, const VisionConfig& config,
                                   const PreprocessOptions& options) {
  const int a = config.align();
  if (a <= 0) return absl::InvalidArgumentError("vision config: patch or merge size is zero");
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("image size ", width, "x", height, " is empty"));
  }
  if (options.max_pixels < int64_t{a} * a) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pixels ", options.max_pixels, " is below one image token (", a * a, ")"));
  }
  if (options.min_pixels > options.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("min_pixels ", options.min_pixels,
                                                   " exceeds max_pixels ", options.max_pixels));
  }
  const double h = height, w = width;
  if (std::max(h, w) / std::min(h, w) > kMaxAspectRatio) {
    return absl::InvalidArgumentError(
        absl::StrCat("image ", width, "x", height, ": aspect ratio above ", kMaxAspectRatio));
  }
  // Python's round() (half to even) as in the model's processor: nearbyint in the default
  // rounding mode.
  int64_t h_bar = std::max<int64_t>(a, static_cast<int64_t>(std::nearbyint(h / a)) * a);
  int64_t w_bar = std::max<int64_t>(a, static_cast<int64_t>(std::nearbyint(w / a)) * a);
  if (h_bar * w_bar > options.max_pixels) {
    const double beta = std::sqrt(h * w / static_cast<double>(options.max_pixels));
    h_bar = std::max<int64_t>(a, static_cast<int64_t>(std::floor(h / beta / a)) * a);
    w_bar = std::max<int64_t>(a, static_cast<int64_t>(std::floor(w / beta / a)) * a);
    // The floor of one side at `a` can leave the product above the limit for very elongated
    // images with a small max_pixels: shrink the long side to fit.
    if (h_bar * w_bar > options.max_pixels) {
      if (h_bar >= w_bar) {
        h_bar = std::max<int64_t>(a, options.max_pixels / w_bar / a * a);
      } else {
        w_bar = std::max<int64_t>(a, options.max_pixels / h_bar / a * a);
      }
    }
  } else if (h_bar * w_bar < options.min_pixels) {
    const double beta = std::sqrt(static_cast<double>(options.min_pixels) / (h * w));
    h_bar = static_cast<int64_t>(std::ceil(h * beta / a)) * a;
    w_bar = static_cast<int64_t>(std::ceil(w * beta / a)) * a;
    // Upscaling never crosses max_pixels (which is >= min_pixels) by more than rounding; clamp
    // the long side when it does.
    if (h_bar * w_bar > options.max_pixels) {
      if (h_bar >= w_bar) {
        h_bar = std::max<int64_t>(a, options.max_pixels / w_bar / a * a);
      } else {
        w_bar = std::max<int64_t>(a, options.max_pixels / h_bar / a * a);
      }
    }
  }
  ImageGrid grid;
  grid.merge = config.spatial_merge_size;
  grid.patch_rows = static_cast<int>(h_bar / config.patch_size);
  grid.patch_cols = static_cast<int>(w_bar / config.patch_size);
  return grid;
}

absl::StatusOr<std::vector<float>> Preprocess(const RgbImage& image, const VisionConfig& config,
                                              const PreprocessOptions& options, ImageGrid* grid) {
  if (image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError("image: pixel buffer does not match its size");
  }
  auto planned = PlanGrid(image.width, image.height, config, options);
  if (!planned.ok()) return planned.status();
  absl::StatusOr<std::vector<float>> out = PreprocessToGrid(image, config, *planned);
  if (out.ok() && grid != nullptr) *grid = *planned;
  return out;
}

absl::StatusOr<std::vector<float>> PreprocessToGrid(const RgbImage& image,
                                                    const VisionConfig& config,
                                                    const ImageGrid& grid) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError("image: pixel buffer does not match its size");
  }
  if (grid.patch_rows <= 0 || grid.patch_cols <= 0 || grid.patch_rows % grid.merge != 0 ||
      grid.patch_cols % grid.merge != 0) {
    return absl::InvalidArgumentError(absl::StrCat("vision: grid ", grid.patch_cols, "x",
                                                   grid.patch_rows, " patches is not mergeable"));
  }
  const int out_h = grid.patch_rows * config.patch_size;
  const int out_w = grid.patch_cols * config.patch_size;
  std::vector<uint8_t> resized;
  const std::vector<uint8_t>* px = &image.pixels;
  if (out_w != image.width || out_h != image.height) {
    resized = ResizeBicubic(image, out_w, out_h);
    px = &resized;
  }
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  std::vector<float> out(plane * 3);  // [3][out_h][out_w]
  for (int c = 0; c < 3; ++c) {
    const float mean = config.image_mean[c];
    const float inv_std = 1.0f / config.image_std[c];
    float* dst = out.data() + c * plane;
    for (size_t i = 0; i < plane; ++i) {
      dst[i] = ((*px)[3 * i + c] / 255.0f - mean) * inv_std;
    }
  }
  return out;
}

}  // namespace qwen::vision

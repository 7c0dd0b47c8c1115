// The model's video processor (transformers' Qwen3VLVideoProcessor, which Qwen3.5 uses): which
// frames are sampled and how large they become.
#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/video/video.h"

namespace qwen::video {
namespace {

constexpr int kTemporalPatch = 2;
constexpr double kMaxAspectRatio = 200.0;

// Python's round() and numpy's: half to even (the default rounding mode of nearbyint).
double RoundHalfEven(double x) { return std::nearbyint(x); }

absl::Status CheckOptions(const VideoOptions& o) {
  if (!(o.fps > 0) || !std::isfinite(o.fps)) {
    return absl::InvalidArgumentError(absl::StrCat("fps: ", o.fps, " is not positive"));
  }
  if (o.max_frames < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_frames: ", o.max_frames, " is below 1"));
  }
  if (o.min_frames < 1) {
    return absl::InvalidArgumentError(absl::StrCat("min_frames: ", o.min_frames, " is below 1"));
  }
  if (o.min_pixels < 1 || o.max_pixels < o.min_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pixels: ", o.max_pixels, " is below min_pixels (", o.min_pixels, ")"));
  }
  return absl::OkStatus();
}

// Times of the pairs (2k, 2k+1): their mean, as the processor's _calculate_timestamps.
std::vector<double> PairTimes(const std::vector<double>& times) {
  std::vector<double> out;
  for (size_t k = 0; k + 1 < times.size(); k += 2) out.push_back((times[k] + times[k + 1]) / 2);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> SampleFrameIndices(int64_t n_frames, double duration_seconds,
                                                        const VideoOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  if (n_frames < 1) return absl::InvalidArgumentError("the video has no frames");
  // num_frames = int(total_frames / video_fps * fps), where total_frames / video_fps is the
  // duration. The tolerance keeps a product that should be whole (10.0 s * 2) from landing just
  // below it through rounding of the duration.
  const double wanted = std::floor(std::max(duration_seconds, 0.0) * options.fps + 1e-9);
  int64_t n = wanted > 1e12 ? int64_t{1} << 40 : static_cast<int64_t>(wanted);
  n = std::min<int64_t>({std::max<int64_t>(n, options.min_frames), options.max_frames, n_frames});
  // np.linspace(0, n_frames - 1, n).round(): i * step, the last exactly n_frames - 1.
  std::vector<int64_t> indices(n);
  if (n == 1) {
    indices[0] = 0;
    return indices;
  }
  const double step = static_cast<double>(n_frames - 1) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) {
    indices[i] = static_cast<int64_t>(RoundHalfEven(static_cast<double>(i) * step));
  }
  indices[n - 1] = n_frames - 1;
  return indices;
}

absl::StatusOr<vision::ImageGrid> PlanVideoGrid(int64_t n_frames, int width, int height,
                                                const vision::VisionConfig& config,
                                                const VideoOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  const int factor = config.align();
  if (factor <= 0) return absl::InvalidArgumentError("vision config: patch or merge size is zero");
  if (width <= 0 || height <= 0 || n_frames < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("video of ", n_frames, " frames of ", width, "x", height, " is empty"));
  }
  double h = height, w = width;
  if (h < factor || w < factor) {
    // Sides below one token are scaled up first (int() truncates, as Python's).
    const double scale = std::max(factor / h, factor / w);
    h = std::floor(h * scale);
    w = std::floor(w * scale);
  }
  if (std::max(h, w) / std::min(h, w) > kMaxAspectRatio) {
    return absl::InvalidArgumentError(
        absl::StrCat("frames of ", width, "x", height, ": aspect ratio above ", kMaxAspectRatio));
  }
  const double t = static_cast<double>(n_frames);
  double h_bar = RoundHalfEven(h / factor) * factor;
  double w_bar = RoundHalfEven(w / factor) * factor;
  const double t_bar = RoundHalfEven(t / kTemporalPatch) * kTemporalPatch;
  const double max_px = static_cast<double>(options.max_pixels);
  const double min_px = static_cast<double>(options.min_pixels);
  if (t_bar * h_bar * w_bar > max_px) {
    const double beta = std::sqrt(t * h * w / max_px);
    h_bar = std::max<double>(factor, std::floor(h / beta / factor) * factor);
    w_bar = std::max<double>(factor, std::floor(w / beta / factor) * factor);
  } else if (t_bar * h_bar * w_bar < min_px) {
    const double beta = std::sqrt(min_px / (t * h * w));
    h_bar = std::ceil(h * beta / factor) * factor;
    w_bar = std::ceil(w * beta / factor) * factor;
  }
  // Sides past any sensible frame (a degenerate budget) are refused rather than allocated.
  if (h_bar > 1 << 15 || w_bar > 1 << 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_pixels: ", options.min_pixels, " makes frames of ", w_bar, "x", h_bar));
  }
  vision::ImageGrid grid;
  grid.merge = config.spatial_merge_size;
  grid.patch_rows = static_cast<int>(h_bar) / config.patch_size;
  grid.patch_cols = static_cast<int>(w_bar) / config.patch_size;
  return grid;
}

absl::StatusOr<VideoPlan> PlanVideo(const VideoInfo& info, const vision::VisionConfig& config,
                                    const VideoOptions& options) {
  if (info.n_frames < 1 || static_cast<int64_t>(info.frame_times.size()) != info.n_frames) {
    return absl::InvalidArgumentError("the video has no frames");
  }
  VideoPlan plan;
  ASSIGN_OR_RETURN(plan.frames, SampleFrameIndices(info.n_frames, info.duration_seconds, options));
  const int64_t sampled = static_cast<int64_t>(plan.frames.size());
  ASSIGN_OR_RETURN(plan.grid, PlanVideoGrid(sampled, info.width, info.height, config, options));
  if (plan.frames.size() % kTemporalPatch != 0) plan.frames.push_back(plan.frames.back());
  for (int64_t i : plan.frames) plan.times.push_back(info.frame_times[i]);
  plan.pair_times = PairTimes(plan.times);
  return plan;
}

absl::StatusOr<VideoPlan> PlanFrames(const std::vector<double>& times, int width, int height,
                                     const vision::VisionConfig& config,
                                     const VideoOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  if (times.empty()) return absl::InvalidArgumentError("frames: none given");
  if (static_cast<int64_t>(times.size()) > options.max_frames) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frames: ", times.size(), " frames is more than max_frames (", options.max_frames, ")"));
  }
  for (size_t k = 0; k < times.size(); ++k) {
    if (!std::isfinite(times[k]) || times[k] < 0 || (k > 0 && times[k] < times[k - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("frames[", k, "].timestamp: ", times[k],
                       " is not a time in seconds at or after the previous frame's"));
    }
  }
  VideoPlan plan;
  ASSIGN_OR_RETURN(
      plan.grid, PlanVideoGrid(static_cast<int64_t>(times.size()), width, height, config, options));
  for (size_t k = 0; k < times.size(); ++k) plan.frames.push_back(static_cast<int64_t>(k));
  plan.times = times;
  if (plan.frames.size() % kTemporalPatch != 0) {
    plan.frames.push_back(plan.frames.back());
    plan.times.push_back(plan.times.back());
  }
  plan.pair_times = PairTimes(plan.times);
  return plan;
}

}  // namespace qwen::video

// A planned video's frame pairs through the vision tower, one pair at a time: what a worker (or
// `qwen generate`) runs when the prompt reaches the video.
#ifndef QWEN_INFERENCE_VIDEO_FRAME_PAIRS_H_
#define QWEN_INFERENCE_VIDEO_FRAME_PAIRS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "inference/ops/compute.h"
#include "inference/video/video.h"
#include "inference/vision/image.h"
#include "inference/vision/vision.h"

namespace qwen::video {

// Where a video's frames come from. Frame(i) is asked for with non-decreasing i (a source may
// start over for an earlier one); `cancelled`, when set, is polled while decoding.
class FrameSource {
 public:
  virtual ~FrameSource() = default;
  virtual absl::StatusOr<vision::RgbImage> Frame(int64_t index,
                                                 const std::function<bool()>& cancelled) = 0;
};

// The frames of an encoded video file (FrameReader, opened at the first frame asked for).
std::unique_ptr<FrameSource> FileFrames(std::shared_ptr<const std::string> bytes, VideoInfo info,
                                        VideoLimits limits, std::string name);

// Frames a client sampled itself, as encoded images (JPEG, PNG, WebP), each decoded when asked
// for; every one must have the size `width` x `height`.
std::unique_ptr<FrameSource> ImageFrames(std::vector<std::string> images, int width, int height,
                                         vision::DecodeLimits limits, std::string name);

// Encodes the frame pairs of one planned video: pair k is frames plan.frames[2k] and [2k+1],
// each resized to plan.grid and normalised, through VisionEncoder::EncodeFramePair. Pairs are
// meant to be asked for in order (the source decodes forward); skipping ahead is fine.
//
// Thread-safe: decoding is serialised (one source, one decoder); the encodes themselves may run
// at once on different contexts.
class PairEncoder {
 public:
  PairEncoder(std::shared_ptr<const vision::VisionEncoder> encoder,
              std::unique_ptr<FrameSource> source, VideoPlan plan);

  const VideoPlan& plan() const { return plan_; }

  // Embeddings of pair `pair`, [plan.tokens_per_pair(), projection_dim] row-major.
  // CANCELLED when ctx.cancelled() is set (polled while decoding and before every ViT block).
  absl::StatusOr<std::vector<float>> EncodePair(int64_t pair, ops::ComputeContext& ctx);

 private:
  // Normalised pixels of plan frame `k` (the last one is kept: padding repeats it).
  absl::StatusOr<std::shared_ptr<const std::vector<float>>> Pixels(int64_t k,
                                                                   ops::ComputeContext& ctx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<const vision::VisionEncoder> encoder_;
  const VideoPlan plan_;
  absl::Mutex mu_;
  std::unique_ptr<FrameSource> source_ ABSL_GUARDED_BY(mu_);
  int64_t last_index_ ABSL_GUARDED_BY(mu_) = -1;
  std::shared_ptr<const std::vector<float>> last_pixels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qwen::video

#endif  // QWEN_INFERENCE_VIDEO_FRAME_PAIRS_H_

#include "inference/video/frame_pairs.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::video {
namespace {

class FileFrameSource : public FrameSource {
 public:
  FileFrameSource(std::shared_ptr<const std::string> bytes, VideoInfo info, VideoLimits limits,
                  std::string name)
      : bytes_(std::move(bytes)), info_(std::move(info)), limits_(limits), name_(std::move(name)) {}

  absl::StatusOr<vision::RgbImage> Frame(int64_t index,
                                         const std::function<bool()>& cancelled) override {
    if (reader_ == nullptr) {
      ASSIGN_OR_RETURN(reader_, FrameReader::Open(bytes_, info_, limits_, name_));
    }
    return reader_->Frame(index, cancelled);
  }

 private:
  const std::shared_ptr<const std::string> bytes_;
  const VideoInfo info_;
  const VideoLimits limits_;
  const std::string name_;
  std::unique_ptr<FrameReader> reader_;
};

class ImageFrameSource : public FrameSource {
 public:
  ImageFrameSource(std::vector<std::string> images, int width, int height,
                   vision::DecodeLimits limits, std::string name)
      : images_(std::move(images)),
        width_(width),
        height_(height),
        limits_(limits),
        name_(std::move(name)) {}

  absl::StatusOr<vision::RgbImage> Frame(int64_t index, const std::function<bool()>&) override {
    if (index < 0 || index >= static_cast<int64_t>(images_.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": frame ", index, " of ", images_.size(), " frames"));
    }
    const std::string& bytes = images_[index];
    const std::string field = absl::StrCat(name_, ".frames[", index, "]");
    ASSIGN_OR_RETURN(
        vision::RgbImage image,
        vision::DecodeImage(
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
            limits_, field));
    if (image.width != width_ || image.height != height_) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", image.width, "x", image.height,
                                                     " differs from the first frame's ", width_,
                                                     "x", height_));
    }
    return image;
  }

 private:
  const std::vector<std::string> images_;
  const int width_, height_;
  const vision::DecodeLimits limits_;
  const std::string name_;
};

}  // namespace

std::unique_ptr<FrameSource> FileFrames(std::shared_ptr<const std::string> bytes, VideoInfo info,
                                        VideoLimits limits, std::string name) {
  return std::make_unique<FileFrameSource>(std::move(bytes), std::move(info), limits,
                                           std::move(name));
}

std::unique_ptr<FrameSource> ImageFrames(std::vector<std::string> images, int width, int height,
                                         vision::DecodeLimits limits, std::string name) {
  return std::make_unique<ImageFrameSource>(std::move(images), width, height, limits,
                                            std::move(name));
}

PairEncoder::PairEncoder(std::shared_ptr<const vision::VisionEncoder> encoder,
                         std::unique_ptr<FrameSource> source, VideoPlan plan)
    : encoder_(std::move(encoder)), plan_(std::move(plan)), source_(std::move(source)) {}

absl::StatusOr<std::shared_ptr<const std::vector<float>>> PairEncoder::Pixels(
    int64_t k, ops::ComputeContext& ctx) {
  const int64_t index = plan_.frames[k];
  if (index == last_index_ && last_pixels_ != nullptr) return last_pixels_;
  ASSIGN_OR_RETURN(vision::RgbImage frame,
                   source_->Frame(index, [&ctx] { return ctx.cancelled(); }));
  ASSIGN_OR_RETURN(std::vector<float> pixels,
                   vision::PreprocessToGrid(frame, encoder_->config(), plan_.grid));
  last_index_ = index;
  last_pixels_ = std::make_shared<const std::vector<float>>(std::move(pixels));
  return last_pixels_;
}

absl::StatusOr<std::vector<float>> PairEncoder::EncodePair(int64_t pair, ops::ComputeContext& ctx) {
  if (pair < 0 || pair >= plan_.n_pairs()) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame pair ", pair, " of ", plan_.n_pairs(), " pairs"));
  }
  std::shared_ptr<const std::vector<float>> first, second;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(first, Pixels(2 * pair, ctx));
    ASSIGN_OR_RETURN(second, Pixels(2 * pair + 1, ctx));
  }
  const int P = encoder_->config().patch_size;
  ASSIGN_OR_RETURN(vision::ImageEmbedding e,
                   encoder_->EncodeFramePair(*first, *second, plan_.grid.patch_rows * P,
                                             plan_.grid.patch_cols * P, ctx));
  return std::move(e.data);
}

}  // namespace qwen::video

// Arbitrary bytes into the video decoding entry point, as a worker runs it: ProbeVideo (the
// allow-listed demuxers), PlanVideo, then the FrameReader (the allow-listed decoders and the
// RGB conversion) over every planned frame and the resize to the planned grid. Limits are small so
// that no input makes one run long. Properties: no crash or sanitizer report, and every refusal is
// INVALID_ARGUMENT (anything else, INTERNAL above all, is a finding); decoded frames have the
// probed size.
//
// FFmpeg's own libraries come from Debian, uninstrumented: coverage guides the fuzzer through
// this project's code (and the bytes reach FFmpeg's parsers whole), ASan still sees FFmpeg's
// heap through its malloc, not its stack or globals.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "inference/video/video.h"
#include "inference/vision/vision.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void Check(const absl::Status& s, const char* where) {
  if (s.ok() || s.code() == absl::StatusCode::kInvalidArgument) return;
  qwen::fuzz::Fail(std::string(where) + ": " + s.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qwen;  // NOLINT
  video::VideoLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_frame_pixels = 320 * 240;
  limits.max_frames = 240;
  limits.max_duration_seconds = 600;
  absl::StatusOr<video::VideoInfo> info =
      video::ProbeVideo(absl::MakeConstSpan(data, size), limits);
  Check(info.status(), "ProbeVideo");
  if (!info.ok()) return 0;
  if (info->n_frames < 1 || info->frame_times.size() != static_cast<size_t>(info->n_frames)) {
    qwen::fuzz::Fail("ProbeVideo: frame times do not match the frame count");
  }
  vision::VisionConfig config;  // patch 16, merge 2: the model's
  video::VideoOptions options;
  options.max_frames = 8;
  options.max_pixels = 8 * 64 * 64;
  absl::StatusOr<video::VideoPlan> plan = video::PlanVideo(*info, config, options);
  Check(plan.status(), "PlanVideo");
  if (!plan.ok()) return 0;
  auto bytes = std::make_shared<const std::string>(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::unique_ptr<video::FrameReader>> reader =
      video::FrameReader::Open(bytes, *info, limits);
  Check(reader.status(), "FrameReader::Open");
  if (!reader.ok()) return 0;
  for (int64_t index : plan->frames) {
    absl::StatusOr<vision::RgbImage> frame = (*reader)->Frame(index);
    Check(frame.status(), "FrameReader::Frame");
    if (!frame.ok()) return 0;
    if (frame->width != info->width || frame->height != info->height ||
        frame->pixels.size() != static_cast<size_t>(info->width) * info->height * 3) {
      qwen::fuzz::Fail("a decoded frame does not have the probed size");
    }
    Check(vision::PreprocessToGrid(*frame, config, plan->grid).status(), "PreprocessToGrid");
  }
  return 0;
}

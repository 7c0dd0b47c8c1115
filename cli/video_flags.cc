#include "cli/video_flags.h"

#include <cstdint>

#include "absl/flags/flag.h"

namespace {
const qwen::video::VideoSettings kDefaults;
}  // namespace

ABSL_FLAG(double, video_fps, kDefaults.defaults.fps,
          "Frames sampled per second of video when a request does not say (the model's 2): "
          "evenly spaced, at least 4, at most --video_max_frames, an even count.");
ABSL_FLAG(double, video_max_fps, kDefaults.max_fps,
          "The most frames per second a request may ask for (Video.fps).");
ABSL_FLAG(int32_t, video_max_frames, kDefaults.defaults.max_frames,
          "Frames sampled from one video at most (the model's 768); a request may ask for fewer.");
ABSL_FLAG(int64_t, video_min_pixels, kDefaults.defaults.min_pixels,
          "A video's sampled frames are resized (aspect kept, sides multiples of 32) so that "
          "frames x height x width is at least this (the model's 4,096) ...");
ABSL_FLAG(int64_t, video_max_pixels, kDefaults.defaults.max_pixels,
          "... and at most this: the more frames, the smaller each. The default, 4,194,304, is "
          "at most 2,048 video tokens (each token is 32x32 pixels of a pair of frames); the "
          "model's own processor allows 25,165,824 (12,288 tokens). A request may ask for less.");
ABSL_FLAG(int64_t, video_max_bytes, static_cast<int64_t>(kDefaults.limits.max_bytes),
          "Video files larger than this are refused (a request's message must also fit "
          "--max_message_bytes).");
ABSL_FLAG(double, video_max_duration, kDefaults.limits.max_duration_seconds,
          "Video files longer than this many seconds are refused.");
ABSL_FLAG(int64_t, video_max_frame_pixels, kDefaults.limits.max_frame_pixels,
          "Video files whose frames have more pixels than this (width x height; 3840x2160 by "
          "default) are refused.");
ABSL_FLAG(int64_t, video_max_source_frames, kDefaults.limits.max_frames,
          "Video files with more frames than this are refused (every frame is decoded to reach "
          "the sampled ones).");

namespace qwen::cli {

video::VideoSettings VideoSettingsFromFlags() {
  video::VideoSettings s;
  s.defaults.fps = absl::GetFlag(FLAGS_video_fps);
  s.max_fps = absl::GetFlag(FLAGS_video_max_fps);
  s.defaults.max_frames = absl::GetFlag(FLAGS_video_max_frames);
  s.defaults.min_pixels = absl::GetFlag(FLAGS_video_min_pixels);
  s.defaults.max_pixels = absl::GetFlag(FLAGS_video_max_pixels);
  const int64_t bytes = absl::GetFlag(FLAGS_video_max_bytes);
  s.limits.max_bytes = bytes > 0 ? static_cast<size_t>(bytes) : 0;
  s.limits.max_duration_seconds = absl::GetFlag(FLAGS_video_max_duration);
  s.limits.max_frame_pixels = absl::GetFlag(FLAGS_video_max_frame_pixels);
  s.limits.max_frames = absl::GetFlag(FLAGS_video_max_source_frames);
  return s;
}

}  // namespace qwen::cli

// The one place that opens a video with FFmpeg: the container chosen from the leading bytes and
// checked against the allow-list, the bytes read from memory, no other IO ever opened, the video
// stream and its decoder chosen (also from an allow-list). Internal to inference/video.
#ifndef QWEN_INFERENCE_VIDEO_FFMPEG_INPUT_H_
#define QWEN_INFERENCE_VIDEO_FFMPEG_INPUT_H_

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "inference/video/video.h"

namespace qwen::video::internal {

// An opened input: the demuxer over the bytes (which must outlive it) and the chosen stream.
// Not thread-safe; each user opens its own.
struct Input {
  Input() = default;
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  ~Input();

  AVFormatContext* fmt = nullptr;
  AVIOContext* io = nullptr;
  // The memory the custom IO reads.
  const uint8_t* data = nullptr;
  int64_t size = 0;
  int64_t pos = 0;

  int stream = -1;                   // index of the video stream in fmt
  const AVCodec* decoder = nullptr;  // allow-listed decoder for it
  std::string container;             // "mp4", "matroska", "gif"

  AVStream* video() const { return fmt->streams[stream]; }
};

// Opens `bytes` (refusing what is outside the allow-list, with INVALID_ARGUMENT prefixed by
// `name`), picks the first video stream that is not a cover picture and tells the demuxer to
// drop every other stream's packets. Checks the header's frame size and duration against
// `limits` (the bytes are the caller's to check first).
absl::StatusOr<std::unique_ptr<Input>> OpenInput(absl::Span<const uint8_t> bytes,
                                                 const VideoLimits& limits, absl::string_view name);

// FFmpeg's text for an error code.
std::string AvError(int err);

// The last message FFmpeg logged at error level on this thread (FFmpeg's logging is captured,
// never printed), then cleared; empty when there was none.
std::string TakeFfmpegMessage();

// INVALID_ARGUMENT "<name>: corrupt or truncated <what> (<detail>)".
absl::Status Corrupt(absl::string_view name, absl::string_view what, absl::string_view detail);

}  // namespace qwen::video::internal

#endif  // QWEN_INFERENCE_VIDEO_FFMPEG_INPUT_H_

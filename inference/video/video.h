// Video input: untrusted video files demuxed and decoded in-process with FFmpeg's libraries
// (libavformat, libavcodec, libswscale from Debian), and the frame sampling and sizing of the
// model's own video processor (Qwen3-VL's, which Qwen3.5 uses).
//
// FFmpeg can read hundreds of formats; a server reading untrusted uploads should not. Nothing
// outside an explicit allow-list is ever opened:
//   containers (recognised from their leading bytes, no probing): MP4/MOV (ISO BMFF), Matroska
//     and WebM, GIF;
//   decoders (by name): h264, hevc, vp8, vp9, libdav1d (AV1), gif;
//   input: the bytes in memory only. No protocol is ever opened: the demuxer's io_open (MOV data
//     references, any other file it might want) is refused and the protocol whitelist is empty.
// Limits (VideoLimits) are checked as early as the data allows, each refusal an
// INVALID_ARGUMENT that names the limit.
//
// Pipeline: ProbeVideo (demux only: size, frame count, presentation times; cheap, run by the
// front end to plan the prompt) -> PlanVideo (the model's sampling and resize) -> FrameReader
// (decodes in presentation order and hands out the planned frames as RGB; run by the worker as
// it encodes frame pairs).
#ifndef QWEN_INFERENCE_VIDEO_VIDEO_H_
#define QWEN_INFERENCE_VIDEO_VIDEO_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "inference/vision/image.h"
#include "inference/vision/vision.h"

namespace qwen::video {

// What an untrusted video may cost. Defaults suit a server: a phone clip of a few minutes in
// 4K passes, a feature film or a decompression bomb does not.
struct VideoLimits {
  // The file's size.
  size_t max_bytes = size_t{64} << 20;
  // First frame to the end of the last, from the container's header when it says, and from the
  // frames' timestamps.
  double max_duration_seconds = 600;
  // Width * height of a frame (3840 x 2160): checked on the container's header and on every
  // decoded frame (the decoder itself is told, so it refuses before allocating).
  int64_t max_frame_pixels = int64_t{3840} * 2160;
  // Frames in the file (every one is decoded to reach the sampled ones): 10 minutes at 60 fps.
  int64_t max_frames = 36000;
};

// What demuxing (no decoding) says about a video.
struct VideoInfo {
  std::string container;  // "mp4" (MP4/MOV), "matroska" (Matroska/WebM) or "gif"
  std::string codec;      // the decoder: "h264", "hevc", "vp8", "vp9", "libdav1d", "gif"
  int width = 0;          // frame size from the container
  int height = 0;
  // Frames in presentation order and when each is shown, in seconds from the first. These are
  // the frames' own timestamps (so a variable-rate file, an animated GIF's frame delays, keeps
  // its real times); a file without timestamps gets i / frame rate.
  int64_t n_frames = 0;
  std::vector<double> frame_times;
  // The same times in the stream's time base: the reader finds frame i by this timestamp (its
  // presentation time). Empty for a file without timestamps (frames are then found by index).
  std::vector<int64_t> frame_pts;
  // From the first frame to the end of the last (the last frame lasts its own duration, or the
  // mean interval when the file does not say).
  double duration_seconds = 0;
};

// The container recognised from the leading bytes ("mp4", "matroska", "gif"), or empty.
absl::string_view SniffVideoContainer(absl::Span<const uint8_t> bytes);

// The allow-lists, for GetModelInfo and help texts: containers ("mp4", "mov", "webm",
// "matroska", "gif") and codecs ("h264", "hevc", "vp8", "vp9", "av1", "gif").
std::vector<absl::string_view> AcceptedContainers();
std::vector<absl::string_view> AcceptedCodecs();

// Demuxes the whole file (nothing is decoded) and returns its frame count, times and size.
// INVALID_ARGUMENT, prefixed with `name`, for: an unknown container; a codec outside the
// allow-list; no video stream or no frame; a corrupt or truncated file (a container that does
// not parse, a packet that cannot be read, fewer frames than the header promises); and each
// limit, naming it ("... is longer than the limit of 600 s (max_duration_seconds)"). Thread-safe.
absl::StatusOr<VideoInfo> ProbeVideo(absl::Span<const uint8_t> bytes, const VideoLimits& limits,
                                     absl::string_view name = "video");

// ---------------------------------------------------------------------------------------------
// Sampling and sizing: the model's video processor (Qwen3-VL's Qwen3VLVideoProcessor).

// The processor's knobs; the defaults are the model's (video_preprocessor_config.json of
// Qwen3.5: fps 2, 4 to 768 frames, 4,096 to 25,165,824 pixels for the whole video).
struct VideoOptions {
  double fps = 2.0;  // frames sampled per second of video
  int min_frames = 4;
  int max_frames = 768;
  // Bounds of frames * height * width over the sampled frames (the whole video's pixels): the
  // more frames, the smaller each.
  int64_t min_pixels = 4096;
  int64_t max_pixels = 25165824;
};

// The default ceiling of a server (and of `qwen generate`) on a video's pixels, frames x height x
// width of the sampled frames: 4,194,304, at most 2,048 video tokens (a token is 32 x 32 pixels
// of a frame pair). The model's processor allows 25,165,824 (12,288 tokens): more than a
// 4,096-token context holds, and many minutes of encoding per video on a CPU.
inline constexpr int64_t kDefaultMaxPixels = int64_t{4096} * 32 * 32;

// What a caller (a server, `qwen generate`) lets a request ask for, and the limits on its files.
struct VideoSettings {
  // fps, min_frames and min_pixels are the defaults; max_frames and max_pixels the defaults and
  // the most a request may ask for.
  VideoOptions defaults = [] {
    VideoOptions o;
    o.max_pixels = kDefaultMaxPixels;
    return o;
  }();
  double max_fps = 8;  // the most fps a request may ask for
  VideoLimits limits;
};

// Which frames the model sees, and how large.
struct VideoPlan {
  // Indices into the file's frames (VideoInfo order), an even count: the sampled frames, the
  // last one repeated when their number is odd (the processor pads to the temporal patch size).
  std::vector<int64_t> frames;
  std::vector<double> times;  // seconds, per entry of `frames`
  // One entry per frame pair (frames 2k and 2k+1): the mean of their times, the timestamp the
  // prompt shows for the pair ("<1.5 seconds>").
  std::vector<double> pair_times;
  // Every frame is resized to this grid (aspect kept as the 32-pixel grid allows).
  vision::ImageGrid grid;
  int64_t n_pairs() const { return static_cast<int64_t>(pair_times.size()); }
  int64_t tokens_per_pair() const { return grid.n_tokens(); }
};

// The processor's sample_frames: n = floor(duration * fps), clamped to [min_frames, max_frames]
// and to the frames there are; indices round(linspace(0, n_frames - 1, n)) with numpy's rounding
// (half to even); max_frames wins over min_frames. INVALID_ARGUMENT for options out of range
// (fps <= 0, max_frames or min_frames < 1, max_pixels < min_pixels).
absl::StatusOr<std::vector<int64_t>> SampleFrameIndices(int64_t n_frames, double duration_seconds,
                                                        const VideoOptions& options);

// The processor's smart_resize for videos, with factor = patch * merge (32) and temporal factor
// 2: sides rounded to multiples of 32 (half to even), then scaled so that
// round(n_frames / 2) * 2 * h * w lies within [min_pixels, max_pixels]; sides below 32 are first
// scaled up to 32. A video with 1 frame is allowed (it is encoded as a pair of that frame; the
// processor refuses it). INVALID_ARGUMENT for an aspect ratio above 200 or bad bounds.
absl::StatusOr<vision::ImageGrid> PlanVideoGrid(int64_t n_frames, int width, int height,
                                                const vision::VisionConfig& config,
                                                const VideoOptions& options);

// Frames sampled from a probed file (SampleFrameIndices + PlanVideoGrid + the pair times).
absl::StatusOr<VideoPlan> PlanVideo(const VideoInfo& info, const vision::VisionConfig& config,
                                    const VideoOptions& options);

// Frames the client sampled itself (times in seconds, in order): no sampling, an odd count
// padded with the last frame, the grid as PlanVideoGrid. INVALID_ARGUMENT for times that are
// not finite, negative or decreasing, and for more frames than options.max_frames.
absl::StatusOr<VideoPlan> PlanFrames(const std::vector<double>& times, int width, int height,
                                     const vision::VisionConfig& config,
                                     const VideoOptions& options);

// ---------------------------------------------------------------------------------------------
// Decoding.

// Decodes one video in presentation order and hands out frames as 8-bit RGB of the container's
// frame size (a frame of another size, as a stream may change resolution, is scaled to it).
// Frames must be asked for in non-decreasing order (the reader starts over for an earlier one).
// The file is re-checked against `limits` as it is read.
//
// Thread-compatible: one thread at a time.
class FrameReader {
 public:
  // `info` is ProbeVideo's answer for the same bytes. `cancelled`, when set, is polled for each
  // decoded frame: a reader asked to stop returns CANCELLED.
  static absl::StatusOr<std::unique_ptr<FrameReader>> Open(std::shared_ptr<const std::string> bytes,
                                                           const VideoInfo& info,
                                                           const VideoLimits& limits,
                                                           std::string name = "video");
  ~FrameReader();

  // The frame shown at the time of frame `index` of `info` (that frame, in any sane file; for a
  // frame the decoder does not show, such as an invisible VP8 reference frame, the one shown
  // before it). INVALID_ARGUMENT naming the frame for corrupt data the decoder cannot read.
  absl::StatusOr<vision::RgbImage> Frame(int64_t index,
                                         const std::function<bool()>& cancelled = nullptr);

 private:
  struct State;
  FrameReader() = default;
  absl::Status Restart();
  std::shared_ptr<const std::string> bytes_;
  VideoInfo info_;
  VideoLimits limits_;
  std::string name_;
  std::unique_ptr<State> state_;
};

// Decodes the frames of `plan` (ProbeVideo, then FrameReader over plan.frames): for tests and
// tools that want them all at once. The worker asks for them a pair at a time instead.
absl::StatusOr<std::vector<vision::RgbImage>> DecodePlannedFrames(absl::Span<const uint8_t> bytes,
                                                                  const VideoInfo& info,
                                                                  const VideoPlan& plan,
                                                                  const VideoLimits& limits,
                                                                  absl::string_view name = "video");

}  // namespace qwen::video

#endif  // QWEN_INFERENCE_VIDEO_VIDEO_H_

// `qwen bench --only video`: what a video costs on the vision tower, from a synthetic H.264 clip
// made here (no download, no ffmpeg program).
#ifndef QWEN_CLI_BENCH_VIDEO_H_
#define QWEN_CLI_BENCH_VIDEO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwen::cli {

struct VideoBenchRow {
  std::string name;
  std::string unit;
  std::vector<double> samples;  // one per repetition
};

struct VideoBenchOptions {
  std::string mmproj_path;
  int threads = 1;
  int repeats = 3;
  int side = 448;       // square frames of this many pixels
  double seconds = 4;   // clip length
  int source_fps = 30;  // frames per second of the clip (the model samples 2)
};

// Makes a clip of moving gradients (H.264 in Matroska with libavcodec's libx264, or VP9 when
// Debian's FFmpeg has no libx264), then per repetition: probes and plans it as a server would
// (the model's 2 fps, so one frame pair per second of video; the server's default pixel
// ceiling), decodes and resizes the sampled frames, and encodes every frame pair on the tower.
// Rows: the tower per frame pair, decoding and resizing per second of video, everything per
// second of video, and the clip end to end.
absl::StatusOr<std::vector<VideoBenchRow>> MeasureVideo(const VideoBenchOptions& options);

}  // namespace qwen::cli

#endif  // QWEN_CLI_BENCH_VIDEO_H_

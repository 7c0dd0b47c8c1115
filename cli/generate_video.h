// `qwen generate --video`: the --video files probed, planned and written into the prompt text,
// and their frame pairs encoded.
#ifndef QWEN_CLI_GENERATE_VIDEO_H_
#define QWEN_CLI_GENERATE_VIDEO_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/model/model.h"
#include "inference/ops/compute.h"
#include "inference/video/frame_pairs.h"
#include "inference/video/video.h"
#include "inference/vision/vision.h"
#include "nlohmann/json.hpp"

namespace qwen::cli {

// The videos of one prompt.
struct PromptVideos {
  struct One {
    std::string path;
    video::VideoInfo info;
    std::shared_ptr<video::PairEncoder> pairs;
    std::vector<model::ImageSpan> spans;  // its frame pairs' tokens in the prompt
  };
  std::vector<One> videos;

  // Every pair's grid, in prompt order (for multimodal::ExpandVisionPads).
  std::vector<vision::ImageGrid> PairGrids() const;
  // Hands the pair spans ExpandVisionPads found to the videos, in order.
  void SetSpans(const std::vector<model::ImageSpan>& pairs);
  // {"file", "width", "height", "source_frames", "duration_s", "frames", "rows", "cols",
  //  "tokens", "pairs": [{"timestamp", "token_offset", "positions"}]} per video.
  nlohmann::ordered_json ToJson() const;
};

// Reads, probes and plans each file (errors name it: "--video PATH: ...") and replaces the
// videos' placeholders in `prompt_text` by their timestamped frame pairs.
absl::StatusOr<PromptVideos> PrepareVideos(const std::vector<std::string>& paths,
                                           std::shared_ptr<const vision::VisionEncoder> encoder,
                                           const video::VideoSettings& settings,
                                           std::string* prompt_text);

}  // namespace qwen::cli

#endif  // QWEN_CLI_GENERATE_VIDEO_H_

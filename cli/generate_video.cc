#include "cli/generate_video.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/multimodal/video_prompt.h"

namespace qwen::cli {

std::vector<vision::ImageGrid> PromptVideos::PairGrids() const {
  std::vector<vision::ImageGrid> grids;
  for (const One& v : videos) {
    grids.insert(grids.end(), static_cast<size_t>(v.pairs->plan().n_pairs()), v.pairs->plan().grid);
  }
  return grids;
}

void PromptVideos::SetSpans(const std::vector<model::ImageSpan>& pairs) {
  size_t next = 0;
  for (One& v : videos) {
    const size_t n = static_cast<size_t>(v.pairs->plan().n_pairs());
    v.spans.assign(pairs.begin() + next, pairs.begin() + next + n);
    next += n;
  }
}

nlohmann::ordered_json PromptVideos::ToJson() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const One& v : videos) {
    const video::VideoPlan& plan = v.pairs->plan();
    nlohmann::ordered_json pairs = nlohmann::ordered_json::array();
    for (size_t k = 0; k < v.spans.size(); ++k) {
      pairs.push_back({{"timestamp", plan.pair_times[k]},
                       {"token_offset", v.spans[k].offset},
                       {"positions", multimodal::ImagePositions(plan.grid)}});
    }
    out.push_back({{"file", v.path},
                   {"width", v.info.width},
                   {"height", v.info.height},
                   {"source_frames", v.info.n_frames},
                   {"duration_s", v.info.duration_seconds},
                   {"frames", plan.frames},
                   {"rows", plan.grid.rows()},
                   {"cols", plan.grid.cols()},
                   {"tokens", plan.n_pairs() * plan.tokens_per_pair()},
                   {"pairs", std::move(pairs)}});
  }
  return out;
}

absl::StatusOr<PromptVideos> PrepareVideos(const std::vector<std::string>& paths,
                                           std::shared_ptr<const vision::VisionEncoder> encoder,
                                           const video::VideoSettings& settings,
                                           std::string* prompt_text) {
  PromptVideos out;
  std::vector<std::vector<double>> times;
  for (const std::string& path : paths) {
    const std::string name = absl::StrCat("--video ", path);
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(name, ": cannot read the file"));
    std::stringstream ss;
    ss << in.rdbuf();
    auto bytes = std::make_shared<const std::string>(ss.str());
    PromptVideos::One v;
    v.path = path;
    ASSIGN_OR_RETURN(
        v.info,
        video::ProbeVideo(
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
            settings.limits, name));
    absl::StatusOr<video::VideoPlan> plan =
        video::PlanVideo(v.info, encoder->config(), settings.defaults);
    if (!plan.ok())
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", plan.status().message()));
    times.push_back(plan->pair_times);
    v.pairs = std::make_shared<video::PairEncoder>(
        encoder, video::FileFrames(std::move(bytes), v.info, settings.limits, name),
        *std::move(plan));
    out.videos.push_back(std::move(v));
  }
  ASSIGN_OR_RETURN(*prompt_text, multimodal::ExpandVideoText(*prompt_text, times, "--video"));
  return out;
}

}  // namespace qwen::cli

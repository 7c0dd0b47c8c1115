#include "service/text_model.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/template_capabilities.h"
#include "inference/common/status_macros.h"

namespace qwen::service {

absl::StatusOr<std::unique_ptr<TextModel>> TextModel::Load(const std::string& path,
                                                           const VisionOptions& vision) {
  std::unique_ptr<TextModel> m(new TextModel());
  m->path_ = path;
  auto file = gguf::GgufFile::Open(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  }
  m->file_ = std::move(*file);
  ASSIGN_OR_RETURN(m->config_, model::ModelConfig::FromGguf(*m->file_));
  // The workers load the MTP head whenever the file has one (model::Model::Load refuses a
  // malformed one): their sequence states, which the memory budgets size, hold its KV cache.
  m->config_.has_mtp = m->config_.n_nextn > 0;
  ASSIGN_OR_RETURN(m->tokenizer_, tokenizer::Tokenizer::FromGguf(*m->file_));
  if (m->file_->Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(m->chat_template_, chat::ChatTemplate::FromGguf(*m->file_));
    const chat::TemplateCapabilities caps = chat::ProbeCapabilities(*m->chat_template_);
    m->supports_tools_ = caps.tools;
    m->supports_reasoning_ = caps.reasoning;
  }
  m->eog_ids_ = m->tokenizer_->end_of_generation_ids();
  m->vision_options_ = vision;
  if (!vision.mmproj_path.empty()) {
    ASSIGN_OR_RETURN(m->vision_,
                     multimodal::LoadMmproj(vision.mmproj_path, m->config_, &m->vision_file_));
    ASSIGN_OR_RETURN(m->image_tokens_, multimodal::FindImageTokenIds(*m->tokenizer_));
    if (vision.preprocess.min_pixels > vision.preprocess.max_pixels ||
        vision.preprocess.max_pixels <
            int64_t{m->vision_->config().align()} * m->vision_->config().align()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--image_min_pixels (", vision.preprocess.min_pixels,
                       ") must be at most --image_max_pixels (", vision.preprocess.max_pixels,
                       "), which must hold one image token"));
    }
    const video::VideoSettings& v = vision.video;
    if (!(v.defaults.fps > 0) || !(v.max_fps >= v.defaults.fps) || v.defaults.max_frames < 1 ||
        v.defaults.min_frames < 1 || v.defaults.min_pixels < 1 ||
        v.defaults.max_pixels < v.defaults.min_pixels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "video settings: need 0 < --video_fps (", v.defaults.fps, ") <= --video_max_fps (",
          v.max_fps, "), --video_max_frames (", v.defaults.max_frames,
          ") >= 1 and 1 <= --video_min_pixels (", v.defaults.min_pixels,
          ") <= --video_max_pixels (", v.defaults.max_pixels, ")"));
    }
  }
  return m;
}

}  // namespace qwen::service

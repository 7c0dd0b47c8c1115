#include "inference/multimodal/image_prompt.h"

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/gguf/gguf_file.h"

namespace qwen::multimodal {

absl::StatusOr<ImageTokenIds> FindImageTokenIds(const tokenizer::Tokenizer& tokenizer) {
  ImageTokenIds ids;
  ids.vision_start = tokenizer.PieceToId("<|vision_start|>");
  ids.image_pad = tokenizer.PieceToId("<|image_pad|>");
  ids.vision_end = tokenizer.PieceToId("<|vision_end|>");
  ids.video_pad = tokenizer.PieceToId("<|video_pad|>");
  if (ids.vision_start < 0 || ids.image_pad < 0 || ids.vision_end < 0) {
    return absl::FailedPreconditionError(
        "the model's vocabulary has no <|vision_start|>, <|image_pad|> and <|vision_end|> tokens");
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<vision::VisionEncoder>> LoadMmproj(
    const std::string& path, const model::ModelConfig& text,
    std::shared_ptr<const gguf::GgufFile>* file_out) {
  auto with_path = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("mmproj ", path, ": ", s.message()));
  };
  absl::StatusOr<std::unique_ptr<gguf::GgufFile>> file = gguf::GgufFile::Open(path);
  if (!file.ok()) return with_path(file.status());
  std::shared_ptr<const gguf::GgufFile> shared(std::move(*file));
  if (file_out != nullptr) *file_out = shared;
  absl::StatusOr<std::unique_ptr<vision::VisionEncoder>> encoder =
      vision::VisionEncoder::Load(shared);
  if (!encoder.ok()) return with_path(encoder.status());
  int sections = 0;
  for (int v : text.rope_sections) sections += v;
  if (sections == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mmproj ", path,
                     ": the text model has no M-RoPE sections (rope.dimension_sections), so "
                     "it cannot place image tokens"));
  }
  if ((*encoder)->projection_dim() != text.n_embd) {
    return absl::FailedPreconditionError(
        absl::StrCat("mmproj ", path, ": its projection width ", (*encoder)->projection_dim(),
                     " differs from the text model's embedding width ", text.n_embd,
                     " (a vision tower made for another model)"));
  }
  return encoder;
}

absl::StatusOr<std::vector<model::ImageSpan>> ExpandImagePads(
    std::vector<int32_t>& ids, int32_t image_pad, absl::Span<const vision::ImageGrid> grids,
    absl::string_view field) {
  size_t placeholders = 0;
  for (int32_t id : ids) placeholders += id == image_pad;
  if (placeholders != grids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the prompt has ", placeholders,
                                                   " image placeholders (<|image_pad|>) for ",
                                                   grids.size(), " images"));
  }
  std::vector<model::ImageSpan> spans;
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id != image_pad) {
      out.push_back(id);
      continue;
    }
    const vision::ImageGrid& g = grids[spans.size()];
    spans.push_back({static_cast<int64_t>(out.size()), g.rows(), g.cols()});
    out.insert(out.end(), g.n_tokens(), image_pad);
  }
  ids = std::move(out);
  return spans;
}

}  // namespace qwen::multimodal

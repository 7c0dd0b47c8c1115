// Image input on the text side of Qwen3.5: the chat template writes one
// <|vision_start|><|image_pad|><|vision_end|> per image; the model reads the image's
// rows * cols embedding rows where the single <|image_pad|> stood. These helpers load and check
// the vision tower's file and turn a prompt's placeholders into the image's tokens.
#ifndef QWEN_INFERENCE_MULTIMODAL_IMAGE_PROMPT_H_
#define QWEN_INFERENCE_MULTIMODAL_IMAGE_PROMPT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "inference/model/config.h"
#include "inference/model/model.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/vision/vision.h"

namespace qwen::multimodal {

// Ids of the image markers in a vocabulary.
struct ImageTokenIds {
  int32_t vision_start = -1;
  int32_t image_pad = -1;
  int32_t vision_end = -1;
  // A video's frame pairs take <|video_pad|> tokens (video_prompt.h); -1 when the vocabulary has
  // none (no video input then).
  int32_t video_pad = -1;
};

// FAILED_PRECONDITION when the vocabulary lacks one of the three image markers.
absl::StatusOr<ImageTokenIds> FindImageTokenIds(const tokenizer::Tokenizer& tokenizer);

// Opens an mmproj GGUF, loads its vision tower and checks that its projection width equals the
// text model's embedding width. Errors name the file. `file`, when not null, receives the
// opened file (for its metadata).
absl::StatusOr<std::unique_ptr<vision::VisionEncoder>> LoadMmproj(
    const std::string& path, const model::ModelConfig& text,
    std::shared_ptr<const gguf::GgufFile>* file = nullptr);

// Replaces the k-th <|image_pad|> of `ids` by grids[k].n_tokens() copies and returns where each
// image's tokens now are. INVALID_ARGUMENT, naming `field`, when the number of placeholders
// differs from the number of images.
absl::StatusOr<std::vector<model::ImageSpan>> ExpandImagePads(
    std::vector<int32_t>& ids, int32_t image_pad, absl::Span<const vision::ImageGrid> grids,
    absl::string_view field);

// Rotary positions an image of this grid takes: max(rows, cols) (its tokens share the time
// position and spread over rows and columns).
inline int64_t ImagePositions(const vision::ImageGrid& g) { return std::max(g.rows(), g.cols()); }

}  // namespace qwen::multimodal

#endif  // QWEN_INFERENCE_MULTIMODAL_IMAGE_PROMPT_H_

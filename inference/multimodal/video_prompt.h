// Video input on the text side of Qwen3.5, as Qwen3-VL's processor (processing_qwen3_vl.py)
// does it. The chat template writes <|vision_start|><|video_pad|><|vision_end|> for a video; the
// processor replaces that text with, for each frame pair,
//
//   <T seconds><|vision_start|><|video_pad|> x tokens_per_pair<|vision_end|>
//
// where T is the mean time of the pair's two frames with one decimal ("<0.3 seconds>"). The
// timestamp is plain text, tokenized with whatever precedes it (the replacement happens before
// tokenization). Each pair then takes M-RoPE positions as an image would, and the text after it
// continues from there: the time of a pair is carried by its timestamp text, not by positions.
// docs/vision.md writes the sequence out.
#ifndef QWEN_INFERENCE_MULTIMODAL_VIDEO_PROMPT_H_
#define QWEN_INFERENCE_MULTIMODAL_VIDEO_PROMPT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "inference/model/model.h"
#include "inference/vision/vision.h"

namespace qwen::multimodal {

// What the chat template writes for a video part.
inline constexpr absl::string_view kVideoPlaceholder =
    "<|vision_start|><|video_pad|><|vision_end|>";

// The processor's f"<{t:.1f} seconds>": correctly rounded from the double, ties to even, as
// Python's formatting.
std::string TimestampText(double seconds);

// Replaces, for video k in order, the first remaining placeholder of `text` by its frame pairs
// (pair_times[k]: one timestamp per pair), each with a single <|video_pad|> that
// ExpandVisionPads later widens to the pair's tokens. A video's placeholder is the template's
// whole kVideoPlaceholder, or a bare <|video_pad|> when the text has none (the processor's own
// fallback). INVALID_ARGUMENT naming `field` when there are fewer placeholders than videos, or
// placeholders left over.
absl::StatusOr<std::string> ExpandVideoText(absl::string_view text,
                                            absl::Span<const std::vector<double>> pair_times,
                                            absl::string_view field);

// Where the vision tokens of a prompt went.
struct VisionSpans {
  std::vector<model::ImageSpan> images;  // one per image, in prompt order
  std::vector<model::ImageSpan> pairs;   // one per frame pair of all videos, in prompt order
  // Both, sorted by offset: what model::MropePositions and the engine take.
  std::vector<model::ImageSpan> all() const;
};

// After tokenization: the k-th <|image_pad|> becomes image_grids[k].n_tokens() copies and the
// j-th <|video_pad|> pair_grids[j].n_tokens() copies, in one pass. INVALID_ARGUMENT naming
// `field` when the number of either placeholder differs from the number of grids.
absl::StatusOr<VisionSpans> ExpandVisionPads(std::vector<int32_t>& ids, int32_t image_pad,
                                             absl::Span<const vision::ImageGrid> image_grids,
                                             int32_t video_pad,
                                             absl::Span<const vision::ImageGrid> pair_grids,
                                             absl::string_view field);

}  // namespace qwen::multimodal

#endif  // QWEN_INFERENCE_MULTIMODAL_VIDEO_PROMPT_H_

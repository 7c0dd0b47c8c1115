#include "inference/multimodal/video_prompt.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qwen::multimodal {
namespace {

constexpr char kVideoPad[] = "<|video_pad|>";

}  // namespace

std::string TimestampText(double seconds) {
  // glibc's printf rounds the exact binary value, ties to even: the digits Python prints.
  return absl::StrFormat("<%.1f seconds>", seconds);
}

absl::StatusOr<std::string> ExpandVideoText(absl::string_view text,
                                            absl::Span<const std::vector<double>> pair_times,
                                            absl::string_view field) {
  const std::string placeholder(kVideoPlaceholder.data(), kVideoPlaceholder.size());
  const std::string pad = kVideoPad;
  std::string out(text);
  // Where the next search starts: the text a replacement wrote is never searched again.
  size_t from = 0;
  for (size_t k = 0; k < pair_times.size(); ++k) {
    std::string expanded;
    for (double t : pair_times[k]) {
      absl::StrAppend(&expanded, TimestampText(t), "<|vision_start|>", kVideoPad, "<|vision_end|>");
    }
    size_t at = out.find(placeholder, from);
    size_t len = placeholder.size();
    if (at == std::string::npos) {
      at = out.find(pad, from);
      len = pad.size();
    }
    if (at == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": the prompt has ", k,
                                                     " video placeholders (<|video_pad|>) for ",
                                                     pair_times.size(), " videos"));
    }
    out.replace(at, len, expanded);
    from = at + expanded.size();
  }
  if (out.find(pad, from) != std::string::npos) {
    size_t extra = 0;
    for (size_t at = out.find(pad, from); at != std::string::npos;
         at = out.find(pad, at + pad.size())) {
      ++extra;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": the prompt has ", pair_times.size() + extra,
                     " video placeholders (<|video_pad|>) for ", pair_times.size(), " videos"));
  }
  return out;
}

std::vector<model::ImageSpan> VisionSpans::all() const {
  std::vector<model::ImageSpan> out = images;
  out.insert(out.end(), pairs.begin(), pairs.end());
  std::sort(out.begin(), out.end(), [](const model::ImageSpan& a, const model::ImageSpan& b) {
    return a.offset < b.offset;
  });
  return out;
}

absl::StatusOr<VisionSpans> ExpandVisionPads(std::vector<int32_t>& ids, int32_t image_pad,
                                             absl::Span<const vision::ImageGrid> image_grids,
                                             int32_t video_pad,
                                             absl::Span<const vision::ImageGrid> pair_grids,
                                             absl::string_view field) {
  size_t images = 0, pairs = 0;
  for (int32_t id : ids) {
    images += id == image_pad;
    pairs += id == video_pad && video_pad >= 0;
  }
  if (images != image_grids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the prompt has ", images,
                                                   " image placeholders (<|image_pad|>) for ",
                                                   image_grids.size(), " images"));
  }
  if (pairs != pair_grids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the prompt has ", pairs,
                                                   " video frame placeholders (<|video_pad|>) for ",
                                                   pair_grids.size(), " frame pairs"));
  }
  VisionSpans spans;
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    const bool image = id == image_pad;
    const bool pair = video_pad >= 0 && id == video_pad;
    if (!image && !pair) {
      out.push_back(id);
      continue;
    }
    const vision::ImageGrid& g =
        image ? image_grids[spans.images.size()] : pair_grids[spans.pairs.size()];
    (image ? spans.images : spans.pairs)
        .push_back({static_cast<int64_t>(out.size()), g.rows(), g.cols()});
    out.insert(out.end(), g.n_tokens(), id);
  }
  ids = std::move(out);
  return spans;
}

}  // namespace qwen::multimodal

#include "service/request_videos.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/multimodal/video_prompt.h"
#include "service/data_url.h"
#include "service/field_checks.h"
#include "service/request_images.h"

namespace qwen::service {
namespace {

constexpr char kExample[] = "data:video/mp4;base64,...";

// The same status with `field` in front of its message.
absl::Status Prefixed(absl::string_view field, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status CheckMimeType(const std::string& mime, const std::string& bytes,
                           absl::string_view field) {
  if (mime.empty()) return absl::OkStatus();
  const std::string m = absl::AsciiStrToLower(mime);
  const char* want = m == "video/mp4" || m == "video/quicktime" ? "mp4"
                     : m == "video/webm" || m == "video/x-matroska" || m == "video/matroska"
                         ? "matroska"
                     : m == "image/gif" ? "gif"
                                        : nullptr;
  if (want == nullptr) {
    return FieldError(absl::StrCat(field, ".mime_type"),
                      absl::StrCat("\"", mime,
                                   "\" is not video/mp4, video/quicktime, video/webm, "
                                   "video/x-matroska or image/gif"));
  }
  const absl::string_view sniffed = video::SniffVideoContainer(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  if (!sniffed.empty() && sniffed != want) {
    return FieldError(absl::StrCat(field, ".mime_type"),
                      absl::StrCat("says ", mime, " but the data is ", sniffed));
  }
  return absl::OkStatus();
}

// The request's sampling within the server's maxima.
absl::StatusOr<video::VideoOptions> RequestOptions(const v1::Video& v,
                                                   const video::VideoSettings& s,
                                                   absl::string_view field) {
  video::VideoOptions o = s.defaults;
  if (v.has_fps()) {
    if (!(v.fps() > 0) || !std::isfinite(v.fps()) || v.fps() > s.max_fps) {
      return FieldError(absl::StrCat(field, ".fps"),
                        absl::StrCat("must be in (0, ", s.max_fps, "] (the server's maximum)"));
    }
    o.fps = v.fps();
  }
  if (v.has_max_frames()) {
    if (v.max_frames() < 1 || v.max_frames() > static_cast<uint32_t>(s.defaults.max_frames)) {
      return FieldError(
          absl::StrCat(field, ".max_frames"),
          absl::StrCat("must be in [1, ", s.defaults.max_frames, "] (the server's maximum)"));
    }
    o.max_frames = static_cast<int>(v.max_frames());
  }
  if (v.has_max_pixels()) {
    if (v.max_pixels() < 1 || v.max_pixels() > static_cast<uint64_t>(s.defaults.max_pixels)) {
      return FieldError(
          absl::StrCat(field, ".max_pixels"),
          absl::StrCat("must be in [1, ", s.defaults.max_pixels, "] (the server's maximum)"));
    }
    o.max_pixels = static_cast<int64_t>(v.max_pixels());
  }
  if (v.has_min_pixels()) {
    if (v.min_pixels() < 1 || v.min_pixels() > static_cast<uint64_t>(o.max_pixels)) {
      return FieldError(absl::StrCat(field, ".min_pixels"),
                        absl::StrCat("must be in [1, max_pixels = ", o.max_pixels, "]"));
    }
    o.min_pixels = static_cast<int64_t>(v.min_pixels());
  }
  if (o.min_pixels > o.max_pixels) o.min_pixels = o.max_pixels;
  return o;
}

std::string Sha256Hex(const std::vector<absl::string_view>& parts) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (absl::string_view p : parts) {
    // Each part with its length first: no two different lists hash alike.
    const std::string n = absl::StrCat(p.size(), ":");
    EVP_DigestUpdate(ctx, n.data(), n.size());
    EVP_DigestUpdate(ctx, p.data(), p.size());
  }
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

}  // namespace

absl::StatusOr<v1::Video> VideoFromDataUrl(absl::string_view url, absl::string_view field) {
  ASSIGN_OR_RETURN(DataUrl parsed, ParseDataUrl(url, field, kExample));
  RETURN_IF_ERROR(CheckMimeType(parsed.mime_type, parsed.bytes, field));
  v1::Video v;
  v.set_data(std::move(parsed.bytes));
  v.set_mime_type(parsed.mime_type);
  return v;
}

absl::StatusOr<std::string> VideoBytes(const v1::Video& video, const std::string& field) {
  ASSIGN_OR_RETURN(DataUrl media,
                   MediaBytes(video.data(), video.url(), video.mime_type(), field, kExample));
  RETURN_IF_ERROR(CheckMimeType(media.mime_type, media.bytes, field));
  return std::move(media.bytes);
}

absl::StatusOr<std::vector<PlacedVideo>> PlanVideos(const std::vector<VideoPart>& parts,
                                                    const TextModel& model) {
  std::vector<PlacedVideo> placed;
  if (parts.empty()) return placed;
  if (model.vision() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(parts[0].field,
                     ": this server takes no videos (it runs without a vision model; start it "
                     "with --mmproj)"));
  }
  if (!model.supports_video()) {
    return absl::FailedPreconditionError(
        absl::StrCat(parts[0].field, ": the model's vocabulary has no <|video_pad|> token"));
  }
  const video::VideoSettings& settings = model.vision_options().video;
  const vision::VisionConfig& config = model.vision()->config();
  for (const VideoPart& part : parts) {
    const v1::Video& v = *part.video;
    PlacedVideo p;
    p.field = part.field;
    p.limits = settings.limits;
    p.frame_limits = model.vision_options().decode;
    ASSIGN_OR_RETURN(p.options, RequestOptions(v, settings, part.field));
    if (v.frames_size() > 0) {
      if (!v.data().empty() || !v.url().empty()) {
        return FieldError(part.field, "set exactly one of data, url and frames");
      }
      if (v.has_fps()) {
        return FieldError(absl::StrCat(part.field, ".fps"),
                          "applies to a video file, not to frames the client sampled");
      }
      if (!v.mime_type().empty()) {
        return FieldError(absl::StrCat(part.field, ".mime_type"),
                          "applies to a video file; give each frame's in its image");
      }
      if (v.frames_size() > p.options.max_frames) {
        return FieldError(absl::StrCat(part.field, ".frames"),
                          absl::StrCat(v.frames_size(), " frames is more than max_frames (",
                                       p.options.max_frames, ")"));
      }
      for (int k = 0; k < v.frames_size(); ++k) {
        const std::string ffield = absl::StrCat(part.field, ".frames[", k, "]");
        ASSIGN_OR_RETURN(std::string bytes, ImageBytes(v.frames(k).image(), ffield + ".image"));
        // Only the header is read here, as for images (the size is all the plan needs; the
        // limits of --max_image_bytes and --max_image_megapixels apply to each frame): the
        // worker decodes the pixels and refuses a corrupt body then, naming the frame.
        ASSIGN_OR_RETURN(
            vision::ImageInfo header,
            vision::ReadImageInfo(
                absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                p.frame_limits, ffield + ".image"));
        if (k == 0) {
          p.info.width = header.width;
          p.info.height = header.height;
        } else if (header.width != p.info.width || header.height != p.info.height) {
          return FieldError(
              ffield,
              absl::StrCat(header.width, "x", header.height, " differs from the first frame's ",
                           p.info.width, "x", p.info.height, " (frames of a video share a size)"));
        }
        p.frames.push_back(std::move(bytes));
        p.frame_times.push_back(v.frames(k).timestamp());
      }
      p.info.n_frames = v.frames_size();
      p.info.frame_times = p.frame_times;
      p.info.duration_seconds = p.frame_times.back();
      absl::StatusOr<video::VideoPlan> plan =
          video::PlanFrames(p.frame_times, p.info.width, p.info.height, config, p.options);
      if (!plan.ok()) return Prefixed(part.field, plan.status());
      p.plan = *std::move(plan);
    } else {
      ASSIGN_OR_RETURN(p.bytes, VideoBytes(v, part.field));
      ASSIGN_OR_RETURN(
          p.info,
          video::ProbeVideo(
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.bytes.data()), p.bytes.size()),
              p.limits, part.field));
      absl::StatusOr<video::VideoPlan> plan = video::PlanVideo(p.info, config, p.options);
      if (!plan.ok()) return Prefixed(part.field, plan.status());
      p.plan = *std::move(plan);
    }
    placed.push_back(std::move(p));
  }
  return placed;
}

absl::StatusOr<std::string> ExpandVideoPlaceholders(const std::string& prompt,
                                                    const std::vector<PlacedVideo>& videos,
                                                    absl::string_view field) {
  if (videos.empty()) return prompt;
  std::vector<std::vector<double>> times;
  for (const PlacedVideo& v : videos) times.push_back(v.plan.pair_times);
  return multimodal::ExpandVideoText(prompt, times, field);
}

absl::Status PlaceVideoTokens(std::vector<PlacedVideo>* videos, const TextModel& model,
                              std::vector<int32_t>* ids, std::vector<model::ImageSpan*> images,
                              absl::string_view field) {
  if (videos->empty()) return absl::OkStatus();
  std::vector<vision::ImageGrid> grids;
  for (const PlacedVideo& v : *videos) {
    grids.insert(grids.end(), static_cast<size_t>(v.plan.n_pairs()), v.plan.grid);
  }
  ASSIGN_OR_RETURN(multimodal::VisionSpans spans,
                   multimodal::ExpandVisionPads(*ids, /*image_pad=*/-1, {},
                                                model.image_tokens().video_pad, grids, field));
  size_t next = 0;
  for (PlacedVideo& v : *videos) {
    v.pairs.assign(spans.pairs.begin() + next, spans.pairs.begin() + next + v.plan.n_pairs());
    next += v.plan.n_pairs();
  }
  // An image's offset was counted with every pair before it as one token.
  for (model::ImageSpan* image : images) {
    int64_t shift = 0, widened = 0;
    for (const model::ImageSpan& pair : spans.pairs) {
      const int64_t before = pair.offset - widened;  // the pair's offset before widening
      if (before > image->offset) break;
      const int64_t grow = int64_t{pair.rows} * pair.cols - 1;
      shift += grow;
      widened += grow;
    }
    image->offset += shift;
  }
  return absl::OkStatus();
}

std::string VideoKey(const PlacedVideo& v) {
  std::vector<absl::string_view> parts;
  std::string times;
  if (v.frames.empty()) {
    parts.push_back(v.bytes);
  } else {
    for (const std::string& f : v.frames) parts.push_back(f);
    for (double t : v.frame_times) absl::StrAppend(&times, t, ",");
    parts.push_back(times);
  }
  std::string plan = absl::StrCat(v.plan.grid.patch_rows, "x", v.plan.grid.patch_cols, "|");
  for (int64_t f : v.plan.frames) absl::StrAppend(&plan, f, ",");
  parts.push_back(plan);
  return Sha256Hex(parts);
}

int64_t VideoTokenCount(const PlacedVideo& v) {
  return v.plan.n_pairs() * v.plan.tokens_per_pair();
}

void DescribeVideos(const std::vector<PlacedVideo>& videos,
                    google::protobuf::RepeatedPtrField<v1::VideoTokens>* out) {
  for (const PlacedVideo& v : videos) {
    v1::VideoTokens* t = out->Add();
    t->set_token_offset(v.pairs.empty() ? 0 : static_cast<uint32_t>(v.pairs[0].offset));
    t->set_tokens(static_cast<uint32_t>(VideoTokenCount(v)));
    t->set_frames(static_cast<uint32_t>(v.plan.frames.size()));
    for (size_t k = 0; k < v.pairs.size(); ++k) {
      v1::VideoFramePair* pair = t->add_pairs();
      pair->set_timestamp(v.plan.pair_times[k]);
      pair->set_token_offset(static_cast<uint32_t>(v.pairs[k].offset));
      pair->set_positions(static_cast<uint32_t>(multimodal::ImagePositions(v.plan.grid)));
    }
    t->set_rows(static_cast<uint32_t>(v.plan.grid.rows()));
    t->set_cols(static_cast<uint32_t>(v.plan.grid.cols()));
    t->set_width(static_cast<uint32_t>(v.info.width));
    t->set_height(static_cast<uint32_t>(v.info.height));
    t->set_source_frames(static_cast<uint32_t>(v.info.n_frames));
    t->set_duration_seconds(v.info.duration_seconds);
  }
}

void ToWorkerVideo(const PlacedVideo& v, worker::v1::Video* w) {
  w->set_data(v.bytes);
  for (const std::string& f : v.frames) w->add_frames(f);
  for (double t : v.frame_times) w->add_frame_times(t);
  w->set_fps(v.options.fps);
  w->set_min_frames(v.options.min_frames);
  w->set_max_frames(v.options.max_frames);
  w->set_min_pixels(v.options.min_pixels);
  w->set_max_pixels(v.options.max_pixels);
  w->set_max_bytes(static_cast<int64_t>(v.limits.max_bytes));
  w->set_max_duration_seconds(v.limits.max_duration_seconds);
  w->set_max_frame_pixels(v.limits.max_frame_pixels);
  w->set_max_source_frames(v.limits.max_frames);
  w->set_rows(v.plan.grid.rows());
  w->set_cols(v.plan.grid.cols());
  for (const model::ImageSpan& s : v.pairs) w->add_pair_offsets(s.offset);
  w->set_field(v.field);
  w->set_key(VideoKey(v));
  w->set_width(v.info.width);
  w->set_height(v.info.height);
  if (!v.frames.empty()) {
    w->set_frame_max_bytes(static_cast<int64_t>(v.frame_limits.max_bytes));
    w->set_frame_max_pixels(v.frame_limits.max_pixels);
  }
}

}  // namespace qwen::service

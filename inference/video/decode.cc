// FrameReader: decodes a video in presentation order and converts the frames asked for to RGB.
extern "C" {
#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/video/ffmpeg_input.h"
#include "inference/video/video.h"

namespace qwen::video {
namespace {

struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;

int SwsColorspace(AVColorSpace cs) {
  switch (cs) {
    case AVCOL_SPC_BT709:
      return SWS_CS_ITU709;
    case AVCOL_SPC_FCC:
      return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M:
      return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL:
      return SWS_CS_BT2020;
    case AVCOL_SPC_BT470BG:
    case AVCOL_SPC_SMPTE170M:
      return SWS_CS_ITU601;
    default:
      return SWS_CS_DEFAULT;  // unspecified: BT.601, as players assume
  }
}

bool FullRangeFormat(int format) {
  return format == AV_PIX_FMT_YUVJ420P || format == AV_PIX_FMT_YUVJ422P ||
         format == AV_PIX_FMT_YUVJ444P || format == AV_PIX_FMT_YUVJ440P ||
         format == AV_PIX_FMT_YUVJ411P;
}

}  // namespace

struct FrameReader::State {
  ~State() {
    if (dec != nullptr) avcodec_free_context(&dec);
    if (pkt != nullptr) av_packet_free(&pkt);
    if (sws != nullptr) sws_freeContext(sws);
  }
  std::unique_ptr<internal::Input> in;
  AVCodecContext* dec = nullptr;
  AVPacket* pkt = nullptr;
  SwsContext* sws = nullptr;
  // The frame shown up to the last one asked for, and the next decoded one (shown later).
  FramePtr held;
  int64_t held_key = 0;
  FramePtr ahead;
  int64_t ahead_key = 0;
  int64_t decoded = 0;  // frames the decoder has output
  bool sent_eof = false;
  bool drained = false;
  int64_t last_target = INT64_MIN;
};

FrameReader::~FrameReader() = default;

absl::StatusOr<std::unique_ptr<FrameReader>> FrameReader::Open(
    std::shared_ptr<const std::string> bytes, const VideoInfo& info, const VideoLimits& limits,
    std::string name) {
  if (bytes == nullptr || info.n_frames <= 0 ||
      static_cast<int64_t>(info.frame_times.size()) != info.n_frames ||
      (!info.frame_pts.empty() && static_cast<int64_t>(info.frame_pts.size()) != info.n_frames)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no probed video to read"));
  }
  std::unique_ptr<FrameReader> r(new FrameReader());
  r->bytes_ = std::move(bytes);
  r->info_ = info;
  r->limits_ = limits;
  r->name_ = std::move(name);
  RETURN_IF_ERROR(r->Restart());
  return r;
}

absl::Status FrameReader::Restart() {
  state_.reset();
  auto s = std::make_unique<State>();
  const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(bytes_->data()),
                                        bytes_->size());
  if (bytes.size() > limits_.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", bytes.size(),
                                                   " bytes is more than the limit of ",
                                                   limits_.max_bytes, " bytes (max_bytes)"));
  }
  ASSIGN_OR_RETURN(s->in, internal::OpenInput(bytes, limits_, name_));
  if (s->in->video()->codecpar->width != info_.width ||
      s->in->video()->codecpar->height != info_.height) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": not the probed video"));
  }
  s->dec = avcodec_alloc_context3(s->in->decoder);
  s->pkt = av_packet_alloc();
  if (s->dec == nullptr || s->pkt == nullptr) return absl::ResourceExhaustedError("out of memory");
  int err = avcodec_parameters_to_context(s->dec, s->in->video()->codecpar);
  if (err < 0) return internal::Corrupt(name_, info_.codec, internal::AvError(err));
  s->dec->pkt_timebase = s->in->video()->time_base;
  // One thread: the engine's pools own the cores, and a decode is a small part of an encode.
  s->dec->thread_count = 1;
  // The decoder refuses frames over the limit before allocating them.
  s->dec->max_pixels = limits_.max_frame_pixels;
  s->dec->codec_whitelist = av_strdup("h264,hevc,vp8,vp9,libdav1d,gif");
  err = avcodec_open2(s->dec, s->in->decoder, nullptr);
  if (err < 0) {
    std::string detail = internal::TakeFfmpegMessage();
    return internal::Corrupt(name_, info_.codec, detail.empty() ? internal::AvError(err) : detail);
  }
  state_ = std::move(s);
  return absl::OkStatus();
}

absl::StatusOr<vision::RgbImage> FrameReader::Frame(int64_t index,
                                                    const std::function<bool()>& cancelled) {
  if (index < 0 || index >= info_.n_frames) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": frame ", index, " of ", info_.n_frames, " frames"));
  }
  // A frame is known by its presentation timestamp, or by its place when the file has none.
  const bool by_pts = !info_.frame_pts.empty();
  const int64_t target = by_pts ? info_.frame_pts[index] : index;
  if (state_ == nullptr || target < state_->last_target) RETURN_IF_ERROR(Restart());
  State& s = *state_;
  s.last_target = target;

  // Decodes the next frame into s.ahead; false at the end of the stream.
  auto next = [&]() -> absl::StatusOr<bool> {
    FramePtr f(av_frame_alloc());
    if (f == nullptr) return absl::ResourceExhaustedError("out of memory");
    while (true) {
      if (cancelled && cancelled()) return absl::CancelledError("the video decode was cancelled");
      int err = avcodec_receive_frame(s.dec, f.get());
      if (err == 0) break;
      if (err == AVERROR_EOF) {
        s.drained = true;
        return false;
      }
      if (err != AVERROR(EAGAIN)) {
        std::string detail = internal::TakeFfmpegMessage();
        return internal::Corrupt(name_, absl::StrCat(info_.codec, " data after frame ", s.decoded),
                                 detail.empty() ? internal::AvError(err) : detail);
      }
      if (s.sent_eof) {
        s.drained = true;
        return false;
      }
      // The decoder wants input.
      while (true) {
        err = av_read_frame(s.in->fmt, s.pkt);
        if (err == AVERROR_EOF) {
          avcodec_send_packet(s.dec, nullptr);
          s.sent_eof = true;
          break;
        }
        if (err < 0) {
          std::string detail = internal::TakeFfmpegMessage();
          return internal::Corrupt(name_, s.in->container,
                                   detail.empty() ? internal::AvError(err) : detail);
        }
        if (s.pkt->stream_index != s.in->stream) {
          av_packet_unref(s.pkt);
          continue;
        }
        err = avcodec_send_packet(s.dec, s.pkt);
        av_packet_unref(s.pkt);
        if (err < 0 && err != AVERROR(EAGAIN)) {
          std::string detail = internal::TakeFfmpegMessage();
          return internal::Corrupt(name_, absl::StrCat(info_.codec, " data at frame ", s.decoded),
                                   detail.empty() ? internal::AvError(err) : detail);
        }
        break;
      }
    }
    if (int64_t{f->width} * f->height > limits_.max_frame_pixels || f->width <= 0 ||
        f->height <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": frame ", s.decoded, " is ", f->width, "x", f->height,
          ", more than the limit of ", limits_.max_frame_pixels, " pixels (max_frame_pixels)"));
    }
    if (++s.decoded > limits_.max_frames) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": it has more than the limit of ",
                                                     limits_.max_frames, " frames (max_frames)"));
    }
    int64_t key;
    if (by_pts) {
      key = f->best_effort_timestamp;
      if (key == AV_NOPTS_VALUE) key = s.ahead != nullptr ? s.ahead_key : s.held_key;
    } else {
      key = s.decoded - 1;
    }
    s.ahead = std::move(f);
    s.ahead_key = key;
    return true;
  };

  // Move forward while the next frame is shown no later than the target.
  while (true) {
    if (s.ahead == nullptr) {
      if (s.drained) break;
      ASSIGN_OR_RETURN(bool got, next());
      if (!got) break;
    }
    if (s.held != nullptr && s.ahead_key > target) break;
    if (s.held == nullptr && s.ahead_key > target) {
      // The target comes before the first frame shown: that first frame it is.
      s.held = std::move(s.ahead);
      s.held_key = s.ahead_key;
      break;
    }
    s.held = std::move(s.ahead);
    s.held_key = s.ahead_key;
  }
  if (s.held == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": the ", info_.codec, " data decodes to no frame"));
  }

  // To RGB at the container's frame size.
  const AVFrame* f = s.held.get();
  const auto format = static_cast<AVPixelFormat>(f->format);
  if (!sws_isSupportedInput(format)) {
    const char* fmt_name = av_get_pix_fmt_name(format);
    return absl::InvalidArgumentError(absl::StrCat(name_, ": its pixel format ",
                                                   fmt_name != nullptr ? fmt_name : "(unknown)",
                                                   " is not supported"));
  }
  vision::RgbImage out;
  out.width = info_.width;
  out.height = info_.height;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * 3);
  s.sws = sws_getCachedContext(
      s.sws, f->width, f->height, format, out.width, out.height, AV_PIX_FMT_RGB24,
      SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr);
  if (s.sws == nullptr) {
    return absl::InternalError(absl::StrCat(name_, ": cannot convert its frames to RGB"));
  }
  const int range = f->color_range == AVCOL_RANGE_JPEG || FullRangeFormat(f->format) ? 1 : 0;
  // Ignored (and harmless) for RGB and palette sources such as GIF's.
  sws_setColorspaceDetails(s.sws, sws_getCoefficients(SwsColorspace(f->colorspace)), range,
                           sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
  uint8_t* dst[4] = {out.pixels.data(), nullptr, nullptr, nullptr};
  int dst_stride[4] = {out.width * 3, 0, 0, 0};
  const int rows = sws_scale(s.sws, f->data, f->linesize, 0, f->height, dst, dst_stride);
  if (rows != out.height) {
    return absl::InternalError(
        absl::StrCat(name_, ": the RGB conversion gave ", rows, " of ", out.height, " rows"));
  }
  return out;
}

absl::StatusOr<std::vector<vision::RgbImage>> DecodePlannedFrames(absl::Span<const uint8_t> bytes,
                                                                  const VideoInfo& info,
                                                                  const VideoPlan& plan,
                                                                  const VideoLimits& limits,
                                                                  absl::string_view name) {
  auto shared = std::make_shared<const std::string>(reinterpret_cast<const char*>(bytes.data()),
                                                    bytes.size());
  ASSIGN_OR_RETURN(std::unique_ptr<FrameReader> reader,
                   FrameReader::Open(std::move(shared), info, limits, std::string(name)));
  std::vector<vision::RgbImage> frames;
  for (int64_t index : plan.frames) {
    ASSIGN_OR_RETURN(vision::RgbImage frame, reader->Frame(index));
    frames.push_back(std::move(frame));
  }
  return frames;
}

}  // namespace qwen::video

// ProbeVideo: the frame count and times of a video from its packets, without decoding.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/common/status_macros.h"
#include "inference/video/ffmpeg_input.h"
#include "inference/video/video.h"

namespace qwen::video {
namespace {

bool At(absl::Span<const uint8_t> b, size_t at, const char* magic) {
  const size_t n = std::strlen(magic);
  return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

// Frames per second the stream declares (average, else the base rate), or 0.
double DeclaredRate(const AVStream* st) {
  for (AVRational r : {st->avg_frame_rate, st->r_frame_rate}) {
    if (r.num > 0 && r.den > 0) return av_q2d(r);
  }
  return 0;
}

// Seconds of `ticks` in time base `tb`, computed as one correctly rounded division of integers
// where they fit, so that a constant-rate file's times are exactly the doubles i / fps that the
// model's processor computes.
double TicksToSeconds(int64_t ticks, AVRational tb) {
  if (tb.num > 0 && std::abs(ticks) < (int64_t{1} << 62) / tb.num) {
    return static_cast<double>(ticks * tb.num) / tb.den;
  }
  return static_cast<double>(ticks) * av_q2d(tb);
}

}  // namespace

absl::string_view SniffVideoContainer(absl::Span<const uint8_t> b) {
  // ISO BMFF (MP4, MOV, 3GP): a box at offset 0 whose type is ftyp, or one QuickTime files
  // start with.
  for (const char* box : {"ftyp", "moov", "mdat", "wide", "free", "skip"}) {
    if (At(b, 4, box)) return "mp4";
  }
  if (b.size() >= 4 && b[0] == 0x1A && b[1] == 0x45 && b[2] == 0xDF && b[3] == 0xA3) {
    return "matroska";  // the EBML header: Matroska and WebM
  }
  if (At(b, 0, "GIF87a") || At(b, 0, "GIF89a")) return "gif";
  return "";
}

absl::StatusOr<VideoInfo> ProbeVideo(absl::Span<const uint8_t> bytes, const VideoLimits& limits,
                                     absl::string_view name) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no video data"));
  if (bytes.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", bytes.size(),
                                                   " bytes is more than the limit of ",
                                                   limits.max_bytes, " bytes (max_bytes)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<internal::Input> in, internal::OpenInput(bytes, limits, name));
  AVStream* st = in->video();
  const AVRational tb = st->time_base;
  if (tb.num <= 0 || tb.den <= 0) {
    return internal::Corrupt(name, in->container, "the video stream has no time base");
  }
  VideoInfo info;
  info.container = in->container;
  info.codec = in->decoder->name;
  info.width = st->codecpar->width;
  info.height = st->codecpar->height;

  struct Stamp {
    int64_t ts;
    int64_t duration;
  };
  std::vector<Stamp> stamps;
  bool have_ts = true;
  int64_t packets = 0;  // of the video stream, discarded ones included (the header counts them)
  int64_t first_ts = AV_NOPTS_VALUE;
  std::unique_ptr<AVPacket, void (*)(AVPacket*)> pkt(av_packet_alloc(),
                                                     [](AVPacket* p) { av_packet_free(&p); });
  if (pkt == nullptr) return absl::ResourceExhaustedError("out of memory");
  while (true) {
    const int err = av_read_frame(in->fmt, pkt.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) {
      std::string detail = internal::TakeFfmpegMessage();
      return internal::Corrupt(name, in->container,
                               detail.empty() ? internal::AvError(err) : detail);
    }
    const bool ours = pkt->stream_index == in->stream;
    const int flags = pkt->flags;
    const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    const int64_t duration = pkt->duration;
    const int size = pkt->size;
    av_packet_unref(pkt.get());
    if (!ours) continue;
    ++packets;
    if (flags & AV_PKT_FLAG_CORRUPT) {
      return internal::Corrupt(name, in->container,
                               absl::StrCat("frame ", stamps.size(), " is damaged"));
    }
    if ((flags & AV_PKT_FLAG_DISCARD) || size == 0) continue;  // decoded, never shown
    if (static_cast<int64_t>(stamps.size()) >= limits.max_frames) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": it has more than the limit of ",
                                                     limits.max_frames, " frames (max_frames)"));
    }
    if (ts == AV_NOPTS_VALUE) have_ts = false;
    if (have_ts) {
      if (first_ts == AV_NOPTS_VALUE || ts < first_ts) first_ts = ts;
      const double t = TicksToSeconds(ts - first_ts, tb);
      if (t > limits.max_duration_seconds) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: it is longer than the limit of %g s (max_duration_seconds)", name,
                            limits.max_duration_seconds));
      }
    }
    stamps.push_back({ts, duration > 0 ? duration : 0});
  }
  if (stamps.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the video has no frames"));
  }
  // MP4's sample table says how many frames there are: fewer packets means the data stops early.
  if (st->nb_frames > 0 && packets < st->nb_frames) {
    return internal::Corrupt(
        name, in->container,
        absl::StrCat("the data ends after ", packets, " of its ", st->nb_frames, " frames"));
  }
  const int64_t n = static_cast<int64_t>(stamps.size());
  info.n_frames = n;
  info.frame_times.resize(n);
  if (have_ts) {
    info.frame_pts.resize(n);
    // Packets come in decoding order; frames are shown in timestamp order.
    std::stable_sort(stamps.begin(), stamps.end(),
                     [](const Stamp& a, const Stamp& b) { return a.ts < b.ts; });
    const int64_t t0 = stamps.front().ts;
    for (int64_t i = 0; i < n; ++i) {
      info.frame_pts[i] = stamps[i].ts;
      info.frame_times[i] = TicksToSeconds(stamps[i].ts - t0, tb);
    }
    int64_t last = stamps.back().duration;
    if (last <= 0) {
      if (n > 1) {
        last = (stamps.back().ts - t0) / (n - 1);
      } else if (const double rate = DeclaredRate(st); rate > 0) {
        last = static_cast<int64_t>(static_cast<double>(tb.den) / tb.num / rate);
      }
    }
    info.duration_seconds = TicksToSeconds(stamps.back().ts - t0 + std::max<int64_t>(last, 0), tb);
    if (info.duration_seconds <= 0) info.duration_seconds = 1.0 / 24;
  } else {
    // No timestamps: times from the declared rate, or 24 frames per second (the processor's
    // assumption when a video says nothing).
    double rate = DeclaredRate(st);
    if (rate <= 0) rate = 24;
    for (int64_t i = 0; i < n; ++i) info.frame_times[i] = static_cast<double>(i) / rate;
    info.duration_seconds = static_cast<double>(n) / rate;
  }
  if (info.duration_seconds > limits.max_duration_seconds) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: it lasts %.1f s, longer than the limit of %g s "
                        "(max_duration_seconds)",
                        name, info.duration_seconds, limits.max_duration_seconds));
  }
  // A Matroska/WebM header gives the duration; data that stops well short of it was cut off.
  if (in->container == "matroska" && in->fmt->duration != AV_NOPTS_VALUE && in->fmt->duration > 0) {
    const double header = static_cast<double>(in->fmt->duration) / AV_TIME_BASE;
    const double frame = info.duration_seconds / static_cast<double>(n);
    if (info.duration_seconds + 2 * frame + 0.05 < header) {
      return internal::Corrupt(
          name, in->container,
          absl::StrFormat("the frames end at %.2f s of the %.2f s the header gives",
                          info.duration_seconds, header));
    }
  }
  return info;
}

}  // namespace qwen::video

#include "inference/video/ffmpeg_input.h"

extern "C" {
#include <libavutil/avutil.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/mem.h>
}

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qwen::video {
namespace internal {
namespace {

// The allow-lists. A container is chosen from the file's leading bytes (SniffVideoContainer),
// never by FFmpeg's probing, which would try every demuxer it has.
struct Container {
  const char* family;   // what VideoInfo::container says
  const char* demuxer;  // av_find_input_format's name
  const char*
      whitelist;  // the names the demuxer registers under (AVFormatContext::format_whitelist)
};
constexpr Container kContainers[] = {
    {"mp4", "mov", "mov,mp4,m4a,3gp,3g2,mj2"},
    {"matroska", "matroska", "matroska,webm"},
    {"gif", "gif", "gif"},
};

struct Decoder {
  AVCodecID id;
  const char* name;   // avcodec_find_decoder_by_name: exactly this implementation
  const char* shown;  // in messages
};
// AV1 goes to dav1d (VideoLAN's decoder, what FFmpeg itself prefers) rather than libaom's.
constexpr Decoder kDecoders[] = {
    {AV_CODEC_ID_H264, "h264", "H.264"},  {AV_CODEC_ID_HEVC, "hevc", "HEVC"},
    {AV_CODEC_ID_VP8, "vp8", "VP8"},      {AV_CODEC_ID_VP9, "vp9", "VP9"},
    {AV_CODEC_ID_AV1, "libdav1d", "AV1"}, {AV_CODEC_ID_GIF, "gif", "GIF"},
};
constexpr char kDecoderNames[] = "h264,hevc,vp8,vp9,libdav1d,gif";
constexpr char kAccepted[] =
    "accepted: H.264, HEVC, VP8, VP9 or AV1 in MP4, MOV, WebM or Matroska, and animated GIF";

// FFmpeg logs to stderr by default; a server must not let an uploaded file write there. Messages
// at error level are kept per thread so that errors can quote the decoder's own words.
thread_local std::string last_message;

void LogCallback(void* avcl, int level, const char* fmt, va_list vl) {
  if (level > AV_LOG_ERROR) return;
  char line[512];
  int print_prefix = 0;  // no "[h264 @ 0x...]": an address means nothing to a client
  av_log_format_line2(nullptr, level, fmt, vl, line, sizeof(line), &print_prefix);
  std::string s = line;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (!s.empty()) last_message = std::move(s);
}

void InstallLogging() {
  static std::once_flag once;
  std::call_once(once, [] {
    av_log_set_level(AV_LOG_ERROR);
    av_log_set_callback(&LogCallback);
  });
}

int ReadPacket(void* opaque, uint8_t* buf, int size) {
  Input* in = static_cast<Input*>(opaque);
  const int64_t left = in->size - in->pos;
  if (left <= 0) return AVERROR_EOF;
  const int n = static_cast<int>(std::min<int64_t>(left, size));
  std::memcpy(buf, in->data + in->pos, n);
  in->pos += n;
  return n;
}

int64_t Seek(void* opaque, int64_t offset, int whence) {
  Input* in = static_cast<Input*>(opaque);
  int64_t base;
  switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
      return in->size;
    case SEEK_SET:
      base = 0;
      break;
    case SEEK_CUR:
      base = in->pos;
      break;
    case SEEK_END:
      base = in->size;
      break;
    default:
      return AVERROR(EINVAL);
  }
  if (offset > in->size || offset < -in->size) return AVERROR(EINVAL);
  const int64_t to = base + offset;
  if (to < 0 || to > in->size) return AVERROR(EINVAL);
  in->pos = to;
  return to;
}

// Any further IO a demuxer asks for (MOV data references to other files, playlists) is refused:
// the only input is the bytes in memory.
int RefuseIo(AVFormatContext*, AVIOContext**, const char*, int, AVDictionary**) {
  return AVERROR(EPERM);
}

absl::Status Invalid(absl::string_view name, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", why));
}

}  // namespace

}  // namespace internal

std::vector<absl::string_view> AcceptedContainers() {
  return {"mp4", "mov", "webm", "matroska", "gif"};
}

std::vector<absl::string_view> AcceptedCodecs() {
  std::vector<absl::string_view> out;
  for (const internal::Decoder& d : internal::kDecoders) out.push_back(avcodec_get_name(d.id));
  return out;
}

namespace internal {

Input::~Input() {
  if (fmt != nullptr) avformat_close_input(&fmt);
  if (io != nullptr) {
    av_freep(&io->buffer);
    avio_context_free(&io);
  }
}

std::string AvError(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

std::string TakeFfmpegMessage() {
  std::string s = std::move(last_message);
  last_message.clear();
  return s;
}

absl::Status Corrupt(absl::string_view name, absl::string_view what, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt or truncated ", what,
                                                 detail.empty() ? "" : " (", detail,
                                                 detail.empty() ? "" : ")"));
}

absl::StatusOr<std::unique_ptr<Input>> OpenInput(absl::Span<const uint8_t> bytes,
                                                 const VideoLimits& limits,
                                                 absl::string_view name) {
  InstallLogging();
  TakeFfmpegMessage();
  const absl::string_view family = SniffVideoContainer(bytes);
  const Container* container = nullptr;
  for (const Container& c : kContainers) {
    if (family == c.family) container = &c;
  }
  if (container == nullptr) {
    return Invalid(name, absl::StrCat("not a video this server reads (", kAccepted, ")"));
  }
  const AVInputFormat* demuxer = av_find_input_format(container->demuxer);
  if (demuxer == nullptr) {
    return absl::InternalError(absl::StrCat("FFmpeg has no ", container->demuxer, " demuxer"));
  }
  auto in = std::make_unique<Input>();
  in->container = container->family;
  in->data = bytes.data();
  in->size = static_cast<int64_t>(bytes.size());
  constexpr int kIoBuffer = 32 << 10;
  auto* buffer = static_cast<unsigned char*>(av_malloc(kIoBuffer));
  if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory");
  in->io = avio_alloc_context(buffer, kIoBuffer, 0, in.get(), &ReadPacket, nullptr, &Seek);
  if (in->io == nullptr) {
    av_free(buffer);
    return absl::ResourceExhaustedError("out of memory");
  }
  AVFormatContext* fmt = avformat_alloc_context();
  if (fmt == nullptr) return absl::ResourceExhaustedError("out of memory");
  fmt->pb = in->io;
  fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
  fmt->io_open = &RefuseIo;
  fmt->format_whitelist = av_strdup(container->whitelist);
  fmt->codec_whitelist = av_strdup(kDecoderNames);
  fmt->protocol_whitelist = av_strdup("");
  // avformat_open_input frees the context on failure.
  const int err = avformat_open_input(&fmt, nullptr, demuxer, nullptr);
  if (err < 0) {
    std::string detail = TakeFfmpegMessage();
    if (detail.empty()) detail = AvError(err);
    return Corrupt(name, container->family, detail);
  }
  in->fmt = fmt;

  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    AVStream* st = fmt->streams[i];
    const bool usable = st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
                        !(st->disposition & AV_DISPOSITION_ATTACHED_PIC);
    if (usable && in->stream < 0) {
      in->stream = static_cast<int>(i);
    } else {
      st->discard = AVDISCARD_ALL;
    }
  }
  if (fmt->nb_streams == 0) return Corrupt(name, family, "no stream in its header");
  if (in->stream < 0) return Invalid(name, absl::StrCat("the ", family, " file has no video"));
  const AVCodecParameters* par = in->video()->codecpar;
  for (const Decoder& d : kDecoders) {
    if (d.id == par->codec_id) in->decoder = avcodec_find_decoder_by_name(d.name);
  }
  if (in->decoder == nullptr) {
    const char* codec = avcodec_get_name(par->codec_id);
    return Invalid(name, absl::StrCat("its video codec ", codec != nullptr ? codec : "(unknown)",
                                      " is not accepted (", kAccepted, ")"));
  }
  if (par->width <= 0 || par->height <= 0) {
    return Corrupt(name, family, "no frame size in the header");
  }
  if (int64_t{par->width} * par->height > limits.max_frame_pixels) {
    return Invalid(
        name, absl::StrCat(par->width, "x", par->height, " frames are larger than the limit of ",
                           limits.max_frame_pixels, " pixels (max_frame_pixels)"));
  }
  if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0 &&
      static_cast<double>(fmt->duration) / AV_TIME_BASE > limits.max_duration_seconds) {
    return Invalid(name, absl::StrFormat("its header gives %.1f s, longer than the limit of %g s "
                                         "(max_duration_seconds)",
                                         static_cast<double>(fmt->duration) / AV_TIME_BASE,
                                         limits.max_duration_seconds));
  }
  return in;
}

}  // namespace internal
}  // namespace qwen::video

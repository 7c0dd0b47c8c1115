#include "cli/bench_video.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <chrono>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/common/status_macros.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/ops/compute.h"
#include "inference/video/frame_pairs.h"
#include "inference/video/video.h"
#include "inference/vision/vision.h"

namespace qwen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Owns what MakeClip allocates.
struct Encoding {
  ~Encoding() {
    if (sws != nullptr) sws_freeContext(sws);
    if (frame != nullptr) av_frame_free(&frame);
    if (pkt != nullptr) av_packet_free(&pkt);
    if (enc != nullptr) avcodec_free_context(&enc);
    if (oc != nullptr) {
      if (oc->pb != nullptr) {
        uint8_t* buf = nullptr;
        avio_close_dyn_buf(oc->pb, &buf);
        av_free(buf);
      }
      avformat_free_context(oc);
    }
  }
  AVFormatContext* oc = nullptr;
  AVCodecContext* enc = nullptr;
  AVPacket* pkt = nullptr;
  AVFrame* frame = nullptr;
  SwsContext* sws = nullptr;
};

absl::Status AvStatus(int err, absl::string_view what) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return absl::InternalError(absl::StrCat(what, ": ", buf));
}

// A clip of gradients and a checkerboard sliding across the frame (so that every frame costs
// the decoder real work), encoded in memory.
absl::StatusOr<std::string> MakeClip(int side, double seconds, int fps) {
  // libx264 reports its settings and statistics at info level: noise in a benchmark's output.
  av_log_set_level(AV_LOG_ERROR);
  Encoding e;
  const char* muxer = "matroska";
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (codec == nullptr) {
    codec = avcodec_find_encoder_by_name("libvpx-vp9");
    muxer = "webm";
  }
  if (codec == nullptr) {
    return absl::FailedPreconditionError("this FFmpeg has neither libx264 nor libvpx-vp9");
  }
  if (avformat_alloc_output_context2(&e.oc, nullptr, muxer, nullptr) < 0 || e.oc == nullptr) {
    return absl::InternalError(absl::StrCat("no ", muxer, " muxer"));
  }
  AVStream* st = avformat_new_stream(e.oc, nullptr);
  e.enc = avcodec_alloc_context3(codec);
  e.pkt = av_packet_alloc();
  e.frame = av_frame_alloc();
  if (st == nullptr || e.enc == nullptr || e.pkt == nullptr || e.frame == nullptr) {
    return absl::ResourceExhaustedError("out of memory");
  }
  e.enc->width = e.enc->height = side;
  e.enc->time_base = AVRational{1, fps};
  e.enc->framerate = AVRational{fps, 1};
  e.enc->pix_fmt = AV_PIX_FMT_YUV420P;
  e.enc->gop_size = 2 * fps;
  e.enc->thread_count = 1;
  if (e.oc->oformat->flags & AVFMT_GLOBALHEADER) e.enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  av_opt_set(e.enc->priv_data, "preset", "veryfast", 0);  // libx264's; ignored by others
  int err = avcodec_open2(e.enc, codec, nullptr);
  if (err < 0) return AvStatus(err, "opening the encoder");
  avcodec_parameters_from_context(st->codecpar, e.enc);
  st->time_base = e.enc->time_base;
  if ((err = avio_open_dyn_buf(&e.oc->pb)) < 0) return AvStatus(err, "avio_open_dyn_buf");
  if ((err = avformat_write_header(e.oc, nullptr)) < 0) return AvStatus(err, "write_header");
  e.frame->format = AV_PIX_FMT_YUV420P;
  e.frame->width = e.frame->height = side;
  if ((err = av_frame_get_buffer(e.frame, 0)) < 0) return AvStatus(err, "av_frame_get_buffer");
  e.sws = sws_getContext(side, side, AV_PIX_FMT_RGB24, side, side, AV_PIX_FMT_YUV420P, SWS_BICUBIC,
                         nullptr, nullptr, nullptr);
  if (e.sws == nullptr) return absl::InternalError("no RGB -> YUV conversion");
  std::vector<uint8_t> rgb(static_cast<size_t>(side) * side * 3);
  auto drain = [&]() -> absl::Status {
    while (true) {
      const int r = avcodec_receive_packet(e.enc, e.pkt);
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return absl::OkStatus();
      if (r < 0) return AvStatus(r, "encoding");
      av_packet_rescale_ts(e.pkt, e.enc->time_base, st->time_base);
      e.pkt->stream_index = st->index;
      if (const int w = av_interleaved_write_frame(e.oc, e.pkt); w < 0)
        return AvStatus(w, "muxing");
    }
  };
  const int n = static_cast<int>(seconds * fps);
  for (int i = 0; i < n; ++i) {
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        uint8_t* p = &rgb[(static_cast<size_t>(y) * side + x) * 3];
        const int xs = x + 4 * i, ys = y + 2 * i;
        p[0] = static_cast<uint8_t>(xs * 255 / side);
        p[1] = static_cast<uint8_t>(ys * 255 / side);
        p[2] = ((xs / 16 + ys / 16) % 2) ? 220 : 30;
      }
    }
    if ((err = av_frame_make_writable(e.frame)) < 0) return AvStatus(err, "frame");
    const uint8_t* src[1] = {rgb.data()};
    const int src_stride[1] = {side * 3};
    sws_scale(e.sws, src, src_stride, 0, side, e.frame->data, e.frame->linesize);
    e.frame->pts = i;
    if ((err = avcodec_send_frame(e.enc, e.frame)) < 0) return AvStatus(err, "encoding");
    RETURN_IF_ERROR(drain());
  }
  avcodec_send_frame(e.enc, nullptr);
  RETURN_IF_ERROR(drain());
  if ((err = av_write_trailer(e.oc)) < 0) return AvStatus(err, "write_trailer");
  uint8_t* buf = nullptr;
  const int len = avio_close_dyn_buf(e.oc->pb, &buf);
  e.oc->pb = nullptr;
  std::string out(reinterpret_cast<const char*>(buf), len > 0 ? len : 0);
  av_free(buf);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<VideoBenchRow>> MeasureVideo(const VideoBenchOptions& o) {
  ASSIGN_OR_RETURN(std::string clip_bytes, MakeClip(o.side, o.seconds, o.source_fps));
  auto clip = std::make_shared<const std::string>(std::move(clip_bytes));
  ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(o.mmproj_path));
  ASSIGN_OR_RETURN(
      std::unique_ptr<vision::VisionEncoder> loaded,
      vision::VisionEncoder::Load(std::shared_ptr<const gguf::GgufFile>(std::move(file))));
  std::shared_ptr<const vision::VisionEncoder> encoder = std::move(loaded);
  ThreadPool pool(o.threads);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  const video::VideoSettings settings;  // a server's defaults: 2 fps, 4,194,304 pixels at most
  const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(clip->data()),
                                        clip->size());

  VideoBenchRow pair_row, decode_row, per_second_row, clip_row;
  std::string grid_text;
  int64_t n_pairs = 0;
  for (int r = -1; r < o.repeats; ++r) {  // r = -1: untimed, pages the tower's weights in
    const Clock::time_point t0 = Clock::now();
    ASSIGN_OR_RETURN(video::VideoInfo info, video::ProbeVideo(bytes, settings.limits, "bench"));
    ASSIGN_OR_RETURN(video::VideoPlan plan,
                     video::PlanVideo(info, encoder->config(), settings.defaults));
    n_pairs = plan.n_pairs();
    grid_text =
        absl::StrFormat("%dx%d frames, %d patches, %d tokens", plan.grid.patch_cols * 16,
                        plan.grid.patch_rows * 16, plan.grid.n_patches(), plan.grid.n_tokens());
    std::unique_ptr<video::FrameSource> frames =
        video::FileFrames(clip, info, settings.limits, "bench");
    std::vector<std::vector<float>> pixels;
    for (int64_t index : plan.frames) {
      ASSIGN_OR_RETURN(vision::RgbImage rgb, frames->Frame(index, nullptr));
      ASSIGN_OR_RETURN(std::vector<float> px,
                       vision::PreprocessToGrid(rgb, encoder->config(), plan.grid));
      pixels.push_back(std::move(px));
    }
    const double decode_s = Since(t0);
    double encode_s = 0;
    const int P = encoder->config().patch_size;
    for (int64_t p = 0; p < plan.n_pairs(); ++p) {
      const Clock::time_point tp = Clock::now();
      ASSIGN_OR_RETURN(
          vision::ImageEmbedding e,
          encoder->EncodeFramePair(pixels[2 * p], pixels[2 * p + 1], plan.grid.patch_rows * P,
                                   plan.grid.patch_cols * P, ctx));
      encode_s += Since(tp);
      if (r < 0) break;  // one pair is enough to warm up
    }
    if (r < 0) continue;
    const double total_s = Since(t0);
    pair_row.samples.push_back(encode_s / static_cast<double>(plan.n_pairs()));
    decode_row.samples.push_back(decode_s / o.seconds);
    per_second_row.samples.push_back(total_s / o.seconds);
    clip_row.samples.push_back(total_s);
  }
  const std::string codec = avcodec_find_encoder_by_name("libx264") != nullptr ? "H.264" : "VP9";
  pair_row.name = absl::StrCat("video: encode one frame pair (", grid_text, ")");
  pair_row.unit = "s";
  decode_row.name = absl::StrFormat("video: decode + resize, per second of %dx%d %d fps %s", o.side,
                                    o.side, o.source_fps, codec);
  decode_row.unit = "s";
  per_second_row.name = "video: per second of video at 2 fps (decode, resize, encode)";
  per_second_row.unit = "s";
  clip_row.name =
      absl::StrFormat("video: %g s clip end to end (%d frame pairs)", o.seconds, n_pairs);
  clip_row.unit = "s";
  return std::vector<VideoBenchRow>{pair_row, decode_row, per_second_row, clip_row};
}

}  // namespace qwen::cli

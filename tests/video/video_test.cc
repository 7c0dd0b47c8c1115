// inference/video: probing, the allow-list, the limits, frame sampling and sizing, decoding.
// The tiny videos are in tests/data/video (made with the ffmpeg program; see its README).
#include "inference/video/video.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/video/frame_pairs.h"
#include "tests/common/test_util.h"

namespace qwen::video {
namespace {

using testing::DataPath;
using testing::ReadFile;

std::string Clip(const std::string& name) { return ReadFile(DataPath("video/" + name)); }

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

vision::VisionConfig TinyTower() {
  vision::VisionConfig c;
  c.patch_size = 16;
  c.spatial_merge_size = 2;
  return c;
}

struct Expected {
  const char* file;
  const char* container;
  const char* codec;
  int width, height;
  int64_t frames;
  double fps;  // constant rate of the clip
};
constexpr Expected kClips[] = {
    {"clip_h264.mp4", "mp4", "h264", 160, 120, 26, 10},
    {"clip_vp9.webm", "matroska", "vp9", 200, 130, 16, 8},
    {"clip_vp8.webm", "matroska", "vp8", 64, 48, 6, 5},
    {"clip_h264.mkv", "matroska", "h264", 96, 64, 9, 6},
    {"clip.gif", "gif", "gif", 48, 48, 8, 4},
};

TEST(ProbeVideo, ReadsEveryAcceptedKind) {
  for (const Expected& e : kClips) {
    SCOPED_TRACE(e.file);
    const std::string bytes = Clip(e.file);
    ASSERT_FALSE(bytes.empty());
    EXPECT_EQ(SniffVideoContainer(Bytes(bytes)), e.container);
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {}, e.file);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->container, e.container);
    EXPECT_EQ(info->codec, e.codec);
    EXPECT_EQ(info->width, e.width);
    EXPECT_EQ(info->height, e.height);
    EXPECT_EQ(info->n_frames, e.frames);
    ASSERT_EQ(info->frame_times.size(), static_cast<size_t>(e.frames));
    ASSERT_EQ(info->frame_pts.size(), static_cast<size_t>(e.frames));
    EXPECT_EQ(info->frame_times[0], 0.0);
    for (int64_t i = 0; i < e.frames; ++i) {
      // Matroska keeps milliseconds: i / fps rounded to the millisecond.
      EXPECT_NEAR(info->frame_times[i], i / e.fps, 5e-4) << i;
      if (i > 0) {
        EXPECT_GT(info->frame_pts[i], info->frame_pts[i - 1]);
      }
    }
    EXPECT_NEAR(info->duration_seconds, e.frames / e.fps, 2e-3);
  }
}

// MP4's time base holds 1 / fps exactly: the times are the doubles i / fps, bit for bit, as the
// model's processor computes them (so that "<1.5 seconds>" comes out the same).
TEST(ProbeVideo, ConstantRateTimesAreExact) {
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(Clip("clip_h264.mp4")), {});
  ASSERT_TRUE(info.ok()) << info.status();
  for (int64_t i = 0; i < info->n_frames; ++i) {
    EXPECT_EQ(info->frame_times[i], static_cast<double>(i) / 10.0) << i;
  }
  EXPECT_EQ(info->duration_seconds, 2.6);
}

TEST(ProbeVideo, CodecsOutsideTheAllowListAreRefused) {
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(Clip("clip_mpeg4.mp4")), {}, "video 1");
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(info.status().message(),
                               "video 1: its video codec mpeg4 is not "
                               "accepted"))
      << info.status();
}

TEST(ProbeVideo, UnknownContainersAndEmptyInputAreRefused) {
  for (const std::string& bytes :
       {std::string(), std::string("hello, world"), ReadFile(DataPath("vision/img_128x128.png")),
        std::string("RIFF\x10\0\0\0AVI LIST", 16), std::string("\0\0\0\0\0\0\0\0", 8)}) {
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {}, "v");
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
    EXPECT_TRUE(absl::StartsWith(info.status().message(), "v: ")) << info.status();
  }
}

TEST(ProbeVideo, EachLimitIsRefusedByName) {
  const std::string mp4 = Clip("clip_h264.mp4");
  VideoLimits l;
  l.max_bytes = mp4.size() - 1;
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(mp4), l, "v");
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(absl::StrContains(info.status().message(), "(max_bytes)")) << info.status();

  l = VideoLimits();
  l.max_frame_pixels = 160 * 120 - 1;
  info = ProbeVideo(Bytes(mp4), l, "v");
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(absl::StrContains(info.status().message(),
                                "160x120 frames are larger than the "
                                "limit of 19199 pixels "
                                "(max_frame_pixels)"))
      << info.status();

  l = VideoLimits();
  l.max_frames = 25;
  info = ProbeVideo(Bytes(mp4), l, "v");
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(absl::StrContains(info.status().message(),
                                "more than the limit of 25 frames "
                                "(max_frames)"))
      << info.status();

  // The duration: from the header when it says (MP4), from the frames' times otherwise.
  info = ProbeVideo(Bytes(Clip("clip_long.mp4")), {}, "v");
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(absl::StrContains(info.status().message(), "(max_duration_seconds)"))
      << info.status();
  l = VideoLimits();
  l.max_duration_seconds = 1.5;
  for (const char* f : {"clip_vp9.webm", "clip.gif", "clip_h264.mp4"}) {
    info = ProbeVideo(Bytes(Clip(f)), l, "v");
    ASSERT_FALSE(info.ok()) << f;
    EXPECT_TRUE(absl::StrContains(info.status().message(), "limit of 1.5 s (max_duration_seconds)"))
        << f << ": " << info.status();
  }
}

// Cut short anywhere, or with its header damaged, a file is INVALID_ARGUMENT or (cut after a
// whole frame in a container without a frame count) a shorter video; never a crash.
TEST(ProbeVideo, TruncatedFilesAreRefused) {
  for (const Expected& e : kClips) {
    SCOPED_TRACE(e.file);
    const std::string bytes = Clip(e.file);
    const std::string half = bytes.substr(0, bytes.size() / 2);
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(half), {}, "v");
    ASSERT_FALSE(info.ok()) << "half of the file probes as " << info->n_frames << " frames";
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(info.status().message(), "corrupt or truncated") ||
                absl::StrContains(info.status().message(), "no frames"))
        << info.status();
  }
}

TEST(ProbeVideo, EveryCutAndDamageIsAnErrorOrAVideo) {
  std::mt19937 rng(7);
  for (const Expected& e : kClips) {
    const std::string bytes = Clip(e.file);
    for (size_t cut = 0; cut < bytes.size(); cut += std::max<size_t>(1, bytes.size() / 97)) {
      absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes.substr(0, cut)), {}, "v");
      if (!info.ok()) {
        EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
      }
    }
    for (int trial = 0; trial < 40; ++trial) {
      std::string damaged = bytes;
      for (int k = 0; k < 8; ++k) damaged[rng() % damaged.size()] = static_cast<char>(rng());
      absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(damaged), {}, "v");
      if (!info.ok()) {
        EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
        continue;
      }
      absl::StatusOr<VideoPlan> plan = PlanVideo(*info, TinyTower(), {});
      if (!plan.ok()) continue;
      // Decoding damaged data: frames, or INVALID_ARGUMENT naming the problem.
      absl::StatusOr<std::vector<vision::RgbImage>> frames =
          DecodePlannedFrames(Bytes(damaged), *info, *plan, {}, "v");
      if (!frames.ok()) {
        EXPECT_EQ(frames.status().code(), absl::StatusCode::kInvalidArgument) << frames.status();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling and sizing.

TEST(SampleFrameIndices, FollowsTheModelsProcessor) {
  VideoOptions o;  // fps 2, 4..768 frames
  // 26 frames over 2.6 s: int(5.2) = 5 frames, np.linspace(0, 25, 5).round() = 0 6 12 19 25
  // (6.25 -> 6 and 12.5 -> 12: half to even).
  EXPECT_EQ(*SampleFrameIndices(26, 2.6, o), (std::vector<int64_t>{0, 6, 12, 19, 25}));
  // 10 s at 30 fps: 20 frames, exactly (10.0 * 2 must not become 19).
  const std::vector<int64_t> twenty = *SampleFrameIndices(300, 10.0, o);
  ASSERT_EQ(twenty.size(), 20u);
  EXPECT_EQ(twenty.front(), 0);
  EXPECT_EQ(twenty.back(), 299);
  // At least min_frames (4), never more frames than there are.
  EXPECT_EQ(*SampleFrameIndices(16, 1.0, o), (std::vector<int64_t>{0, 5, 10, 15}));
  EXPECT_EQ(*SampleFrameIndices(3, 1.0, o), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(*SampleFrameIndices(1, 0.1, o), (std::vector<int64_t>{0}));
  // At most max_frames.
  o.max_frames = 6;
  EXPECT_EQ(SampleFrameIndices(3000, 100.0, o)->size(), 6u);
  // fps.
  o = VideoOptions();
  o.fps = 0.5;
  EXPECT_EQ(SampleFrameIndices(300, 30.0, o)->size(), 15u);
  o.fps = 0;
  EXPECT_EQ(SampleFrameIndices(300, 30.0, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlanVideoGrid, BudgetIsForTheWholeVideo) {
  const vision::VisionConfig c = TinyTower();
  VideoOptions o;
  // 160x120: rounded to 160x128; 6 frames * 160 * 128 is within the model's bounds.
  vision::ImageGrid g = *PlanVideoGrid(5, 160, 120, c, o);
  EXPECT_EQ(g.patch_cols * 16, 160);
  EXPECT_EQ(g.patch_rows * 16, 128);
  // The more frames, the smaller each: 768 frames of 1920x1080 within 25,165,824 pixels.
  g = *PlanVideoGrid(768, 1920, 1080, c, o);
  EXPECT_LE(int64_t{768} * g.patch_rows * 16 * g.patch_cols * 16, o.max_pixels);
  EXPECT_EQ(g.patch_rows % 2, 0);
  // A server's smaller ceiling.
  o.max_pixels = kDefaultMaxPixels;
  g = *PlanVideoGrid(20, 448, 448, c, o);
  EXPECT_EQ(g.patch_rows * 16, 448);  // 20 x 448 x 448 = 4,014,080 fits
  g = *PlanVideoGrid(40, 448, 448, c, o);
  EXPECT_LT(g.patch_rows * 16, 448);
  EXPECT_LE(int64_t{40} * g.patch_rows * 16 * g.patch_cols * 16, o.max_pixels);
  // Small frames are scaled up to min_pixels; sides below 32 first to 32.
  g = *PlanVideoGrid(4, 16, 16, c, o);
  EXPECT_GE(int64_t{4} * g.patch_rows * 16 * g.patch_cols * 16, o.min_pixels);
  EXPECT_EQ(PlanVideoGrid(4, 10000, 10, c, o).status().code(),
            absl::StatusCode::kInvalidArgument);  // aspect ratio above 200
}

TEST(PlanVideoGrid, PropertiesOverRandomSizes) {
  const vision::VisionConfig c = TinyTower();
  std::mt19937 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    const int w = 1 + static_cast<int>(rng() % 4000), h = 1 + static_cast<int>(rng() % 4000);
    const int64_t n = 1 + rng() % 768;
    if (std::max(w, h) > 150 * std::min(w, h)) continue;
    VideoOptions o;
    o.max_pixels = int64_t{1024} + rng() % 30000000;
    o.min_pixels = std::min<int64_t>(o.max_pixels, 1 + rng() % 100000);
    absl::StatusOr<vision::ImageGrid> g = PlanVideoGrid(n, w, h, c, o);
    ASSERT_TRUE(g.ok()) << w << "x" << h << " " << n << ": " << g.status();
    EXPECT_GE(g->patch_rows, 2);
    EXPECT_GE(g->patch_cols, 2);
    EXPECT_EQ(g->patch_rows % 2, 0);
    EXPECT_EQ(g->patch_cols % 2, 0);
  }
}

TEST(PlanVideo, PadsAnOddCountWithTheLastFrameAndAveragesPairTimes) {
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(Clip("clip_h264.mp4")), {});
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<VideoPlan> plan = PlanVideo(*info, TinyTower(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frames, (std::vector<int64_t>{0, 6, 12, 19, 25, 25}));
  ASSERT_EQ(plan->n_pairs(), 3);
  EXPECT_EQ(plan->pair_times[0], (0.0 + 0.6) / 2);
  EXPECT_EQ(plan->pair_times[1], (1.2 + 1.9) / 2);  // 1.5499999999999998: "<1.5 seconds>"
  EXPECT_EQ(plan->pair_times[2], 2.5);
  EXPECT_EQ(plan->grid.rows(), 4);
  EXPECT_EQ(plan->grid.cols(), 5);
}

TEST(PlanFrames, TakesTheClientsFramesAsTheyAre) {
  const vision::VisionConfig c = TinyTower();
  absl::StatusOr<VideoPlan> plan = PlanFrames({0.0, 0.5, 1.0}, 128, 128, c, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->frames, (std::vector<int64_t>{0, 1, 2, 2}));
  EXPECT_EQ(plan->pair_times, (std::vector<double>{0.25, 1.0}));
  EXPECT_EQ(plan->grid.patch_rows * 16, 128);
  for (const std::vector<double>& bad :
       {std::vector<double>{}, {0.0, -1.0}, {1.0, 0.5}, {0.0, NAN}, {0.0, INFINITY}}) {
    EXPECT_EQ(PlanFrames(bad, 128, 128, c, {}).status().code(), absl::StatusCode::kInvalidArgument);
  }
  VideoOptions o;
  o.max_frames = 2;
  EXPECT_EQ(PlanFrames({0, 1, 2}, 128, 128, c, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Decoding.

TEST(FrameReader, DecodesThePlannedFramesOfEveryKind) {
  for (const Expected& e : kClips) {
    SCOPED_TRACE(e.file);
    const std::string bytes = Clip(e.file);
    absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {});
    ASSERT_TRUE(info.ok()) << info.status();
    absl::StatusOr<VideoPlan> plan = PlanVideo(*info, TinyTower(), {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    absl::StatusOr<std::vector<vision::RgbImage>> frames =
        DecodePlannedFrames(Bytes(bytes), *info, *plan, {});
    ASSERT_TRUE(frames.ok()) << frames.status();
    ASSERT_EQ(frames->size(), plan->frames.size());
    for (const vision::RgbImage& f : *frames) {
      EXPECT_EQ(f.width, e.width);
      EXPECT_EQ(f.height, e.height);
      EXPECT_EQ(f.pixels.size(), static_cast<size_t>(e.width) * e.height * 3);
    }
    // The sampled frames differ from one another (they are different moments of the clip).
    EXPECT_NE((*frames)[0].pixels, (*frames)[2].pixels);
    // The padding repeats the last frame.
    if (plan->frames.size() > 1 && plan->frames.back() == plan->frames[plan->frames.size() - 2]) {
      EXPECT_EQ(frames->back().pixels, (*frames)[frames->size() - 2].pixels);
    }
  }
}

TEST(FrameReader, StartsOverForAnEarlierFrame) {
  auto bytes = std::make_shared<const std::string>(Clip("clip_h264.mp4"));
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(*bytes), {});
  ASSERT_TRUE(info.ok());
  absl::StatusOr<std::unique_ptr<FrameReader>> reader = FrameReader::Open(bytes, *info, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::StatusOr<vision::RgbImage> f20 = (*reader)->Frame(20);
  absl::StatusOr<vision::RgbImage> f3 = (*reader)->Frame(3);
  absl::StatusOr<vision::RgbImage> f20_again = (*reader)->Frame(20);
  ASSERT_TRUE(f20.ok() && f3.ok() && f20_again.ok());
  EXPECT_EQ(f20->pixels, f20_again->pixels);
  EXPECT_NE(f20->pixels, f3->pixels);
  EXPECT_EQ((*reader)->Frame(26).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FrameReader, StopsWhenCancelled) {
  auto bytes = std::make_shared<const std::string>(Clip("clip_h264.mp4"));
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(*bytes), {});
  ASSERT_TRUE(info.ok());
  absl::StatusOr<std::unique_ptr<FrameReader>> reader = FrameReader::Open(bytes, *info, {});
  ASSERT_TRUE(reader.ok());
  int polls = 0;
  absl::StatusOr<vision::RgbImage> f = (*reader)->Frame(25, [&] { return ++polls > 3; });
  EXPECT_EQ(f.status().code(), absl::StatusCode::kCancelled) << f.status();
}

// A stream whose frames grow past the limit after a small header (the decoder is told the
// limit too): refused by name, not allocated.
TEST(FrameReader, FrameSizeLimitHoldsWhileDecoding) {
  const std::string bytes = Clip("clip_h264.mp4");
  absl::StatusOr<VideoInfo> info = ProbeVideo(Bytes(bytes), {});
  ASSERT_TRUE(info.ok());
  VideoLimits tight;
  tight.max_frame_pixels = 100;
  absl::StatusOr<std::unique_ptr<FrameReader>> reader =
      FrameReader::Open(std::make_shared<const std::string>(bytes), *info, tight, "v");
  ASSERT_FALSE(reader.ok());
  EXPECT_TRUE(absl::StrContains(reader.status().message(), "(max_frame_pixels)"))
      << reader.status();
}

TEST(ImageFrames, RefusesFramesOfAnotherSize) {
  const std::string a = ReadFile(DataPath("vision/img_128x128.png"));
  const std::string b = ReadFile(DataPath("vision/img_200x130.png"));
  std::unique_ptr<FrameSource> src = ImageFrames({a, b}, 128, 128, {}, "video");
  EXPECT_TRUE(src->Frame(0, nullptr).ok());
  absl::StatusOr<vision::RgbImage> f = src->Frame(1, nullptr);
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::StartsWith(f.status().message(), "video.frames[1]: 200x130 differs"))
      << f.status();
}

}  // namespace
}  // namespace qwen::video

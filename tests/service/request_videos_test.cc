// Video parts of requests (no processes: the tiny model, its tower and the tiny videos).
#include "service/request_videos.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "service/request.h"
#include "tests/common/test_util.h"

namespace qwen::service {
namespace {

using ::qwen::testing::DataPath;
using ::qwen::testing::ReadFile;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Clip(const std::string& name) { return ReadFile(DataPath("video/" + name)); }

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

class RequestVideosTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TextModel::VisionOptions v;
    v.mmproj_path = DataPath("models/mmproj-tiny-qwen35-f32.gguf");
    v.video.max_fps = 4;
    v.video.defaults.max_frames = 16;
    v.video.limits.max_frame_pixels = 100000;  // clip_480x360.mp4 is over it
    auto m = TextModel::Load(DataPath("models/tiny-qwen35-f32.gguf"), v);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  // A chat of one user message: the video, then "Describe this video.".
  static v1::Chat VideoChat(const v1::Video& video) {
    v1::Chat chat;
    v1::ChatMessage* m = chat.add_messages();
    m->set_role("user");
    *m->add_parts()->mutable_video() = video;
    m->add_parts()->set_text("Describe this video.");
    return chat;
  }
  static v1::Video File(const std::string& name) {
    v1::Video v;
    v.set_data(Clip(name));
    return v;
  }
  static absl::Status RenderStatus(const v1::Video& v) {
    return RenderChat(VideoChat(v), *model_).status();
  }
  static TextModel* model_;
};

TextModel* RequestVideosTest::model_ = nullptr;

TEST_F(RequestVideosTest, RenderChatExpandsTheVideoAsTheReference) {
  absl::StatusOr<RenderedChat> r = RenderChat(VideoChat(File("clip_h264.mp4")), *model_);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto ref = nlohmann::json::parse(ReadFile(DataPath("video/ref/reference.json")));
  const auto& c = ref["cases"][0];
  ASSERT_EQ(c["name"], "clip_h264.mp4");
  EXPECT_EQ(r->prompt, c["expanded_text"].get<std::string>());
  EXPECT_EQ(r->token_ids, c["token_ids"].get<std::vector<int32_t>>());
  ASSERT_EQ(r->videos.size(), 1u);
  const PlacedVideo& v = r->videos[0];
  ASSERT_EQ(v.pairs.size(), 3u);
  for (const model::ImageSpan& s : v.pairs) {
    EXPECT_EQ(s.rows, 4);
    EXPECT_EQ(s.cols, 5);
    EXPECT_EQ(r->token_ids[s.offset - 1], 1007);   // <|vision_start|>
    EXPECT_EQ(r->token_ids[s.offset + 20], 1008);  // <|vision_end|>
  }
  EXPECT_EQ(VideoTokenCount(v), 60);
  google::protobuf::RepeatedPtrField<v1::VideoTokens> described;
  DescribeVideos(r->videos, &described);
  ASSERT_EQ(described.size(), 1);
  EXPECT_EQ(described[0].tokens(), 60u);
  EXPECT_EQ(described[0].frames(), 6u);
  EXPECT_EQ(described[0].source_frames(), 26u);
  ASSERT_EQ(described[0].pairs_size(), 3);
  EXPECT_DOUBLE_EQ(described[0].pairs(1).timestamp(), (1.2 + 1.9) / 2);
  EXPECT_EQ(described[0].pairs(1).token_offset(), static_cast<uint32_t>(v.pairs[1].offset));
}

// Images before and after a video: both kinds widened, every span on its placeholders.
TEST_F(RequestVideosTest, ImagesAndVideosShareAPrompt) {
  v1::Chat chat;
  v1::ChatMessage* m = chat.add_messages();
  m->set_role("user");
  const std::string png = ReadFile(DataPath("vision/img_128x128.png"));
  m->add_parts()->mutable_image()->set_data(png);
  *m->add_parts()->mutable_video() = File("clip_vp9.webm");
  m->add_parts()->mutable_image()->set_data(png);
  *m->add_parts()->mutable_video() = File("clip.gif");
  m->add_parts()->set_text("Compare.");
  absl::StatusOr<RenderedChat> r = RenderChat(chat, *model_);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->images.size(), 2u);
  ASSERT_EQ(r->videos.size(), 2u);
  const std::vector<int32_t>& ids = r->token_ids;
  std::vector<model::ImageSpan> all;
  for (const PlacedImage& im : r->images) {
    for (int64_t i = 0; i < im.grid.n_tokens(); ++i) ASSERT_EQ(ids[im.span.offset + i], 1010);
    EXPECT_EQ(ids[im.span.offset - 1], 1007);
    EXPECT_EQ(ids[im.span.offset + im.grid.n_tokens()], 1008);
    all.push_back(im.span);
  }
  for (const PlacedVideo& v : r->videos) {
    for (const model::ImageSpan& s : v.pairs) {
      for (int64_t i = 0; i < int64_t{s.rows} * s.cols; ++i) ASSERT_EQ(ids[s.offset + i], 1011);
      EXPECT_EQ(ids[s.offset - 1], 1007);
      EXPECT_EQ(ids[s.offset + s.rows * s.cols], 1008);
      all.push_back(s);
    }
  }
  // Every placeholder token belongs to exactly one span.
  int64_t covered = 0;
  for (const model::ImageSpan& s : all) covered += int64_t{s.rows} * s.cols;
  EXPECT_EQ(covered,
            std::count(ids.begin(), ids.end(), 1010) + std::count(ids.begin(), ids.end(), 1011));
  EXPECT_LT(r->images[0].span.offset, r->videos[0].pairs[0].offset);
  EXPECT_LT(r->videos[0].pairs.back().offset, r->images[1].span.offset);
  EXPECT_LT(r->images[1].span.offset, r->videos[1].pairs[0].offset);
}

TEST_F(RequestVideosTest, PrepareGenerateTellsTheWorker) {
  v1::GenerateRequest req;
  *req.mutable_chat() = VideoChat(File("clip_h264.mp4"));
  RequestLimits limits;
  limits.slot_context = 512;
  absl::StatusOr<PreparedGenerate> p = PrepareGenerate(req, *model_, limits, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->video_tokens, 60);
  EXPECT_EQ(p->image_tokens, 0);
  ASSERT_EQ(p->worker_request.videos_size(), 1);
  const worker::v1::Video& w = p->worker_request.videos(0);
  EXPECT_EQ(w.data(), Clip("clip_h264.mp4"));
  EXPECT_EQ(w.rows(), 4);
  EXPECT_EQ(w.cols(), 5);
  EXPECT_EQ(w.pair_offsets_size(), 3);
  EXPECT_EQ(w.fps(), 2.0);
  EXPECT_EQ(w.max_frames(), 16);
  EXPECT_EQ(w.max_frame_pixels(), 100000);
  EXPECT_EQ(w.field(), "chat.messages[0].parts[0].video");
  EXPECT_EQ(w.key().size(), 64u);
  // The same video and options: the same key; another fps: another plan, another key.
  absl::StatusOr<PreparedGenerate> again = PrepareGenerate(req, *model_, limits, 2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->worker_request.videos(0).key(), w.key());
  req.mutable_chat()->mutable_messages(0)->mutable_parts(0)->mutable_video()->set_fps(4);
  absl::StatusOr<PreparedGenerate> faster = PrepareGenerate(req, *model_, limits, 3);
  ASSERT_TRUE(faster.ok()) << faster.status();
  EXPECT_NE(faster->worker_request.videos(0).key(), w.key());
  EXPECT_GT(faster->video_tokens, 60);
}

TEST_F(RequestVideosTest, RequestOptionsWithinTheServersMaxima) {
  const std::string field = "chat.messages[0].parts[0].video";
  v1::Video v = File("clip_h264.mp4");
  v.set_fps(5);
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".fps: must be in (0, 4]"));
  v.set_fps(0);
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".fps:"));
  v.clear_fps();
  v.set_max_frames(17);
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".max_frames: must be in [1, 16]"));
  v.set_max_frames(2);  // fewer than the model's minimum of 4: max_frames wins
  absl::StatusOr<RenderedChat> two = RenderChat(VideoChat(v), *model_);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->videos[0].plan.frames.size(), 2u);
  v.clear_max_frames();
  v.set_max_pixels(uint64_t{1} << 40);
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".max_pixels: must be in [1, "));
  v.set_max_pixels(8192);
  v.set_min_pixels(8193);
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".min_pixels:"));
  v.clear_min_pixels();
  absl::StatusOr<RenderedChat> small = RenderChat(VideoChat(v), *model_);
  ASSERT_TRUE(small.ok()) << small.status();
  const video::VideoPlan& plan = small->videos[0].plan;
  EXPECT_LE(int64_t{6} * plan.grid.patch_rows * 16 * plan.grid.patch_cols * 16, 8192);
}

TEST_F(RequestVideosTest, BadFilesAreInvalidArgumentsNamingTheField) {
  const std::string field = "chat.messages[0].parts[0].video";
  struct Case {
    std::string data;
    std::string want;
  } cases[] = {
      {Clip("clip_mpeg4.mp4"), "its video codec mpeg4 is not accepted"},
      {Clip("clip_480x360.mp4"), "(max_frame_pixels)"},
      {Clip("clip_long.mp4"), "(max_duration_seconds)"},
      {Clip("clip_h264.mp4").substr(0, 9000), "corrupt or truncated"},
      {"not a video at all", "not a video this server reads"},
      {ReadFile(DataPath("vision/img_128x128.png")), "not a video this server reads"},
  };
  for (const Case& c : cases) {
    v1::Video v;
    v.set_data(c.data);
    const absl::Status s = RenderStatus(v);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(Msg(s), StartsWith(field + ": ")) << s;
    EXPECT_THAT(Msg(s), HasSubstr(c.want));
  }
}

TEST_F(RequestVideosTest, DataUrlsAndMimeTypes) {
  const std::string field = "chat.messages[0].parts[0].video";
  const std::string mp4 = Clip("clip_h264.mp4");
  v1::Video v;
  v.set_url("data:video/mp4;base64," + absl::Base64Escape(mp4));
  EXPECT_TRUE(RenderStatus(v).ok()) << RenderStatus(v);
  v.set_url("https://example.com/a.mp4");
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".url: only data: URLs are accepted"));
  v.set_url("data:video/webm;base64," + absl::Base64Escape(mp4));
  EXPECT_THAT(Msg(RenderStatus(v)),
              StartsWith(field + ".mime_type: says video/webm but the data is mp4"));
  v = File("clip_vp9.webm");
  v.set_mime_type("video/x-matroska");
  EXPECT_TRUE(RenderStatus(v).ok());
  v.set_mime_type("video/avi");
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ".mime_type: \"video/avi\" is not"));
  v.set_url("data:video/webm;base64,AAAA");
  EXPECT_THAT(Msg(RenderStatus(v)), StartsWith(field + ": set exactly one of data and url"));

  // The HTTP API's hook.
  absl::StatusOr<v1::Video> hook =
      VideoFromDataUrl("data:video/mp4;base64," + absl::Base64Escape(mp4), "video_url.url");
  ASSERT_TRUE(hook.ok()) << hook.status();
  EXPECT_EQ(hook->data(), mp4);
  EXPECT_EQ(hook->mime_type(), "video/mp4");
  EXPECT_TRUE(RenderStatus(*hook).ok());
  EXPECT_THAT(
      Msg(VideoFromDataUrl("data:image/gif;base64," + absl::Base64Escape(mp4), "video_url.url")
              .status()),
      StartsWith("video_url.url.mime_type: says image/gif but the data is mp4"));
  EXPECT_THAT(Msg(VideoFromDataUrl("file:///etc/passwd", "video_url.url").status()),
              StartsWith("video_url.url: only data: URLs are accepted"));
}

TEST_F(RequestVideosTest, ClientSampledFrames) {
  const std::string field = "chat.messages[0].parts[0].video";
  const std::string png = ReadFile(DataPath("vision/img_128x128.png"));
  v1::Video v;
  for (double t : {0.0, 0.5, 1.0}) {
    v1::VideoFrame* f = v.add_frames();
    f->mutable_image()->set_data(png);
    f->set_timestamp(t);
  }
  absl::StatusOr<RenderedChat> r = RenderChat(VideoChat(v), *model_);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->videos.size(), 1u);
  EXPECT_EQ(r->videos[0].plan.frames, (std::vector<int64_t>{0, 1, 2, 2}));
  EXPECT_THAT(r->prompt, HasSubstr("<0.2 seconds><|vision_start|><|video_pad|><|vision_end|>"
                                   "<1.0 seconds><|vision_start|>"));
  v1::Video with_fps = v;
  with_fps.set_fps(1);
  EXPECT_THAT(Msg(RenderStatus(with_fps)), StartsWith(field + ".fps: applies to a video file"));
  v1::Video with_data = v;
  with_data.set_data("x");
  EXPECT_THAT(Msg(RenderStatus(with_data)),
              StartsWith(field + ": set exactly one of data, url and frames"));
  v1::Video backwards = v;
  backwards.mutable_frames(2)->set_timestamp(0.25);
  EXPECT_THAT(Msg(RenderStatus(backwards)), StartsWith(field + ": frames[2].timestamp:"));
  v1::Video sizes = v;
  sizes.mutable_frames(1)->mutable_image()->set_data(ReadFile(DataPath("vision/img_200x130.png")));
  EXPECT_THAT(Msg(RenderStatus(sizes)),
              StartsWith(field + ".frames[1]: 200x130 differs from the first frame's 128x128"));
  v1::Video bad = v;
  bad.mutable_frames(0)->mutable_image()->set_data("garbage");
  EXPECT_THAT(Msg(RenderStatus(bad)), StartsWith(field + ".frames[0].image: "));
  v1::Video many;
  for (int k = 0; k < 17; ++k) {
    v1::VideoFrame* f = many.add_frames();
    f->mutable_image()->set_data(png);
    f->set_timestamp(k);
  }
  EXPECT_THAT(Msg(RenderStatus(many)),
              StartsWith(field + ".frames: 17 frames is more than max_frames (16)"));
}

TEST(RequestVideosWithoutMmproj, VideosAreAPreconditionFailure) {
  auto m = TextModel::Load(DataPath("models/tiny-qwen35-f32.gguf"));
  ASSERT_TRUE(m.ok());
  v1::Chat chat;
  v1::ChatMessage* msg = chat.add_messages();
  msg->set_role("user");
  msg->add_parts()->mutable_video()->set_data(Clip("clip_h264.mp4"));
  const absl::Status s = RenderChat(chat, **m).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(s), StartsWith("chat.messages[0].parts[0].video: this server takes no "
                                 "videos"));
  EXPECT_FALSE((*m)->supports_video());
}

}  // namespace
}  // namespace qwen::service

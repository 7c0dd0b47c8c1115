// The text side of video input: timestamps, the processor's expansion, one pass over image and
// video placeholders.
#include "inference/multimodal/video_prompt.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace qwen::multimodal {
namespace {

// Python's f"{t:.1f}" rounds the binary value exactly, ties to even: the same text here.
TEST(TimestampText, RoundsAsPython) {
  EXPECT_EQ(TimestampText(0.0), "<0.0 seconds>");
  EXPECT_EQ(TimestampText(0.3), "<0.3 seconds>");
  EXPECT_EQ(TimestampText(0.25), "<0.2 seconds>");             // exact tie: to even
  EXPECT_EQ(TimestampText(0.75), "<0.8 seconds>");             // exact tie: to even
  EXPECT_EQ(TimestampText((1.2 + 1.9) / 2), "<1.5 seconds>");  // 1.5499999999999998
  EXPECT_EQ(TimestampText(1.55), "<1.6 seconds>");             // 1.55000000000000004
  EXPECT_EQ(TimestampText(1.5625), "<1.6 seconds>");
  EXPECT_EQ(TimestampText(123.45), "<123.5 seconds>");  // 123.4500000000000028
}

TEST(ExpandVideoText, WritesEachPairAsTheProcessorDoes) {
  const std::string text =
      "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n";
  absl::StatusOr<std::string> out = ExpandVideoText(text, {{0.3, 1.25}}, "chat");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>user\n<0.3 seconds><|vision_start|><|video_pad|><|vision_end|>"
            "<1.2 seconds><|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n");
}

TEST(ExpandVideoText, VideosInOrderAndABarePadAsAFallback) {
  absl::StatusOr<std::string> out = ExpandVideoText(
      "A <|vision_start|><|video_pad|><|vision_end|> B <|video_pad|> C", {{1.0}, {2.0, 3.0}}, "x");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "A <1.0 seconds><|vision_start|><|video_pad|><|vision_end|> B "
            "<2.0 seconds><|vision_start|><|video_pad|><|vision_end|>"
            "<3.0 seconds><|vision_start|><|video_pad|><|vision_end|> C");
  // The expansion's own pads are never taken for the next video's placeholder.
  out = ExpandVideoText("<|video_pad|>", {{1.0}, {2.0}}, "chat");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(),
            "chat: the prompt has 1 video placeholders (<|video_pad|>) for 2 videos");
  out = ExpandVideoText("<|video_pad|> <|video_pad|>", {{1.0}}, "chat");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(),
            "chat: the prompt has 2 video placeholders (<|video_pad|>) for 1 videos");
  EXPECT_EQ(*ExpandVideoText("no videos", {}, "chat"), "no videos");
}

TEST(ExpandVisionPads, WidensImagesAndPairsInOnePass) {
  constexpr int32_t kImage = 10, kVideo = 11;
  vision::ImageGrid image;  // 2 x 3 tokens
  image.patch_rows = 4;
  image.patch_cols = 6;
  vision::ImageGrid pair;  // 1 x 2 tokens
  pair.patch_rows = 2;
  pair.patch_cols = 4;
  std::vector<int32_t> ids = {1, kVideo, 2, kImage, 3, kVideo, 4};
  absl::StatusOr<VisionSpans> s =
      ExpandVisionPads(ids, kImage, {image}, kVideo, {pair, pair}, "chat");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 11, 11, 2, 10, 10, 10, 10, 10, 10, 3, 11, 11, 4}));
  ASSERT_EQ(s->images.size(), 1u);
  EXPECT_EQ(s->images[0].offset, 4);
  ASSERT_EQ(s->pairs.size(), 2u);
  EXPECT_EQ(s->pairs[0].offset, 1);
  EXPECT_EQ(s->pairs[1].offset, 11);
  const std::vector<model::ImageSpan> all = s->all();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].offset, 1);
  EXPECT_EQ(all[1].offset, 4);
  EXPECT_EQ(all[2].offset, 11);

  std::vector<int32_t> wrong = {kVideo, kVideo};
  absl::StatusOr<VisionSpans> bad = ExpandVisionPads(wrong, kImage, {}, kVideo, {pair}, "chat");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "2 video frame placeholders"))
      << bad.status();
}

}  // namespace
}  // namespace qwen::multimodal

// Video input through the real server: `qwen serve --mmproj`, talked to over gRPC, with the tiny
// model, the tiny tower and the tiny videos of tests/data/video.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

constexpr char kField[] = "chat.messages[0].parts[0].video";

std::string Clip(const std::string& name) { return ReadFile(DataPath("video/" + name)); }

v1::Chat VideoChat(const v1::Video& video, const std::string& question = "Describe this video.") {
  v1::Chat chat;
  v1::ChatMessage* m = chat.add_messages();
  m->set_role("user");
  *m->add_parts()->mutable_video() = video;
  m->add_parts()->set_text(question);
  return chat;
}

v1::Video File(const std::string& data) {
  v1::Video v;
  v.set_data(data);
  return v;
}

v1::GenerateRequest Greedy(const v1::Chat& chat, int tokens) {
  v1::GenerateRequest req;
  *req.mutable_chat() = chat;
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  return req;
}

// clip_h264.mp4 with bytes of its first frame's data overwritten: the container is whole (the
// front end's probe passes), the H.264 data does not decode (only the worker finds out).
std::string UndecodableMp4() {
  std::string bytes = Clip("clip_h264.mp4");
  const size_t mdat = bytes.find("mdat");
  for (int k = 0; k < 16; ++k) bytes[mdat + 2000 + k] = '\xff';
  return bytes;
}

int CountLines(const std::string& log, absl::string_view needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) n += absl::StrContains(line, needle);
  return n;
}

class VideoE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.workers = 1;
    o.slots = 2;
    o.extra = {"--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f32.gguf"),
               "--video_max_frame_pixels=100000", "--log_level=debug"};
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->Stub();
  }
  static uint32_t Restarts() {
    uint32_t n = 0;
    const v1::GetModelInfoResponse info = server_->Info();
    for (const auto& w : info.serving().worker_status()) n += w.restarts();
    return n;
  }
  static ServerProcess* server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

ServerProcess* VideoE2eTest::server_ = nullptr;

TEST_F(VideoE2eTest, ModelInfoReportsVideo) {
  const v1::GetModelInfoResponse info = server_->Info();
  EXPECT_TRUE(info.capabilities().video());
  const v1::VideoSupport& v = info.vision().video();
  EXPECT_EQ(v.default_fps(), 2.0f);
  EXPECT_EQ(v.max_frames(), 768u);
  EXPECT_EQ(v.min_pixels(), 4096u);
  EXPECT_EQ(v.max_pixels(), 4194304u);
  EXPECT_EQ(v.max_frame_pixels(), 100000u);
  EXPECT_EQ(v.max_duration_seconds(), 600.0);
  EXPECT_NE(std::find(v.codecs().begin(), v.codecs().end(), "vp9"), v.codecs().end());
  EXPECT_NE(std::find(v.containers().begin(), v.containers().end(), "gif"), v.containers().end());
}

// A video part streams an answer, with the encoding's progress before the first token.
TEST_F(VideoE2eTest, AVideoStreamsAnAnswer) {
  const GenerateResult r = Generate(stub_.get(), Greedy(VideoChat(File(Clip("clip_h264.mp4"))), 8));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.token_ids.size(), 8u);
  ASSERT_TRUE(r.has_completion);
  EXPECT_EQ(r.completion.usage().prompt_tokens(), 118u);
  EXPECT_EQ(r.completion.usage().video_tokens(), 60u);
  EXPECT_EQ(r.completion.usage().image_tokens(), 0u);
  std::vector<uint32_t> progress;
  bool token_seen = false;
  for (const v1::GenerateResponse& m : r.messages) {
    if (m.has_progress()) {
      EXPECT_FALSE(token_seen) << "progress after a token";
      EXPECT_EQ(m.progress().frames_total(), 6u);
      progress.push_back(m.progress().frames_encoded());
    }
    token_seen = token_seen || m.token_ids_size() > 0;
  }
  ASSERT_FALSE(progress.empty());
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_EQ(progress.back(), 6u);

  // RenderChat shows the same prompt: the reference's tokens, the pairs and their timestamps.
  v1::RenderChatRequest rr;
  *rr.mutable_chat() = VideoChat(File(Clip("clip_h264.mp4")));
  v1::RenderChatResponse rendered;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->RenderChat(&ctx, rr, &rendered).ok());
  const auto ref = nlohmann::json::parse(ReadFile(DataPath("video/ref/reference.json")));
  EXPECT_EQ(std::vector<int32_t>(rendered.token_ids().begin(), rendered.token_ids().end()),
            ref["cases"][0]["token_ids"].get<std::vector<int32_t>>());
  ASSERT_EQ(rendered.videos_size(), 1);
  ASSERT_EQ(rendered.videos(0).pairs_size(), 3);
  EXPECT_TRUE(absl::StrContains(rendered.prompt(), "<1.5 seconds><|vision_start|>"));
  EXPECT_EQ(rendered.videos(0).tokens(), 60u);
}

// A second question about the same video, in a new conversation and without the prefix cache:
// its frame pairs come from the worker's embedding cache, none is encoded again.
TEST_F(VideoE2eTest, ASecondQuestionEncodesNothing) {
  const std::string webm = Clip("clip_vp9.webm");
  v1::GenerateRequest first = Greedy(VideoChat(File(webm), "What moves?"), 4);
  first.set_prefix_cache(false);
  const int encoded_before = CountLines(server_->Log(), "\"vision_encoded\"");
  const int hits_before = CountLines(server_->Log(), "\"vision_cache_hit\"");
  ASSERT_TRUE(Generate(stub_.get(), first).status.ok());
  v1::GenerateRequest second = Greedy(VideoChat(File(webm), "Which colours are there?"), 4);
  second.set_prefix_cache(false);
  const GenerateResult r = Generate(stub_.get(), second);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  // The worker logs a line per encode or cache hit; give its log a moment to land.
  absl::SleepFor(absl::Milliseconds(200));
  const std::string log = server_->Log();
  EXPECT_EQ(CountLines(log, "\"vision_encoded\"") - encoded_before, 2) << "two pairs, once";
  EXPECT_EQ(CountLines(log, "\"vision_cache_hit\"") - hits_before, 2);
  EXPECT_EQ(r.completion.usage().cached_tokens(), 0u);
}

// Bad files are INVALID_ARGUMENT naming the field, whether the front end finds out (the
// container, the codec, a limit) or only the worker (data that does not decode); the worker
// lives on and serves the next video.
TEST_F(VideoE2eTest, BadVideosAreInvalidArgumentsAndTheWorkerLives) {
  const uint32_t restarts = Restarts();
  std::string garbage = Clip("clip_h264.mp4").substr(0, 40);
  garbage += std::string(4000, '\x5a');
  struct Case {
    const char* what;
    std::string data;
    const char* want;
  } cases[] = {
      {"corrupt", garbage, "corrupt or truncated mp4"},
      {"truncated", Clip("clip_vp9.webm").substr(0, 4000), "corrupt or truncated matroska"},
      {"oversized", Clip("clip_480x360.mp4"), "(max_frame_pixels)"},
      {"too long", Clip("clip_long.mp4"), "(max_duration_seconds)"},
      {"disallowed codec", Clip("clip_mpeg4.mp4"), "its video codec mpeg4 is not accepted"},
      {"undecodable", UndecodableMp4(), "corrupt or truncated h264 data"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const GenerateResult r = Generate(stub_.get(), Greedy(VideoChat(File(c.data)), 4));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.status.error_message();
    EXPECT_TRUE(absl::StartsWith(r.status.error_message(), kField)) << r.status.error_message();
    EXPECT_TRUE(absl::StrContains(r.status.error_message(), c.want)) << r.status.error_message();
  }
  const GenerateResult ok = Generate(stub_.get(), Greedy(VideoChat(File(Clip("clip.gif"))), 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(Restarts(), restarts);
}

// Other ways in: a data: URL, frames the client sampled, several videos in one message.
TEST_F(VideoE2eTest, DataUrlsFramesAndSeveralVideos) {
  v1::Video url;
  url.set_url("data:video/webm;base64," + absl::Base64Escape(Clip("clip_vp8.webm")));
  GenerateResult r = Generate(stub_.get(), Greedy(VideoChat(url), 4));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().video_tokens(), 8u);

  v1::Video frames;
  for (double t : {0.0, 1.0, 2.0, 3.0}) {
    v1::VideoFrame* f = frames.add_frames();
    f->mutable_image()->set_data(ReadFile(DataPath("vision/img_128x128.png")));
    f->set_timestamp(t);
  }
  r = Generate(stub_.get(), Greedy(VideoChat(frames), 4));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().video_tokens(), 32u);  // 2 pairs of 4x4

  v1::Chat two = VideoChat(File(Clip("clip.gif")));
  *two.mutable_messages(0)->add_parts()->mutable_video() = File(Clip("clip_h264.mkv"));
  r = Generate(stub_.get(), Greedy(two, 4));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().video_tokens(), 8u + 12u);
}

// `qwen client --chat --video` sends the file with the first message.
TEST_F(VideoE2eTest, ClientSendsVideos) {
  ProcessResult r =
      RunProcess({BinPath("qwen"), "client", "--server=" + server_->address(), "--chat", "--video",
                  DataPath("video/clip.gif"), "--prompt", "Describe this video.", "--temperature",
                  "0", "--max_tokens", "4", "--json"},
                 "");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"videoTokens\":8")) << r.out;
  r = RunProcess({BinPath("qwen"), "client", "--server=" + server_->address(), "--video",
                  DataPath("video/clip.gif"), "--prompt", "x"},
                 "");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--video and --image need --chat")) << r.err;
}

// `qwen generate --video` runs the same prompt as the server: the reference's tokens (the
// processor's expansion), its frame pairs in --json, and the server's greedy answer (both run the
// engine on the same tower); a file the server refuses is refused here too, naming the file.
TEST_F(VideoE2eTest, GenerateAgreesWithTheServer) {
  const std::string chat_path =
      absl::StrCat(std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp",
                   "/qwen_video_e2e_", getpid(), "_chat.json");
  {
    std::ofstream chat_file(chat_path);
    chat_file << R"({"messages": [{"role": "user", "content": [{"type": "video"},
        {"type": "text", "text": "Describe this video."}]}]})";
  }
  const std::vector<std::string> base = {BinPath("qwen"),
                                         "generate",
                                         "--model",
                                         DataPath("models/tiny-qwen35-f32.gguf"),
                                         "--mmproj",
                                         DataPath("models/mmproj-tiny-qwen35-f32.gguf"),
                                         "--chat",
                                         chat_path,
                                         "--temperature",
                                         "0",
                                         "--max_tokens",
                                         "8",
                                         "--ignore_eos",
                                         "--threads",
                                         "1",
                                         "--json",
                                         "--video"};
  std::vector<std::string> args = base;
  args.push_back(DataPath("video/clip_h264.mp4"));
  ProcessResult p = RunProcess(args);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const auto out = nlohmann::json::parse(p.out, nullptr, false);
  ASSERT_FALSE(out.is_discarded()) << p.out;
  const auto ref = nlohmann::json::parse(ReadFile(DataPath("video/ref/reference.json")));
  EXPECT_EQ(out["prompt_tokens"].get<std::vector<int32_t>>(),
            ref["cases"][0]["token_ids"].get<std::vector<int32_t>>());
  ASSERT_EQ(out["videos"].size(), 1u);
  const auto& pairs = out["videos"][0]["pairs"];
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_NEAR(pairs[1]["timestamp"].get<double>(), 1.55, 1e-9);
  EXPECT_TRUE(out.contains("encode_s"));

  const GenerateResult r = Generate(stub_.get(), Greedy(VideoChat(File(Clip("clip_h264.mp4"))), 8));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(out["tokens"].get<std::vector<int32_t>>(), r.token_ids);

  args = base;
  args.push_back(DataPath("video/clip_mpeg4.mp4"));
  p = RunProcess(args);
  EXPECT_EQ(p.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "--video " + DataPath("video/clip_mpeg4.mp4") + ": "))
      << p.err;
  EXPECT_TRUE(absl::StrContains(p.err, "mpeg4 is not accepted")) << p.err;
  std::remove(chat_path.c_str());
}

// A server whose frame pairs take 300 ms each (a testing pause before every pair's encode): a
// request cancelled while its video encodes stops within one frame pair.
TEST(VideoCancelE2eTest, CancellingStopsTheEncodeWithinOneFramePair) {
  ServerProcess::Options o;
  o.workers = 1;
  o.slots = 2;
  o.extra = {"--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f32.gguf"),
             "--testing_video_pair_delay=300ms", "--video_max_duration=1000"};
  std::string error;
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  v1::Video v = File(Clip("clip_long.mp4"));
  v.set_max_frames(24);  // 12 pairs: 3.6 s of pauses
  v1::GenerateRequest req = Greedy(VideoChat(v), 4);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  uint32_t seen = 0, total = 0;
  while (reader->Read(&m)) {
    if (m.has_progress()) {
      seen = m.progress().frames_encoded();
      total = m.progress().frames_total();
      ctx.TryCancel();
      break;
    }
    ASSERT_EQ(m.token_ids_size(), 0) << "a token before any progress";
  }
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_EQ(total, 24u);
  ASSERT_GE(seen, 2u);
  // The worker says how far the encode got when the request ended.
  int64_t encoded = -1;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (encoded < 0 && absl::Now() < deadline) {
    for (absl::string_view line : absl::StrSplit(server->Log(), '\n')) {
      if (!absl::StrContains(line, "video_encode_cancelled")) continue;
      const size_t at = line.find("\"frames_encoded\":");
      if (at == absl::string_view::npos) continue;
      absl::string_view rest = line.substr(at + 17);
      rest = rest.substr(0, rest.find_first_of(",}"));
      (void)absl::SimpleAtoi(rest, &encoded);
    }
    if (encoded < 0) absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE(encoded, 0) << server->Log();
  std::printf("cancelled after the client saw %u of 24 frames encoded; the worker stopped at %ld\n",
              seen, static_cast<long>(encoded));
  EXPECT_LE(encoded, seen + 2) << "more than one frame pair was encoded after the cancel";
  EXPECT_LT(encoded, 24);
  // The worker goes on: the same server answers a short video.
  const GenerateResult ok = Generate(stub.get(), Greedy(VideoChat(File(Clip("clip.gif"))), 2));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

}  // namespace
}  // namespace qwen::testing

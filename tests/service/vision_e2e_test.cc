// Image input through the real server: `qwen serve --mmproj`, talked to over gRPC.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

constexpr int kVocab = 1024;
constexpr int32_t kImagePad = 1010;

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

std::string Png(const std::string& name) { return ReadFile(DataPath("vision/" + name + ".png")); }

// The fixtures' prompt: one user message, the image, then "Describe this.".
v1::Chat ImageChat(const v1::Image& image) {
  v1::Chat chat;
  v1::ChatMessage* m = chat.add_messages();
  m->set_role("user");
  *m->add_parts()->mutable_image() = image;
  m->add_parts()->set_text("Describe this.");
  return chat;
}

v1::Image Bytes(const std::string& data) {
  v1::Image im;
  im.set_data(data);
  return im;
}

class VisionE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.workers = 1;
    o.slots = 2;
    o.extra = {"--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f32.gguf")};
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
  static ServerProcess* server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

ServerProcess* VisionE2eTest::server_ = nullptr;

TEST_F(VisionE2eTest, ModelInfoReportsVision) {
  const v1::GetModelInfoResponse info = server_->Info();
  EXPECT_TRUE(info.capabilities().vision());
  ASSERT_TRUE(info.has_vision());
  EXPECT_EQ(info.vision().projection_dim(), 256u);
  EXPECT_EQ(info.vision().patch_size(), 16u);
  EXPECT_EQ(info.vision().spatial_merge_size(), 2u);
  EXPECT_GT(info.vision().parameter_count(), 0u);
  EXPECT_FALSE(info.vision().name().empty());
}

// img_128x128 needs no resize in either processor: the server must land near llama.cpp.
TEST_F(VisionE2eTest, ImageChatMatchesLlamaCpp) {
  const auto j = nlohmann::json::parse(ReadFile(DataPath("vision/ref_f32_nofa/reference.json")));
  std::vector<int32_t> greedy;
  for (const auto& c : j["cases"]) {
    if (c["name"] == "img_128x128") greedy = c["greedy"].get<std::vector<int32_t>>();
  }
  ASSERT_EQ(greedy.size(), 16u);
  const std::vector<float> ref =
      Floats(ReadFile(DataPath("vision/ref_f32_nofa/img_128x128.greedy_logits.f32")));
  ASSERT_EQ(ref.size(), size_t{17} * kVocab);

  v1::GenerateRequest req;
  *req.mutable_chat() = ImageChat(Bytes(Png("img_128x128")));
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(16);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  req.mutable_output()->set_logprobs(true);
  req.mutable_output()->set_top_logprobs(5);
  req.mutable_output()->set_raw_text(true);
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().prompt_tokens(), 40u);
  EXPECT_EQ(r.completion.usage().image_tokens(), 16u);
  ASSERT_EQ(r.token_ids.size(), 16u);
  ASSERT_EQ(r.logprobs.size(), 16u);
  double worst = 0;
  for (size_t g = 0; g < 16; ++g) {
    const float* row = ref.data() + g * kVocab;
    std::vector<float> sorted(row, row + kVocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] <= 0.1f) break;  // past here the other token is legitimate
    EXPECT_EQ(r.token_ids[g], greedy[g]) << "step " << g;
    // The reference's log-probabilities of the server's top tokens.
    double lse = 0;
    for (int v = 0; v < kVocab; ++v) lse += std::exp(double{row[v]} - sorted[0]);
    lse = std::log(lse) + sorted[0];
    for (const auto& top : r.logprobs[g].top_logprobs()) {
      worst = std::max(worst, std::fabs(top.logprob() - (row[top.token_id()] - lse)));
    }
  }
  std::printf("max |logprob - reference| over the top-5 of each step: %.4f\n", worst);
  EXPECT_LT(worst, 0.1);
}

// An image request beside a running stream on the same worker: the worker's engine encodes the
// image on its encoder thread (the real vision tower, on a context of its own), the stream goes
// on, and the image request gets what it gets alone.
TEST_F(VisionE2eTest, ImageBesideARunningStreamGetsItsSoloResult) {
  v1::GenerateRequest image;
  *image.mutable_chat() = ImageChat(Bytes(Png("img_128x128")));
  image.mutable_sampling()->set_temperature(0);
  image.mutable_stopping()->set_max_tokens(12);
  image.mutable_stopping()->set_ignore_eos(true);
  image.mutable_output()->set_return_token_ids(true);
  const GenerateResult alone = Generate(stub_.get(), image);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  ASSERT_EQ(alone.token_ids.size(), 12u);

  v1::GenerateRequest text;
  text.set_prompt("Tell me a long story.");
  text.mutable_sampling()->set_temperature(0);
  text.mutable_stopping()->set_max_tokens(2000);
  text.mutable_stopping()->set_ignore_eos(true);
  text.mutable_output()->set_return_token_ids(true);
  BackgroundStream stream(stub_.get(), text);
  ASSERT_TRUE(stream.WaitFirstMessage()) << stream.result().status.error_message();
  const GenerateResult beside = Generate(stub_.get(), image);
  ASSERT_TRUE(beside.status.ok()) << beside.status.error_message();
  EXPECT_EQ(beside.token_ids, alone.token_ids);
  EXPECT_FALSE(stream.done()) << "the stream ended first: the two requests did not run together";
  const int before = stream.tokens();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (stream.tokens() < before + 10 && !stream.done() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_GE(stream.tokens(), before + 10) << "the stream stopped after the image request";
  stream.Cancel();
  ASSERT_TRUE(stream.WaitDone());
}

// The same image as a data: URL; RenderChat shows where its tokens are.
TEST_F(VisionE2eTest, DataUrlAndRenderChatReportTokensAndPositions) {
  v1::Image url;
  url.set_url("data:image/png;base64," + absl::Base64Escape(Png("img_128x128")));
  v1::RenderChatRequest rr;
  *rr.mutable_chat() = ImageChat(url);
  v1::RenderChatResponse rendered;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->RenderChat(&ctx, rr, &rendered).ok());
  EXPECT_TRUE(absl::StrContains(rendered.prompt(), "<|vision_start|><|image_pad|><|vision_end|>"));
  ASSERT_EQ(rendered.token_ids_size(), 40);
  ASSERT_EQ(rendered.images_size(), 1);
  const v1::ImageTokens& im = rendered.images(0);
  EXPECT_EQ(im.token_offset(), 5u);
  EXPECT_EQ(im.tokens(), 16u);
  EXPECT_EQ(im.positions(), 4u);
  EXPECT_EQ(im.rows(), 4u);
  EXPECT_EQ(im.cols(), 4u);
  EXPECT_EQ(im.width(), 128u);
  EXPECT_EQ(im.height(), 128u);
  for (int k = 0; k < 16; ++k) EXPECT_EQ(rendered.token_ids(5 + k), kImagePad);
  EXPECT_EQ(rendered.token_ids(4), 1007);
  EXPECT_EQ(rendered.token_ids(21), 1008);
}

// Images in two turns of one conversation, two in the last message: every one gets its own
// tokens, and usage counts them all.
TEST_F(VisionE2eTest, SeveralImagesPerMessageAndConversation) {
  v1::Chat chat;
  v1::ChatMessage* m = chat.add_messages();
  m->set_role("user");
  *m->add_parts()->mutable_image() = Bytes(Png("img_200x130"));
  m->add_parts()->set_text("What is this?");
  m = chat.add_messages();
  m->set_role("assistant");
  m->set_content("A picture.");
  m = chat.add_messages();
  m->set_role("user");
  m->add_parts()->set_text("Compare");
  *m->add_parts()->mutable_image() = Bytes(Png("img_128x128"));
  m->add_parts()->set_text("with");
  *m->add_parts()->mutable_image() = Bytes(Png("img_200x130"));

  v1::RenderChatRequest rr;
  *rr.mutable_chat() = chat;
  v1::RenderChatResponse rendered;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->RenderChat(&ctx, rr, &rendered).ok());
  ASSERT_EQ(rendered.images_size(), 3);
  const uint32_t want_tokens[3] = {24, 16, 24}, want_positions[3] = {6, 4, 6};
  int pads = 0;
  for (int32_t id : rendered.token_ids()) pads += id == kImagePad;
  EXPECT_EQ(pads, 64);
  for (int k = 0; k < 3; ++k) {
    const v1::ImageTokens& im = rendered.images(k);
    EXPECT_EQ(im.tokens(), want_tokens[k]) << k;
    EXPECT_EQ(im.positions(), want_positions[k]) << k;
    EXPECT_EQ(rendered.token_ids(im.token_offset() - 1), 1007) << k;
    EXPECT_EQ(rendered.token_ids(im.token_offset() + im.tokens()), 1008) << k;
  }
  EXPECT_EQ(rendered.images(0).rows(), 4u);
  EXPECT_EQ(rendered.images(0).cols(), 6u);

  v1::GenerateRequest req;
  *req.mutable_chat() = chat;
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(4);
  req.mutable_stopping()->set_ignore_eos(true);
  GenerateResult r = Generate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().prompt_tokens(), static_cast<uint32_t>(rendered.token_ids_size()));
  EXPECT_EQ(r.completion.usage().image_tokens(), 64u);
  EXPECT_EQ(r.completion.usage().generated_tokens(), 4u);

  // Tokenize takes images for the placeholders of its text.
  v1::TokenizeRequest tr;
  tr.set_text(
      "<|vision_start|><|image_pad|><|vision_end|>x<|vision_start|><|image_pad|><|vision_end|>");
  *tr.add_images() = Bytes(Png("img_128x128"));
  *tr.add_images() = Bytes(Png("img_200x130"));
  v1::TokenizeResponse tokens;
  grpc::ClientContext tctx;
  ASSERT_TRUE(stub_->Tokenize(&tctx, tr, &tokens).ok());
  ASSERT_EQ(tokens.images_size(), 2);
  EXPECT_EQ(tokens.images(0).token_offset(), 1u);
  EXPECT_EQ(tokens.images(1).tokens(), 24u);
  EXPECT_EQ(tokens.token_ids_size(), 1 + 16 + 1 + 1 + 1 + 24 + 1);
}

TEST_F(VisionE2eTest, BadImagesAreRefusedNamingTheField) {
  auto generate = [&](const v1::Chat& chat) {
    v1::GenerateRequest req;
    *req.mutable_chat() = chat;
    req.mutable_stopping()->set_max_tokens(2);
    return Generate(stub_.get(), req).status;
  };
  // Not an image.
  v1::Chat chat = ImageChat(Bytes("GIF89a this is not something we decode"));
  grpc::Status st = generate(chat);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(st.error_message(), "chat.messages[0].parts[0].image"))
      << st.error_message();
  // A URL the server would have to fetch.
  v1::Image http;
  http.set_url("http://example.com/cat.png");
  st = generate(ImageChat(http));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "chat.messages[0].parts[0].image.url"))
      << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "data: URLs")) << st.error_message();
  // A type that contradicts the bytes.
  v1::Image wrong = Bytes(Png("img_128x128"));
  wrong.set_mime_type("image/jpeg");
  st = generate(ImageChat(wrong));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "mime_type")) << st.error_message();
  // A body cut after a good header: the front end reads only the header; the worker decodes the
  // image and refuses it, naming the part, as the client's error.
  std::string cut = Png("img_128x128");
  cut.resize(cut.size() / 2);
  st = generate(ImageChat(Bytes(cut)));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_TRUE(absl::StartsWith(st.error_message(), "chat.messages[0].parts[0].image"))
      << st.error_message();
  // Both data and url, or neither.
  v1::Image empty;
  st = generate(ImageChat(empty));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // More images than placeholders in Tokenize.
  v1::TokenizeRequest tr;
  tr.set_text("no placeholder");
  *tr.add_images() = Bytes(Png("img_128x128"));
  v1::TokenizeResponse tokens;
  grpc::ClientContext tctx;
  st = stub_->Tokenize(&tctx, tr, &tokens);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "0 image placeholders")) << st.error_message();
}

// `qwen client --chat --image` and the /image command send the file with the next message.
TEST_F(VisionE2eTest, ClientSendsImages) {
  const std::string png = DataPath("vision/img_128x128.png");
  const std::string server = "--server=" + server_->address();
  // The greedy reasoning llama.cpp's continuation starts with (tokens 758, 545, 359).
  const std::string want = "read support Lion";
  ProcessResult r = RunProcess(
      {BinPath("qwen"), "client", server, "--chat", "--image", png, "--prompt", "Describe this.",
       "--temperature", "0", "--max_tokens", "6", "--reasoning", "show"},
      "");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, want)) << r.out;
  r = RunProcess({BinPath("qwen"), "client", server, "--chat", "--temperature", "0", "--max_tokens",
                  "6", "--reasoning", "show"},
                 "/image " + png + "\nDescribe this.\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, want)) << r.out;
  r = RunProcess({BinPath("qwen"), "client", server, "--image", png, "--prompt", "x"}, "");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--image need")) << r.err;
}

// A server without --mmproj says so.
TEST(VisionE2eWithoutMmproj, ImagesAreRefusedAsAPrecondition) {
  ServerProcess::Options o;
  o.workers = 1;
  o.slots = 1;
  std::string error;
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  EXPECT_FALSE(server->Info().capabilities().vision());
  EXPECT_FALSE(server->Info().has_vision());
  auto stub = server->Stub();
  v1::GenerateRequest req;
  *req.mutable_chat() = ImageChat(Bytes(Png("img_128x128")));
  req.mutable_stopping()->set_max_tokens(2);
  GenerateResult r = Generate(stub.get(), req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StartsWith(r.status.error_message(), "chat.messages[0].parts[0].image"))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "--mmproj")) << r.status.error_message();
}

}  // namespace
}  // namespace qwen::testing

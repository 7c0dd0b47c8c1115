// End to end: `qwen serve --model ollama:qwen3.5:4b` on a fake Ollama store holding the tiny
// model in Ollama's own layout, side by side with a server on the same weights in llama.cpp's
// layout. Same weights, same engine: the same logits, bit for bit. The Ollama file bundles its
// vision tower, which serves images without --mmproj; the other server gets the same tower as
// llama.cpp's separate F16 mmproj.
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/fake_ollama_store.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;

class OllamaE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    store_ = new FakeOllamaStore(::testing::TempDir());
    const auto model =
        store_->AddBlob(DataPath("models/tiny-qwen35-ollama-q3_k_m.gguf"), kOllamaModelMedia);
    store_->AddManifest("registry.ollama.ai/library/qwen3.5/4b", {model});
    // The server finds the store as Ollama does; its workers get the resolved blob.
    setenv("OLLAMA_MODELS", store_->dir().c_str(), 1);
    std::string error;
    ServerProcess::Options o;
    o.workers = 1;
    o.slots = 2;
    o.model_path = "ollama:qwen3.5:4b";
    ollama_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(ollama_, nullptr) << error;
    o.model_path.clear();
    o.model = "models/tiny-qwen35-q3_k_m.gguf";
    o.extra = {"--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f16.gguf")};
    llama_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(llama_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete ollama_;
    delete llama_;
    delete store_;
    unsetenv("OLLAMA_MODELS");
  }

  static v1::GetModelInfoResponse Info(ServerProcess* s) {
    grpc::ClientContext ctx;
    v1::GetModelInfoResponse info;
    EXPECT_TRUE(s->Stub()->GetModelInfo(&ctx, {}, &info).ok());
    return info;
  }

  static FakeOllamaStore* store_;
  static ServerProcess* ollama_;
  static ServerProcess* llama_;
};

FakeOllamaStore* OllamaE2eTest::store_ = nullptr;
ServerProcess* OllamaE2eTest::ollama_ = nullptr;
ServerProcess* OllamaE2eTest::llama_ = nullptr;

TEST_F(OllamaE2eTest, ModelInfoNamesTheLayoutAndTheModel) {
  ASSERT_NE(ollama_, nullptr);
  const v1::GetModelInfoResponse o = Info(ollama_);
  const v1::GetModelInfoResponse l = Info(llama_);
  EXPECT_EQ(o.file_layout(), "ollama");
  EXPECT_EQ(l.file_layout(), "llama.cpp");
  EXPECT_EQ(o.name(), "qwen3.5:4b");  // Ollama's files carry no general.name
  EXPECT_EQ(o.architecture(), "qwen35");
  EXPECT_EQ(o.vocab_size(), l.vocab_size());
  // Ollama's files list the generation config's end tokens too.
  EXPECT_THAT(o.eos_token_ids(), ::testing::UnorderedElementsAre(1000, 998));
  EXPECT_TRUE(o.capabilities().chat());
  EXPECT_THAT(ollama_->Log(), HasSubstr("qwen3.5:4b = " + store_->dir() + "/blobs/sha256-"));
}

// Teacher-forced: both servers score the same forced continuation of the same chat; every
// token's logprob and top-20 alternatives (the log-softmax of the logits) are identical.
TEST_F(OllamaE2eTest, TeacherForcedLogitsEqualTheLlamaCppFiles) {
  ASSERT_NE(ollama_, nullptr);
  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Tell me about the sea, in three sentences.");
  req.mutable_chat()->set_enable_thinking(false);
  req.mutable_stopping()->set_max_tokens(24);
  req.mutable_output()->set_logprobs(true);
  req.mutable_output()->set_top_logprobs(20);
  req.mutable_output()->set_return_token_ids(true);
  const std::string forced = "The sea is wide and deep. It moves with the moon. Ships cross it.";
  GenerateResult o = Generate(ollama_->Stub().get(), req, absl::Seconds(120), forced);
  GenerateResult l = Generate(llama_->Stub().get(), req, absl::Seconds(120), forced);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  ASSERT_TRUE(l.status.ok()) << l.status.error_message();
  EXPECT_EQ(o.text, l.text);
  EXPECT_EQ(o.token_ids, l.token_ids);
  EXPECT_EQ(o.completion.usage().prompt_tokens(), l.completion.usage().prompt_tokens());
  ASSERT_EQ(o.logprobs.size(), l.logprobs.size());
  ASSERT_GT(o.logprobs.size(), 10u);
  for (size_t i = 0; i < o.logprobs.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(o.logprobs[i].token_id(), l.logprobs[i].token_id());
    EXPECT_EQ(o.logprobs[i].logprob(), l.logprobs[i].logprob());
    ASSERT_EQ(o.logprobs[i].top_logprobs_size(), 20);
    ASSERT_EQ(l.logprobs[i].top_logprobs_size(), 20);
    for (int k = 0; k < 20; ++k) {
      EXPECT_EQ(o.logprobs[i].top_logprobs(k).token_id(), l.logprobs[i].top_logprobs(k).token_id());
      EXPECT_EQ(o.logprobs[i].top_logprobs(k).logprob(), l.logprobs[i].top_logprobs(k).logprob());
    }
  }
}

TEST_F(OllamaE2eTest, GreedyGenerationIsTheSame) {
  ASSERT_NE(ollama_, nullptr);
  v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(32);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  GenerateResult o = Generate(ollama_->Stub().get(), req);
  GenerateResult l = Generate(llama_->Stub().get(), req);
  ASSERT_TRUE(o.status.ok() && l.status.ok());
  EXPECT_EQ(o.token_ids, l.token_ids);
  EXPECT_EQ(o.token_ids.size(), 32u);
}

// The bundled tower (v.* tensors, one Conv3D patch kernel, split q/k/v) is the F16 mmproj's
// tower under Ollama's names: an image gives the same tokens and, up to the order of float
// sums, the same logits.
TEST_F(OllamaE2eTest, TheBundledVisionTowerServesImagesWithoutMmproj) {
  ASSERT_NE(ollama_, nullptr);
  EXPECT_TRUE(Info(ollama_).capabilities().vision());
  v1::GenerateRequest req;
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->add_parts()->mutable_image()->set_data(ReadFile(DataPath("vision/img_128x128.png")));
  m->add_parts()->set_text("Describe this.");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(12);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  req.mutable_output()->set_logprobs(true);
  req.mutable_output()->set_top_logprobs(5);
  GenerateResult o = Generate(ollama_->Stub().get(), req);
  GenerateResult l = Generate(llama_->Stub().get(), req);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  ASSERT_TRUE(l.status.ok()) << l.status.error_message();
  EXPECT_EQ(o.completion.usage().image_tokens(), 16u);
  EXPECT_EQ(o.completion.usage().prompt_tokens(), l.completion.usage().prompt_tokens());
  EXPECT_EQ(o.token_ids, l.token_ids);
  ASSERT_EQ(o.logprobs.size(), l.logprobs.size());
  for (size_t i = 0; i < o.logprobs.size(); ++i) {
    for (int k = 0; k < o.logprobs[i].top_logprobs_size(); ++k) {
      // The same weights and an image tower computed the same way: the same bits.
      EXPECT_EQ(o.logprobs[i].top_logprobs(k).logprob(), l.logprobs[i].top_logprobs(k).logprob())
          << "token " << i << " rank " << k;
    }
  }
}

// A name the store does not hold: the server does not start and says where it looked.
TEST_F(OllamaE2eTest, AMissingModelStopsStartUpWithWhereItLooked) {
  int code = 0;
  const std::string out = RunCommand(
      absl::StrCat(BinPath("qwen"), " serve --model ollama:qwen3.5:9b --port 0 2>&1"), &code);
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr(store_->dir() + "/manifests/registry.ollama.ai/library/qwen3.5/9b"));
}

}  // namespace
}  // namespace qwen::testing

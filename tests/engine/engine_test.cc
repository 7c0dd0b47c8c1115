// The scheduler: continuous batching gives each sequence what it gets alone.
#include "inference/engine/engine.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/engine/collector.h"
#include "tests/model/model_runner.h"
#include "tests/model/reference_data.h"

namespace qwen::engine {
namespace {

using ::qwen::testing::Collector;
using ::qwen::testing::LoadModel;
using ::qwen::testing::LoadReference;

struct ImagePrompt;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModel("models/tiny-qwen35-f32.gguf");
    ASSERT_NE(m.model, nullptr);
    file_ = m.file;
    model_ = std::shared_ptr<model::Model>(std::move(m.model));
  }
  std::unique_ptr<Engine> MakeEngine(int slots, int64_t budget = 64) {
    EngineOptions o;
    o.n_slots = slots;
    o.n_ctx = 2048;
    o.n_threads = 2;
    o.prefill_chunk = budget;
    auto e = Engine::Create(model_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  static GenerationRequest Greedy(uint64_t id, std::vector<int32_t> prompt, int n) {
    GenerationRequest r;
    r.id = id;
    r.prompt = std::move(prompt);
    r.max_tokens = n;
    r.sampling.temperature = 0;
    return r;
  }
  // Greedy() of the image prompt, with its image.
  static GenerationRequest ImageRequest(uint64_t id, const ImagePrompt& p, int n);
  std::shared_ptr<const gguf::GgufFile> file_;
  std::shared_ptr<model::Model> model_;
};

TEST_F(EngineTest, GreedyMatchesLlamaCpp) {
  auto engine = MakeEngine(2);
  for (const auto& c : LoadReference("reference/llama.cpp/f32")) {
    auto sink = std::make_shared<Collector>();
    ASSERT_TRUE(engine->Submit(Greedy(1, c.prompt, static_cast<int>(c.greedy.size())), sink).ok());
    ASSERT_TRUE(sink->Wait());
    EXPECT_EQ(sink->tokens(), c.greedy) << c.name;
    EXPECT_EQ(sink->info().reason, FinishReason::kLength);
    EXPECT_EQ(sink->info().generated_tokens, static_cast<int32_t>(c.greedy.size()));
  }
}

// Eight requests on four slots with a small step budget: prompts are prefilled in chunks
// between other sequences' decode steps, and everyone gets their solo result.
TEST_F(EngineTest, ConcurrentRequestsMatchSoloRuns) {
  const auto cases = LoadReference("reference/llama.cpp/f32");
  auto engine = MakeEngine(4, 48);
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < 8; ++i) {
    const auto& c = cases[i % 4];
    sinks.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(
        engine->Submit(Greedy(100 + i, c.prompt, static_cast<int>(c.greedy.size())), sinks.back())
            .ok());
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    EXPECT_EQ(sinks[i]->tokens(), cases[i % 4].greedy) << "request " << i;
  }
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.active, 0);
  EXPECT_EQ(s.queued, 0);
  EXPECT_GT(s.steps, 0);
  // Every step is one forward pass through every layer; supervision watches this count. (The
  // last step may not be counted yet: it is, just after its sequences were told they finished.)
  EXPECT_GE(s.layers_done, s.steps * model_->config().n_layer);
  EXPECT_LE(s.layers_done, (s.steps + 1) * model_->config().n_layer);
}

TEST_F(EngineTest, StopTokensAndSeededSampling) {
  const auto c = LoadReference("reference/llama.cpp/f32")[0];
  auto engine = MakeEngine(2);
  // Stop on the 5th greedy token: it is reported, then the sequence ends.
  GenerationRequest r = Greedy(1, c.prompt, 32);
  r.stop_tokens = {c.greedy[4]};
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->tokens(), std::vector<int32_t>(c.greedy.begin(), c.greedy.begin() + 5));
  EXPECT_EQ(sink->info().reason, FinishReason::kStopToken);
  EXPECT_EQ(sink->info().stop_token, c.greedy[4]);

  // Same seed, same tokens; another seed, other tokens.
  auto sample = [&](uint64_t seed) {
    GenerationRequest s = Greedy(2, c.prompt, 24);
    s.sampling.temperature = 1.0f;
    s.sampling.seed = seed;
    auto k = std::make_shared<Collector>();
    EXPECT_TRUE(engine->Submit(s, k).ok());
    EXPECT_TRUE(k->Wait());
    return k->tokens();
  };
  EXPECT_EQ(sample(7), sample(7));
  EXPECT_NE(sample(7), sample(8));
}

TEST_F(EngineTest, LogprobsAreLogSoftmaxOfLogits) {
  const auto c = LoadReference("reference/llama.cpp/f32")[0];
  auto engine = MakeEngine(1);
  GenerationRequest r = Greedy(1, c.prompt, 3);
  r.logprobs = 5;
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  const auto lps = sink->logprobs();
  ASSERT_EQ(lps.size(), 3u);
  const int64_t V = c.n_vocab;
  for (size_t i = 0; i < 3; ++i) {
    const float* row = c.logits.data() + (c.prompt.size() - 1 + i) * V;
    double mx = -1e30, sum = 0;
    for (int64_t k = 0; k < V; ++k) mx = std::max<double>(mx, row[k]);
    for (int64_t k = 0; k < V; ++k) sum += std::exp(row[k] - mx);
    const double expected = row[lps[i].token] - mx - std::log(sum);
    EXPECT_NEAR(lps[i].logprob, expected, 1e-3);
    ASSERT_EQ(lps[i].top.size(), 5u);
    EXPECT_EQ(lps[i].top[0].first, lps[i].token);  // greedy: the chosen one is the top one
    for (size_t k = 1; k < 5; ++k) EXPECT_LE(lps[i].top[k].second, lps[i].top[k - 1].second);
  }
}

TEST_F(EngineTest, CancelQueuedAndRunning) {
  const auto c = LoadReference("reference/llama.cpp/f32")[2];  // long prompt
  auto engine = MakeEngine(1, 16);
  auto running = std::make_shared<Collector>();
  auto queued = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(1, c.prompt, 500), running).ok());
  ASSERT_TRUE(engine->Submit(Greedy(2, c.prompt, 10), queued).ok());
  engine->Cancel(2);
  engine->Cancel(1);
  ASSERT_TRUE(running->Wait());
  ASSERT_TRUE(queued->Wait());
  EXPECT_EQ(running->info().reason, FinishReason::kCancelled);
  EXPECT_EQ(queued->info().reason, FinishReason::kCancelled);
  EXPECT_TRUE(queued->tokens().empty());
  // The slot is free again: a new request is served.
  auto next = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(3, {1, 2, 3}, 2), next).ok());
  ASSERT_TRUE(next->Wait());
  EXPECT_EQ(next->info().reason, FinishReason::kLength);
}

TEST_F(EngineTest, ReusesASlotWhosePromptIsExtended) {
  const auto c = LoadReference("reference/llama.cpp/f32")[1];
  auto engine = MakeEngine(1);
  auto first = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(1, c.prompt, 8), first).ok());
  ASSERT_TRUE(first->Wait());
  // Second turn: the first prompt, its answer (minus the last token, never fed), more text.
  std::vector<int32_t> second = c.prompt;
  const auto answer = first->tokens();
  second.insert(second.end(), answer.begin(), answer.end() - 1);
  second.push_back(10);
  second.push_back(20);
  auto reused = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(2, second, 8), reused).ok());
  ASSERT_TRUE(reused->Wait());
  EXPECT_EQ(reused->info().cached_tokens, static_cast<int32_t>(c.prompt.size() + 7));
  // The same request on a fresh engine gives the same tokens.
  auto fresh_engine = MakeEngine(1);
  auto fresh = std::make_shared<Collector>();
  ASSERT_TRUE(fresh_engine->Submit(Greedy(3, second, 8), fresh).ok());
  ASSERT_TRUE(fresh->Wait());
  EXPECT_EQ(fresh->info().cached_tokens, 0);
  EXPECT_EQ(reused->tokens(), fresh->tokens());
}

// Teacher forcing: the forced tokens come out first (and are what the model is fed), then
// sampling takes over; a forced stop token ends the sequence like a sampled one.
TEST_F(EngineTest, ForcedTokensComeFirstThenSamplingResumes) {
  auto engine = MakeEngine(1);
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> forced = {500, 501, 502};
  GenerationRequest r = Greedy(1, prompt, 6);
  r.forced_tokens = forced;
  r.logprobs = 0;
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  const std::vector<int32_t> got = sink->tokens();
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(std::vector<int32_t>(got.begin(), got.begin() + 3), forced);
  EXPECT_EQ(sink->logprobs().size(), 6u);
  // What follows is the greedy continuation of prompt + forced.
  std::vector<int32_t> extended = prompt;
  extended.insert(extended.end(), forced.begin(), forced.end());
  auto plain = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(2, extended, 3), plain).ok());
  ASSERT_TRUE(plain->Wait());
  EXPECT_EQ(std::vector<int32_t>(got.begin() + 3, got.end()), plain->tokens());

  GenerationRequest s = Greedy(3, prompt, 10);
  s.forced_tokens = {7, 8, 9};
  s.stop_tokens = {8};
  auto stopped = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(s, stopped).ok());
  ASSERT_TRUE(stopped->Wait());
  EXPECT_EQ(stopped->tokens(), (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(stopped->info().reason, FinishReason::kStopToken);

  GenerationRequest bad = Greedy(4, prompt, 4);
  bad.forced_tokens = {100000};
  EXPECT_EQ(engine->Submit(bad, std::make_shared<Collector>()).code(),
            absl::StatusCode::kInvalidArgument);
}

// The reasoning budget: after `reasoning_budget` sampled tokens inside the block the closing
// tokens come out, then sampling resumes; the model's own closing token ends the block before
// the budget; a budget of 0 closes at once.
TEST_F(EngineTest, TheReasoningBudgetClosesTheBlock) {
  auto engine = MakeEngine(1);
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> close = {600, 601, 602};
  auto greedy = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(1, prompt, 12), greedy).ok());
  ASSERT_TRUE(greedy->Wait());
  const std::vector<int32_t> free_run = greedy->tokens();

  GenerationRequest r = Greedy(2, prompt, 12);
  r.reasoning_budget = 4;
  r.reasoning_end = 999;  // a token the greedy run does not produce
  ASSERT_EQ(std::count(free_run.begin(), free_run.begin() + 4, 999), 0);
  r.reasoning_close = close;
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  const std::vector<int32_t> got = sink->tokens();
  ASSERT_EQ(got.size(), 12u);
  EXPECT_EQ(std::vector<int32_t>(got.begin(), got.begin() + 4),
            std::vector<int32_t>(free_run.begin(), free_run.begin() + 4));
  EXPECT_EQ(std::vector<int32_t>(got.begin() + 4, got.begin() + 7), close);
  // Then the greedy continuation of everything so far, and no second closing.
  std::vector<int32_t> extended = prompt;
  extended.insert(extended.end(), got.begin(), got.begin() + 7);
  auto rest = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(3, extended, 5), rest).ok());
  ASSERT_TRUE(rest->Wait());
  EXPECT_EQ(std::vector<int32_t>(got.begin() + 7, got.end()), rest->tokens());

  // The model closes the block itself (its second token is the end token here): no budget.
  GenerationRequest own = Greedy(4, prompt, 8);
  own.reasoning_budget = 4;
  own.reasoning_end = free_run[1];
  own.reasoning_close = close;
  auto own_sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(own, own_sink).ok());
  ASSERT_TRUE(own_sink->Wait());
  EXPECT_EQ(own_sink->tokens(), std::vector<int32_t>(free_run.begin(), free_run.begin() + 8));

  GenerationRequest zero = Greedy(5, prompt, 4);
  zero.reasoning_budget = 0;
  zero.reasoning_end = 999;
  zero.reasoning_close = close;
  auto zero_sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(zero, zero_sink).ok());
  ASSERT_TRUE(zero_sink->Wait());
  const std::vector<int32_t> zero_got = zero_sink->tokens();
  ASSERT_EQ(zero_got.size(), 4u);
  EXPECT_EQ(std::vector<int32_t>(zero_got.begin(), zero_got.begin() + 3), close);

  GenerationRequest bad = Greedy(6, prompt, 4);
  bad.reasoning_budget = 2;
  EXPECT_EQ(engine->Submit(bad, std::make_shared<Collector>()).code(),
            absl::StatusCode::kInvalidArgument);  // a budget without closing tokens
}

TEST_F(EngineTest, RejectsInvalidRequests) {
  auto engine = MakeEngine(1);
  auto sink = std::make_shared<Collector>();
  EXPECT_EQ(engine->Submit(Greedy(1, {}, 4), sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy(1, {1, 99999}, 4), sink).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy(1, {1}, 0), sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy(1, {1}, 5000), sink).code(), absl::StatusCode::kInvalidArgument);
  GenerationRequest bad = Greedy(1, {1}, 4);
  bad.sampling.top_p = 0;
  absl::Status s = engine->Submit(bad, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("top_p"), absl::string_view::npos);
}

// The vision fixtures: llama.cpp's image embeddings for img_128x128 and its greedy logits.
struct ImagePrompt {
  std::vector<int32_t> prompt;  // the image's rows as <|image_pad|>
  PromptImage image;
  std::vector<int32_t> greedy;
  std::vector<float> greedy_logits;  // [17, 1024]
};

std::vector<float> ReadFloats(const std::string& rel) {
  const std::string bytes = ::qwen::testing::ReadFile(::qwen::testing::DataPath(rel));
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

ImagePrompt LoadImagePrompt() {
  const auto j = nlohmann::json::parse(
      ::qwen::testing::ReadFile(::qwen::testing::DataPath("vision/ref_f32_nofa/reference.json")));
  ImagePrompt p;
  for (const auto& c : j["cases"]) {
    if (c["name"] != "img_128x128") continue;
    for (const auto& t : c["prompt_layout"]) {
      if (t["kind"] == "image" && p.image.rows == 0) {
        p.image.offset = static_cast<int64_t>(p.prompt.size());
        p.image.rows = c["preproc_height"].get<int>() / 32;
        p.image.cols = c["preproc_width"].get<int>() / 32;
      }
      p.prompt.push_back(t["kind"] == "image" ? 1010 : t["token"].get<int32_t>());
    }
    p.image.embedding = ReadFloats("vision/ref_f32_nofa/" + c["embd_file"].get<std::string>());
    p.greedy = c["greedy"].get<std::vector<int32_t>>();
    p.greedy_logits =
        ReadFloats("vision/ref_f32_nofa/" + c["greedy_logits_file"].get<std::string>());
  }
  return p;
}

GenerationRequest EngineTest::ImageRequest(uint64_t id, const ImagePrompt& p, int n) {
  GenerationRequest r = Greedy(id, p.prompt, n);
  r.images.push_back(p.image);
  return r;
}

// Tokens up to the first step whose reference top-2 margin is 0.1 or less: where a slightly
// different implementation may legitimately pick the other token.
size_t SureSteps(const ImagePrompt& p) {
  const int V = 1024;
  for (size_t g = 0; g < p.greedy.size(); ++g) {
    std::vector<float> row(p.greedy_logits.begin() + g * V, p.greedy_logits.begin() + (g + 1) * V);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
    if (row[0] - row[1] <= 0.1f) return g;
  }
  return p.greedy.size();
}

TEST_F(EngineTest, ImagePromptGreedyMatchesLlamaCpp) {
  const ImagePrompt p = LoadImagePrompt();
  ASSERT_EQ(p.image.rows * p.image.cols, 16);
  const size_t sure = SureSteps(p);
  ASSERT_GE(sure, 8u);
  // A budget of 7 cuts the image across prefill chunks; the second run must not resume the
  // first one's slot (same ids, but an image prompt is never matched by ids).
  auto engine = MakeEngine(1, 7);
  for (int run = 0; run < 2; ++run) {
    GenerationRequest r = ImageRequest(1, p, 16);
    auto sink = std::make_shared<Collector>();
    ASSERT_TRUE(engine->Submit(std::move(r), sink).ok());
    ASSERT_TRUE(sink->Wait());
    ASSERT_EQ(sink->info().reason, FinishReason::kLength) << sink->info().status;
    EXPECT_EQ(sink->info().cached_tokens, 0);
    const std::vector<int32_t> got = sink->tokens();
    ASSERT_EQ(got.size(), 16u);
    EXPECT_EQ(std::vector<int32_t>(got.begin(), got.begin() + sure),
              std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + sure));
  }
}

TEST_F(EngineTest, TwoImagesAreEncodedOnTheSchedulerAndFailuresEndTheRequest) {
  const ImagePrompt p = LoadImagePrompt();
  auto engine = MakeEngine(2, 64);
  // The image twice in one prompt, each through the encoder callback.
  std::vector<int32_t> prompt(p.prompt.begin(), p.prompt.begin() + p.image.offset + 16);
  prompt.push_back(1008);
  prompt.push_back(1007);
  const int64_t second = static_cast<int64_t>(prompt.size());
  prompt.insert(prompt.end(), p.prompt.begin() + p.image.offset, p.prompt.end());
  GenerationRequest r = Greedy(1, prompt, 4);
  std::atomic<int> calls{0};
  for (int64_t offset : {p.image.offset, second}) {
    PromptImage im = p.image;
    im.offset = offset;
    im.embedding.clear();
    im.encode = [&calls, e = p.image.embedding](ops::ComputeContext&) {
      ++calls;
      return absl::StatusOr<std::vector<float>>(e);
    };
    r.images.push_back(std::move(im));
  }
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->info().reason, FinishReason::kLength) << sink->info().status;
  EXPECT_EQ(sink->info().prompt_tokens, static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(calls.load(), 2);

  r.id = 2;
  r.images[1].encode = [](ops::ComputeContext&) -> absl::StatusOr<std::vector<float>> {
    return absl::InvalidArgumentError("images[1]: cannot decode");
  };
  auto failed = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, failed).ok());
  ASSERT_TRUE(failed->Wait());
  EXPECT_EQ(failed->info().reason, FinishReason::kError);
  EXPECT_EQ(failed->info().status.message(), "images[1]: cannot decode");

  // An image that does not fit the prompt, or has no rows, is refused at once.
  GenerationRequest bad = ImageRequest(3, p, 4);
  bad.images[0].offset = static_cast<int64_t>(p.prompt.size()) - 3;
  EXPECT_EQ(engine->Submit(bad, std::make_shared<Collector>()).code(),
            absl::StatusCode::kInvalidArgument);
  bad.images[0] = p.image;
  bad.images[0].embedding.resize(10);
  EXPECT_EQ(engine->Submit(bad, std::make_shared<Collector>()).code(),
            absl::StatusCode::kInvalidArgument);
}

// Submits `r` with nothing else running and returns its tokens once it has finished.
std::vector<int32_t> RunAlone(Engine& engine, const GenerationRequest& r) {
  auto sink = std::make_shared<Collector>();
  EXPECT_TRUE(engine.Submit(r, sink).ok());
  EXPECT_TRUE(sink->Wait());
  EXPECT_EQ(sink->info().reason, FinishReason::kLength) << sink->info().status;
  return sink->tokens();
}

// An image prompt prefilled in pieces beside text sequences: the batch mixes M-RoPE and plain
// positions, and everyone gets their solo result.
TEST_F(EngineTest, ImageAndTextSequencesShareSteps) {
  const ImagePrompt p = LoadImagePrompt();
  const auto cases = LoadReference("reference/llama.cpp/f32");
  auto solo_engine = MakeEngine(1, 7);
  GenerationRequest image = ImageRequest(1, p, 12);
  const std::vector<int32_t> solo = RunAlone(*solo_engine, image);
  ASSERT_EQ(solo.size(), 12u);
  solo_engine.reset();

  auto engine = MakeEngine(3, 7);
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < 2; ++i) {
    sinks.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(
        engine
            ->Submit(Greedy(10 + i, cases[i].prompt, static_cast<int>(cases[i].greedy.size())),
                     sinks.back())
            .ok());
  }
  auto mixed = std::make_shared<Collector>();
  image.id = 2;
  ASSERT_TRUE(engine->Submit(image, mixed).ok());
  ASSERT_TRUE(mixed->Wait());
  EXPECT_EQ(mixed->tokens(), solo);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    EXPECT_EQ(sinks[i]->tokens(), cases[i].greedy) << cases[i].name;
  }
}

// Polls until `sink` holds at least `n` tokens; false after 60 s.
bool WaitForTokens(Collector& sink, size_t n) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (sink.tokens().size() < n) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// An image that arrives while another sequence decodes is encoded on the encoder thread: the
// running sequence keeps producing tokens for as long as the encoder is busy (here held until
// released), and both get their solo results. A request cancelled while its image encodes ends
// at once.
TEST_F(EngineTest, ImagesEncodeBesideRunningSequences) {
  const ImagePrompt p = LoadImagePrompt();
  const auto cases = LoadReference("reference/llama.cpp/f32");
  auto engine = MakeEngine(3, 64);
  GenerationRequest solo_image = ImageRequest(1, p, 8);
  const std::vector<int32_t> solo = RunAlone(*engine, solo_image);
  ASSERT_EQ(solo.size(), 8u);

  // A long text sequence: ids of a reference prompt, 1500 tokens to generate.
  auto text = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(2, cases[0].prompt, 1500), text).ok());
  ASSERT_TRUE(WaitForTokens(*text, 1));

  absl::Notification entered, release;
  std::atomic<int> calls{0};
  GenerationRequest held = ImageRequest(3, p, 8);
  held.images[0].embedding.clear();
  held.images[0].encode = [&, e = p.image.embedding](ops::ComputeContext& ctx) {
    ++calls;
    // Progress the supervisor sees (EngineStats::layers_done), as the vision encoder notes it.
    for (int i = 0; i < 1000000; ++i) ctx.NoteLayerDone();
    entered.Notify();
    release.WaitForNotification();
    return absl::StatusOr<std::vector<float>>(e);
  };
  auto image = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(held, image).ok());
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_GE(engine->Stats().layers_done, 1000000);
  // The encoder is held: the text sequence must still advance.
  const size_t before = text->tokens().size();
  EXPECT_TRUE(WaitForTokens(*text, before + 20)) << "the text sequence stopped while encoding";
  EXPECT_TRUE(image->tokens().empty());

  // Cancelled while the encoder holds its image: it ends without waiting for the encoder.
  held.id = 4;
  auto cancelled = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(held, cancelled).ok());
  engine->Cancel(4);
  ASSERT_TRUE(cancelled->Wait(absl::Seconds(30)));
  EXPECT_EQ(cancelled->info().reason, FinishReason::kCancelled);

  release.Notify();
  ASSERT_TRUE(image->Wait());
  EXPECT_EQ(image->info().reason, FinishReason::kLength) << image->info().status;
  EXPECT_EQ(image->tokens(), solo);
  // The cancelled request's image was dropped before the encoder started it.
  EXPECT_EQ(calls.load(), 1);
  ASSERT_TRUE(WaitForTokens(*text, cases[0].greedy.size()));
  engine->Cancel(2);
  ASSERT_TRUE(text->Wait());
  const std::vector<int32_t> got = text->tokens();
  EXPECT_EQ(std::vector<int32_t>(got.begin(), got.begin() + cases[0].greedy.size()),
            cases[0].greedy);
}

// Submits `r` with its (first) image encoded as the vision encoder behaves: working (here:
// waiting) until the context's cancel flag is set, then giving up with CANCELLED, which sets
// *saw_cancel. Returns the request's sink once the encode runs (null if it never started).
std::shared_ptr<Collector> SubmitHeldImage(Engine& engine, GenerationRequest r,
                                           std::shared_ptr<std::atomic<bool>> saw_cancel) {
  auto entered = std::make_shared<absl::Notification>();
  r.images[0].embedding.clear();
  r.images[0].encode =
      [entered, saw_cancel](ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
    entered->Notify();
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!ctx.cancelled()) {
      if (absl::Now() > deadline) return absl::DeadlineExceededError("never cancelled");
      absl::SleepFor(absl::Milliseconds(1));
    }
    saw_cancel->store(true);
    return absl::CancelledError("the image encode was cancelled");
  };
  auto sink = std::make_shared<Collector>();
  if (!engine.Submit(r, sink).ok()) return nullptr;
  if (!entered->WaitForNotificationWithTimeout(absl::Seconds(60))) return nullptr;
  return sink;
}

// Cancelling a request stops its image's encode under way, on the encoder thread (another
// sequence running) and inline (alone); the request ends as cancelled and the engine goes on.
TEST_F(EngineTest, CancellingARequestStopsItsImageEncode) {
  const ImagePrompt p = LoadImagePrompt();
  const auto cases = LoadReference("reference/llama.cpp/f32");
  auto engine = MakeEngine(3, 64);
  for (bool beside_text : {true, false}) {
    SCOPED_TRACE(beside_text ? "encoder thread" : "inline");
    std::shared_ptr<Collector> text;
    if (beside_text) {
      text = std::make_shared<Collector>();
      ASSERT_TRUE(engine->Submit(Greedy(10, cases[0].prompt, 1500), text).ok());
      ASSERT_TRUE(WaitForTokens(*text, 1));
    }
    GenerationRequest r = ImageRequest(beside_text ? 11 : 12, p, 8);
    auto saw_cancel = std::make_shared<std::atomic<bool>>(false);
    const std::shared_ptr<Collector> image = SubmitHeldImage(*engine, r, saw_cancel);
    ASSERT_NE(image, nullptr);
    engine->Cancel(r.id);
    ASSERT_TRUE(image->Wait(absl::Seconds(30)));
    EXPECT_EQ(image->info().reason, FinishReason::kCancelled) << image->info().status;
    // The request ends at once; the encoder thread's encode sees the flag at its next poll.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!saw_cancel->load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_TRUE(saw_cancel->load()) << "the encode was not told to stop";
    if (beside_text) {
      const size_t before = text->tokens().size();
      EXPECT_TRUE(WaitForTokens(*text, before + 5));
      engine->Cancel(10);
      ASSERT_TRUE(text->Wait());
    }
  }
  // The engine still encodes images to completion.
  GenerationRequest again = ImageRequest(13, p, 8);
  EXPECT_EQ(RunAlone(*engine, again).size(), 8u);
}

// A video is a run of frame pairs, each encoded like an image: a request cancelled while one
// pair is encoding starts no further pair, even when that pair's encode does not look at the
// flag itself (it finishes; the engine checks before the next).
TEST_F(EngineTest, CancellingAVideoStopsWithinOneFramePair) {
  auto engine = MakeEngine(2, 64);
  const int64_t E = model_->config().n_embd;
  GenerationRequest r = Greedy(21, std::vector<int32_t>(40, 5), 4);
  auto started = std::make_shared<std::atomic<int>>(0);
  auto release = std::make_shared<absl::Notification>();
  for (int k = 0; k < 6; ++k) {
    PromptImage pair;
    pair.offset = 2 + 5 * k;
    pair.rows = 1;
    pair.cols = 2;
    pair.encode = [started, release,
                   E](ops::ComputeContext&) -> absl::StatusOr<std::vector<float>> {
      started->fetch_add(1);
      release->WaitForNotificationWithTimeout(absl::Seconds(60));
      return std::vector<float>(2 * E, 0.0f);
    };
    r.images.push_back(std::move(pair));
  }
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, sink).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (started->load() == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(started->load(), 1);
  engine->Cancel(r.id);
  absl::SleepFor(absl::Milliseconds(20));  // the flag is set before the pair finishes
  release->Notify();
  ASSERT_TRUE(sink->Wait(absl::Seconds(30)));
  EXPECT_EQ(sink->info().reason, FinishReason::kCancelled) << sink->info().status;
  EXPECT_EQ(started->load(), 1) << "a frame pair started after the request was cancelled";
}

// Destroying the engine while an image encodes stops the encode at its next layer instead of
// waiting for the whole image; its request ends as cancelled.
TEST_F(EngineTest, DestroyingTheEngineStopsAnImageEncode) {
  const ImagePrompt p = LoadImagePrompt();
  const auto cases = LoadReference("reference/llama.cpp/f32");
  for (bool beside_text : {true, false}) {
    SCOPED_TRACE(beside_text ? "encoder thread" : "inline");
    auto engine = MakeEngine(2, 64);
    auto text = std::make_shared<Collector>();
    if (beside_text) {
      ASSERT_TRUE(engine->Submit(Greedy(1, cases[0].prompt, 1500), text).ok());
      ASSERT_TRUE(WaitForTokens(*text, 1));
    }
    GenerationRequest r = ImageRequest(2, p, 8);
    auto saw_cancel = std::make_shared<std::atomic<bool>>(false);
    const std::shared_ptr<Collector> image = SubmitHeldImage(*engine, r, saw_cancel);
    ASSERT_NE(image, nullptr);
    const absl::Time start = absl::Now();
    engine.reset();
    EXPECT_LT(absl::Now() - start, absl::Seconds(30));
    EXPECT_TRUE(saw_cancel->load()) << "the encode was not told to stop";
    ASSERT_TRUE(image->Wait(absl::Seconds(1)));
    EXPECT_EQ(image->info().reason, FinishReason::kCancelled) << image->info().status;
    if (beside_text) {
      ASSERT_TRUE(text->Wait(absl::Seconds(1)));
      EXPECT_EQ(text->info().reason, FinishReason::kCancelled);
    }
  }
}

// A later turn that repeats the conversation resumes the slot when its images have the same
// keys at the same places, and gets what a fresh run gets; another image is not resumed.
TEST_F(EngineTest, ImagePromptsResumeASlotOnlyWithTheSameImages) {
  const ImagePrompt p = LoadImagePrompt();
  auto engine = MakeEngine(1, 64);
  GenerationRequest first = ImageRequest(1, p, 4);
  first.images[0].key = "image-a";
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(first, sink).ok());
  ASSERT_TRUE(sink->Wait());
  const std::vector<int32_t> answer = sink->tokens();
  ASSERT_EQ(answer.size(), 4u);

  GenerationRequest second = first;
  second.id = 2;
  second.max_tokens = 6;
  second.prompt.insert(second.prompt.end(), answer.begin(), answer.end());
  second.prompt.insert(second.prompt.end(), {1000, 10, 999, 543, 260, 10});
  auto resumed = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(second, resumed).ok());
  ASSERT_TRUE(resumed->Wait());
  // The state holds the prompt and the three answer tokens that were fed back.
  EXPECT_EQ(resumed->info().cached_tokens, static_cast<int32_t>(p.prompt.size()) + 3);

  auto fresh_engine = MakeEngine(1, 64);
  auto fresh = std::make_shared<Collector>();
  ASSERT_TRUE(fresh_engine->Submit(second, fresh).ok());
  ASSERT_TRUE(fresh->Wait());
  EXPECT_EQ(fresh->info().cached_tokens, 0);
  EXPECT_EQ(resumed->tokens(), fresh->tokens());

  // The same ids with another image: nothing is resumed.
  GenerationRequest other = second;
  other.id = 3;
  other.images[0].key = "image-b";
  auto not_resumed = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(other, not_resumed).ok());
  ASSERT_TRUE(not_resumed->Wait());
  EXPECT_EQ(not_resumed->info().cached_tokens, 0);
}

// The prefix cache resumes image prompts too: only with the same image keys, at the right
// rotary position (an image takes fewer positions than tokens).
TEST_F(EngineTest, PrefixCacheResumesImagePromptsWithTheSameImages) {
  const ImagePrompt p = LoadImagePrompt();
  EngineOptions o;
  o.n_slots = 1;
  o.n_ctx = 2048;
  o.n_threads = 2;
  o.prefill_chunk = 64;
  o.prefix_cache_bytes = size_t{64} << 20;
  o.snapshot_interval = 16;
  auto created = Engine::Create(model_, o);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Engine> engine = std::move(*created);
  auto run = [](Engine& e, const GenerationRequest& r) {
    auto sink = std::make_shared<Collector>();
    EXPECT_TRUE(e.Submit(r, sink).ok());
    EXPECT_TRUE(sink->Wait());
    return sink;
  };
  GenerationRequest first = ImageRequest(1, p, 4);
  first.images[0].key = "image-a";
  const std::vector<int32_t> answer = run(*engine, first)->tokens();
  ASSERT_EQ(answer.size(), 4u);
  // Something else takes the only slot, so the next turn can resume from the cache only.
  run(*engine, Greedy(2, {1, 2, 3, 4, 5}, 2));

  GenerationRequest second = first;
  second.id = 3;
  second.max_tokens = 6;
  second.prompt.insert(second.prompt.end(), answer.begin(), answer.end());
  second.prompt.insert(second.prompt.end(), {1000, 10, 999, 543, 260, 10});
  auto resumed = run(*engine, second);
  EXPECT_GT(resumed->info().cached_tokens, static_cast<int32_t>(p.image.offset) + 16);

  auto fresh_engine = MakeEngine(1, 64);
  auto fresh = run(*fresh_engine, second);
  EXPECT_EQ(resumed->tokens(), fresh->tokens());

  GenerationRequest other = second;
  other.id = 4;
  other.images[0].key = "image-b";
  run(*engine, Greedy(5, {1, 2, 3, 4, 5}, 2));
  EXPECT_EQ(run(*engine, other)->info().cached_tokens, 0);
}

}  // namespace
}  // namespace qwen::engine

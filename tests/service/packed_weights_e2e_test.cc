// End to end: two workers share one packed copy of the weights (one writes it, the other waits
// for it and maps it), a restarted server maps the copy already there, and the answers are the
// same bits as a server computing from the file's own layout.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/quant/kernels.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kModel[] = "models/tiny-qwen35-q3_k_m.gguf";

int CountLines(const std::string& log, absl::string_view needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) n += absl::StrContains(line, needle);
  return n;
}

class PackedWeightsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (quant::Kernels().packed_format == nullptr) {
      GTEST_SKIP() << "these kernels have no packed layout (no AVX-512)";
    }
    dir_ = fs::path(::testing::TempDir()) / "qwen-packed-e2e";
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<ServerProcess> Start(const std::string& packed_dir) {
    ServerProcess::Options o;
    o.model = kModel;
    o.workers = 2;
    o.slots = 2;
    o.extra = {"--packed_dir=" + packed_dir};
    std::string error;
    std::unique_ptr<ServerProcess> s = ServerProcess::Start(o, &error);
    EXPECT_NE(s, nullptr) << error;
    return s;
  }

  static GenerateResult Greedy(ServerProcess* s) {
    v1::GenerateRequest req;
    req.set_prompt("The lighthouse keeper looked at the storm and said");
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(24);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_return_token_ids(true);
    req.mutable_output()->set_logprobs(true);
    req.mutable_output()->set_top_logprobs(5);
    return Generate(s->Stub().get(), req);
  }

  fs::path dir_;
};

TEST_F(PackedWeightsE2eTest, WorkersShareOneCopyWithTheSameAnswers) {
  std::unique_ptr<ServerProcess> packed = Start(dir_.string());
  ASSERT_NE(packed, nullptr);
  const std::string log = packed->Log();
  EXPECT_EQ(CountLines(log, "wrote the packed copy of"), 1) << log;
  EXPECT_EQ(CountLines(log, "mapped the packed copy of"), 1) << log;
  int bins = 0;
  for (const auto& e : fs::directory_iterator(dir_)) bins += e.path().extension() == ".bin";
  EXPECT_EQ(bins, 1);

  std::unique_ptr<ServerProcess> plain = Start("");
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(CountLines(plain->Log(), "packed copy"), 0);

  // Both workers of each server answer (two requests at once land on both).
  for (int round = 0; round < 2; ++round) {
    GenerateResult a = Greedy(packed.get());
    GenerateResult b = Greedy(plain.get());
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    EXPECT_EQ(a.token_ids, b.token_ids);
    ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
    for (size_t i = 0; i < a.logprobs.size(); ++i) {
      EXPECT_EQ(a.logprobs[i].logprob(), b.logprobs[i].logprob()) << i;
    }
  }

  // A new server on the same file maps the copy its predecessor wrote.
  packed.reset();
  std::unique_ptr<ServerProcess> again = Start(dir_.string());
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(CountLines(again->Log(), "wrote the packed copy of"), 0) << again->Log();
  EXPECT_EQ(CountLines(again->Log(), "mapped the packed copy of"), 2) << again->Log();
}

// A directory that cannot hold the copy: the server still serves, and says why it is slower.
TEST_F(PackedWeightsE2eTest, UnusableDirectoryIsAWarningNotAFailure) {
  std::unique_ptr<ServerProcess> s = Start((dir_ / "missing").string());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(CountLines(s->Log(), "no packed copy of the weights"), 2) << s->Log();
  GenerateResult r = Greedy(s.get());
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

}  // namespace
}  // namespace qwen::testing

// End to end, overload and deadlines, on 2 workers x 1 slot with room for 2 waiting requests:
// - more requests than slots + queue: the excess gets RESOURCE_EXHAUSTED within 50 ms while the
//   running streams keep their pace;
// - deadlines that expire in the queue give DEADLINE_EXCEEDED and never reach a worker (the
//   workers' own counters of prefilled tokens, read over their Unix sockets, do not move).
#include <algorithm>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qwen/worker/v1/worker.grpc.pb.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kContext = 2048;

v1::GenerateRequest Long(int k) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->add_ids(40 + k);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(kContext - 2);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  return req;
}

v1::GenerateRequest Queued(int k) {
  v1::GenerateRequest req;
  for (int i = 0; i < 50; ++i) req.mutable_prompt_token_ids()->add_ids((7 * i + k) % 1000);
  req.mutable_stopping()->set_max_tokens(4);
  return req;
}

// Prompt tokens the workers have prefilled, asked of each worker directly.
int64_t WorkersPrefilled(const std::string& dir, int workers) {
  int64_t total = 0;
  for (int k = 0; k < workers; ++k) {
    auto channel = grpc::CreateChannel(absl::StrCat("unix:", dir, "/worker-", k, ".sock"),
                                       grpc::InsecureChannelCredentials());
    auto stub = worker::v1::Worker::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    worker::v1::HealthResponse resp;
    if (!stub->Health(&ctx, worker::v1::HealthRequest(), &resp).ok()) return -1;
    total += resp.tokens_prefilled();
  }
  return total;
}

class OverloadE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerProcess::Options o;
    o.slots = 1;
    o.queue_size = 2;
    o.ctx_size = kContext;
    std::string error;
    server_ = ServerProcess::Start(o, &error);
    ASSERT_NE(server_, nullptr) << error;
    stub_ = server_->Stub();
  }
  bool WaitQueued(uint32_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      if (server_->Info().serving().queued_requests() == n) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

TEST_F(OverloadE2eTest, TheExcessIsRefusedAtOnceWhileRunningStreamsKeepTheirPace) {
  BackgroundStream a(stub_.get(), Long(1));
  BackgroundStream b(stub_.get(), Long(2));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  std::vector<std::unique_ptr<BackgroundStream>> waiting;
  for (int k = 0; k < 2; ++k) {
    waiting.push_back(std::make_unique<BackgroundStream>(stub_.get(), Queued(k)));
  }
  ASSERT_TRUE(WaitQueued(2));

  // The running streams' pace before the burst.
  auto tokens = [&] { return a.tokens() + b.tokens(); };
  const int t0 = tokens();
  absl::SleepFor(absl::Seconds(2));
  const double before = (tokens() - t0) / 2.0;

  // The burst: 4 clients each send an excess request every 10 ms for 2 seconds (some 400 a
  // second). Clients sending back to back would measure only how the test's own threads starve
  // the server of the machine's 2 cores.
  std::mutex mu;
  std::vector<double> refusal_ms;
  int wrong = 0;
  const int t1 = tokens();
  const absl::Time burst_start = absl::Now();
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      while (absl::Now() - burst_start < absl::Seconds(2)) {
        v1::GenerateRequest req;
        req.set_prompt(absl::StrCat("excess ", c));
        req.mutable_stopping()->set_max_tokens(4);
        const absl::Time start = absl::Now();
        GenerateResult r = Generate(stub_.get(), req, absl::Seconds(30));
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        {
          std::lock_guard<std::mutex> lock(mu);
          if (r.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && r.messages.empty() &&
              absl::StrContains(r.status.error_message(), "queue is full")) {
            refusal_ms.push_back(ms);
          } else {
            ++wrong;
          }
        }
        absl::SleepFor(absl::Milliseconds(10));
      }
    });
  }
  for (auto& t : clients) t.join();
  const double during = (tokens() - t1) / absl::ToDoubleSeconds(absl::Now() - burst_start);

  ASSERT_FALSE(refusal_ms.empty());
  std::vector<double> sorted = refusal_ms;
  std::sort(sorted.begin(), sorted.end());
  const double p50 = sorted[sorted.size() / 2];
  const double p99 = sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
  std::cout << refusal_ms.size() << " excess requests refused: RESOURCE_EXHAUSTED after p50 " << p50
            << " ms, p99 " << p99 << " ms, max " << sorted.back() << " ms; running "
            << "streams " << before << " tokens/s before, " << during << " during\n";
  EXPECT_EQ(wrong, 0) << "an excess request got another answer than RESOURCE_EXHAUSTED";
  // The bound is 50 ms. The median is held to it; single calls may lose the CPU to the other
  // 6 threads of this test and the server on a loaded 2-core machine, so the tail gets 4x.
  EXPECT_LT(p50, 50.0);
  EXPECT_LT(p99, 200.0);
  // The running streams go on at (nearly) their pace: the refusals cost the workers nothing,
  // only the front end's CPU, which shares the 2 cores with the burst's clients.
  EXPECT_GT(during, 0.5 * before);
  EXPECT_FALSE(a.done());
  EXPECT_FALSE(b.done());
  // The queued ones are still there, served once a slot frees.
  a.Cancel();
  b.Cancel();
  for (auto& w : waiting) {
    ASSERT_TRUE(w->WaitDone(absl::Seconds(60)));
    EXPECT_TRUE(w->result().status.ok()) << w->result().status.error_message();
  }
}

TEST_F(OverloadE2eTest, DeadlinesThatExpireInTheQueueNeverReachAWorker) {
  BackgroundStream a(stub_.get(), Long(3));
  BackgroundStream b(stub_.get(), Long(4));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  const std::string dir = SocketDir(server_->Log());
  // The engines count a step's tokens once the step is done, just after its first token left.
  int64_t prefilled = 0;
  for (int k = 0; k < 200 && prefilled < 2; ++k) {
    prefilled = WorkersPrefilled(dir, 2);
    if (prefilled < 2) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(prefilled, 2) << "each long stream has a one-token prompt";

  std::vector<std::thread> t;
  std::vector<GenerateResult> results(2);
  std::vector<absl::Duration> took(2);
  for (int k = 0; k < 2; ++k) {
    t.emplace_back([&, k] {
      const absl::Time start = absl::Now();
      results[k] = Generate(stub_.get(), Queued(10 + k), absl::Milliseconds(300 + 200 * k));
      took[k] = absl::Now() - start;
    });
  }
  for (auto& th : t) th.join();
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(results[k].status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_TRUE(results[k].messages.empty());
    // Ends at its deadline (slack for a loaded machine), not when a slot frees.
    EXPECT_LT(took[k], absl::Milliseconds(300 + 200 * k) + absl::Seconds(2));
  }
  EXPECT_TRUE(WaitQueued(0)) << "an expired request kept its place in the queue";
  // Free the slots: had an expired request been left to reach a worker, it would be prefilled
  // now.
  a.Cancel();
  b.Cancel();
  ASSERT_TRUE(a.WaitDone());
  ASSERT_TRUE(b.WaitDone());
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(WorkersPrefilled(dir, 2), prefilled) << "a request whose deadline expired in the "
                                                    "queue reached a worker";
  // And the server serves.
  GenerateResult ok = Generate(stub_.get(), Queued(20));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

}  // namespace
}  // namespace qwen::testing

// End to end: slots, the queue, cancellation and deadlines, on a server with one slot per
// worker (2 slots in all) and room for one waiting request.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

constexpr int kContext = 2048;

class AdmissionE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.slots = 1;
    o.queue_size = 1;
    o.ctx_size = kContext;
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
    // Every test starts with an idle server.
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      const v1::ServingInfo s = server_->Info().serving();
      if (s.busy_slots() == 0 && s.queued_requests() == 0 && s.live_workers() == 2) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // A request that runs until cancelled (it would take the whole context).
  static v1::GenerateRequest Long(int k) {
    v1::GenerateRequest req;
    req.mutable_prompt_token_ids()->add_ids(10 + k);
    req.mutable_prompt_token_ids()->add_ids(20 + k);
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_tokens(kContext - 2);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_return_token_ids(true);
    return req;
  }
  static v1::GenerateRequest Short() {
    v1::GenerateRequest req;
    req.set_prompt("A short one.");
    req.mutable_stopping()->set_max_tokens(4);
    req.mutable_stopping()->set_ignore_eos(true);
    return req;
  }
  bool WaitServing(std::function<bool(const v1::ServingInfo&)> pred,
                   absl::Duration timeout = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (pred(server_->Info().serving())) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  static ServerProcess* server_;
  std::unique_ptr<v1::Qwen::Stub> stub_;
};

ServerProcess* AdmissionE2eTest::server_ = nullptr;

TEST_F(AdmissionE2eTest, ACancelledStreamFreesItsSlotForTheNextRequest) {
  BackgroundStream a(stub_.get(), Long(1));
  BackgroundStream b(stub_.get(), Long(2));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.busy_slots() == 2; }));

  a.Cancel();
  ASSERT_TRUE(a.WaitDone());
  EXPECT_EQ(a.result().status.error_code(), grpc::StatusCode::CANCELLED);
  // The slot is free again (the worker's engine cancelled the sequence within a step)...
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.busy_slots() == 1; }));
  // ... so a new request is served while b still runs.
  GenerateResult c = Generate(stub_.get(), Short());
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(c.completion.usage().generated_tokens(), 4u);
  EXPECT_FALSE(b.done()) << "the short request waited for the long one";
  b.Cancel();
  ASSERT_TRUE(b.WaitDone());
}

TEST_F(AdmissionE2eTest, AnExpiredDeadlineFreesItsSlotForTheNextRequest) {
  BackgroundStream a(stub_.get(), Long(3), /*deadline=*/absl::Seconds(3));
  BackgroundStream b(stub_.get(), Long(4));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  ASSERT_TRUE(a.WaitDone(absl::Seconds(60)));
  EXPECT_EQ(a.result().status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GT(a.tokens(), 0);
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.busy_slots() == 1; }));
  GenerateResult c = Generate(stub_.get(), Short());
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_FALSE(b.done());
  b.Cancel();
}

TEST_F(AdmissionE2eTest, ADeadlineWhileQueuedEndsTheRequestAndFreesTheQueue) {
  BackgroundStream a(stub_.get(), Long(5));
  BackgroundStream b(stub_.get(), Long(6));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  GenerateResult queued = Generate(stub_.get(), Short(), /*deadline=*/absl::Milliseconds(500));
  EXPECT_EQ(queued.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(queued.messages.empty());
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.queued_requests() == 0; }));
  a.Cancel();
  b.Cancel();
}

TEST_F(AdmissionE2eTest, AFullQueueAnswersResourceExhaustedAtOnce) {
  BackgroundStream a(stub_.get(), Long(7));
  BackgroundStream b(stub_.get(), Long(8));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  BackgroundStream waiting(stub_.get(), Short());
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.queued_requests() == 1; }));

  const absl::Time t0 = absl::Now();
  GenerateResult refused = Generate(stub_.get(), Short());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("queue is full"));
  EXPECT_TRUE(refused.messages.empty());
  // "At once": it did not wait for a slot (the running streams go on for many seconds).
  EXPECT_FALSE(a.done());
  EXPECT_FALSE(b.done());
  std::cout << "RESOURCE_EXHAUSTED after " << absl::FormatDuration(absl::Now() - t0) << "\n";

  // Cancelling a running stream lets the waiting one run and complete.
  a.Cancel();
  ASSERT_TRUE(waiting.WaitDone());
  EXPECT_TRUE(waiting.result().status.ok()) << waiting.result().status.error_message();
  b.Cancel();
}

TEST_F(AdmissionE2eTest, CancellingAQueuedRequestRemovesItFromTheQueue) {
  BackgroundStream a(stub_.get(), Long(9));
  BackgroundStream b(stub_.get(), Long(10));
  ASSERT_TRUE(a.WaitFirstMessage());
  ASSERT_TRUE(b.WaitFirstMessage());
  {
    BackgroundStream waiting(stub_.get(), Short());
    ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.queued_requests() == 1; }));
    waiting.Cancel();
    ASSERT_TRUE(waiting.WaitDone());
    EXPECT_EQ(waiting.result().status.error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.queued_requests() == 0; }));
  // The queue has room again.
  BackgroundStream next(stub_.get(), Short());
  ASSERT_TRUE(WaitServing([](const v1::ServingInfo& s) { return s.queued_requests() == 1; }));
  a.Cancel();
  ASSERT_TRUE(next.WaitDone());
  EXPECT_TRUE(next.result().status.ok());
  b.Cancel();
}

}  // namespace
}  // namespace qwen::testing

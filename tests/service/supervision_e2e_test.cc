// End to end: worker failures, restarts, health, graceful shutdown and no orphans.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/ops_test_util.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

using ::testing::HasSubstr;
using Serving = ::grpc::health::v1::HealthCheckResponse;

// True while `pid` exists and is not a zombie.
bool Alive(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat) return false;
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

bool WaitGone(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (!Alive(pid)) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

std::vector<pid_t> WorkerPids(const ServerProcess& s) {
  std::vector<pid_t> pids;
  const v1::GetModelInfoResponse info = s.Info();
  for (const auto& w : info.serving().worker_status()) pids.push_back(w.pid());
  return pids;
}

v1::GenerateRequest Long(int k, int ctx) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->add_ids(30 + k);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(ctx - 2);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_output()->set_return_token_ids(true);
  return req;
}

// Watches health in the background and remembers whether it ever was not SERVING.
class HealthWatcher {
 public:
  explicit HealthWatcher(const ServerProcess* server) : server_(server) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        if (server_->Health() != Serving::SERVING) lapses_.fetch_add(1);
        absl::SleepFor(absl::Milliseconds(20));
      }
    });
  }
  ~HealthWatcher() {
    stop_.store(true);
    thread_.join();
  }
  int lapses() const { return lapses_.load(); }

 private:
  const ServerProcess* server_;
  std::atomic<bool> stop_{false};
  std::atomic<int> lapses_{0};
  std::thread thread_;
};

// A worker is SIGKILLed while it streams one request and prefills another: the streaming one
// ends with UNAVAILABLE at once, the other is served by the other worker, the pool is restored
// and health never leaves SERVING.
TEST(SupervisionE2eTest, KillingAWorkerMidStream) {
  constexpr int kContext = 4096;
  ServerProcess::Options o;
  o.slots = 2;
  o.ctx_size = kContext;
  o.extra = {"--prefill_chunk=32"};  // a long prompt takes many steps to prefill
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  HealthWatcher health(server.get());

  // One long stream on each worker (the least loaded gets the next request).
  auto busy_worker = [&](int busy) {
    const v1::GetModelInfoResponse info = server->Info();
    for (const auto& w : info.serving().worker_status()) {
      if (static_cast<int>(w.busy_slots()) == busy) return static_cast<int>(w.index());
    }
    return -1;
  };
  BackgroundStream a0(stub.get(), Long(0, kContext));
  ASSERT_TRUE(a0.WaitFirstMessage());
  const int a0_worker = busy_worker(1);
  ASSERT_GE(a0_worker, 0);
  BackgroundStream a1(stub.get(), Long(1, kContext));
  ASSERT_TRUE(a1.WaitFirstMessage());
  ASSERT_EQ(server->Info().serving().busy_slots(), 2u);
  ASSERT_EQ(busy_worker(2), -1) << "both long streams went to one worker";

  // A request with a long prompt goes to one of them (both have one busy slot) and spends a
  // while in prefill there.
  v1::GenerateRequest waiting;
  std::mt19937 rng(7);
  for (int k = 0; k < 3500; ++k) waiting.mutable_prompt_token_ids()->add_ids(rng() % 990);
  waiting.mutable_sampling()->set_temperature(0);
  waiting.mutable_stopping()->set_max_tokens(8);
  waiting.mutable_stopping()->set_ignore_eos(true);
  waiting.mutable_output()->set_return_token_ids(true);
  BackgroundStream b(stub.get(), waiting);
  int victim_index = -1;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (victim_index < 0 && absl::Now() < deadline) {
    victim_index = busy_worker(2);
    if (victim_index < 0) absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_GE(victim_index, 0) << "the prompt never reached a worker";
  const pid_t victim = server->Info().serving().worker_status(victim_index).pid();
  ASSERT_GT(victim, 0);
  ASSERT_EQ(b.tokens(), 0) << "the prefill finished before the kill; the test needs it running";
  BackgroundStream& on_victim = victim_index == a0_worker ? a0 : a1;
  BackgroundStream& survivor = victim_index == a0_worker ? a1 : a0;

  const absl::Time killed = absl::Now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);

  // The streaming request ends with UNAVAILABLE and says what happened.
  ASSERT_TRUE(on_victim.WaitDone(absl::Seconds(30)));
  const absl::Duration took = on_victim.ended() - killed;
  std::cout << "stream on the killed worker ended " << absl::FormatDuration(took)
            << " after the kill\n";
  EXPECT_LT(took, absl::Seconds(3));
  GenerateResult r = on_victim.result();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(r.status.error_message(), HasSubstr("failed"));
  EXPECT_GT(r.token_ids.size(), 0u);
  EXPECT_FALSE(r.has_completion);

  // The request that had no token yet completes on the other worker.
  ASSERT_TRUE(b.WaitDone(absl::Seconds(120)));
  GenerateResult rb = b.result();
  EXPECT_TRUE(rb.status.ok()) << rb.status.error_message();
  EXPECT_EQ(rb.token_ids.size(), 8u);
  ASSERT_TRUE(rb.has_completion);

  // The other stream is untouched.
  EXPECT_FALSE(survivor.done());

  // The pool is back to two workers, with a new process in place of the victim.
  const absl::Time back_deadline = absl::Now() + absl::Seconds(60);
  bool restored = false;
  while (!restored && absl::Now() < back_deadline) {
    const v1::ServingInfo now = server->Info().serving();
    restored = now.live_workers() == 2 && now.worker_status(victim_index).pid() != victim &&
               now.worker_status(victim_index).restarts() == 1;
    if (!restored) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(restored) << server->Log();
  EXPECT_FALSE(Alive(victim));
  EXPECT_EQ(health.lapses(), 0) << "health left SERVING";

  // And it serves.
  v1::GenerateRequest quick;
  quick.set_prompt("after the restart");
  quick.mutable_stopping()->set_max_tokens(3);
  quick.mutable_stopping()->set_ignore_eos(true);
  EXPECT_TRUE(Generate(stub.get(), quick).status.ok());
  survivor.Cancel();
}

// With every worker down, health is NOT_SERVING and Generate is UNAVAILABLE; once they are
// back, SERVING again.
TEST(SupervisionE2eTest, HealthIsNotServingWhileNoWorkerIsUp) {
  ServerProcess::Options o;
  o.extra = {"--restart_backoff_min=3s"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  const std::vector<pid_t> pids = WorkerPids(*server);
  ASSERT_EQ(pids.size(), 2u);
  for (pid_t p : pids) ASSERT_EQ(kill(p, SIGKILL), 0);
  ASSERT_TRUE(server->WaitHealth(Serving::NOT_SERVING, absl::Seconds(2))) << server->Log();
  EXPECT_EQ(server->Health("qwen.v1.Qwen"), Serving::NOT_SERVING);
  v1::GenerateRequest req;
  req.set_prompt("anyone?");
  GenerateResult r = Generate(stub.get(), req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(r.status.error_message(), HasSubstr("no worker"));
  ASSERT_TRUE(server->WaitHealth(Serving::SERVING, absl::Seconds(60))) << server->Log();
  EXPECT_TRUE(server->WaitLiveWorkers(2, absl::Seconds(60))) << server->Log();
}

// SIGTERM: health goes NOT_SERVING, new calls are refused, the running stream completes, and
// the server exits 0 with its workers gone.
TEST(SupervisionE2eTest, SigtermDrainsRunningStreamsAndExitsCleanly) {
  ServerProcess::Options o;
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  const std::vector<pid_t> workers = WorkerPids(*server);
  v1::GenerateRequest req;
  req.set_prompt("A story that takes a while:");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(300);
  req.mutable_stopping()->set_ignore_eos(true);
  BackgroundStream running(stub.get(), req);
  ASSERT_TRUE(running.WaitFirstMessage());

  ASSERT_EQ(kill(server->pid(), SIGTERM), 0);
  ASSERT_TRUE(server->WaitHealth(Serving::NOT_SERVING, absl::Seconds(10)));
  GenerateResult refused = Generate(stub.get(), req);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_TRUE(running.WaitDone(absl::Seconds(120)));
  GenerateResult r = running.result();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.has_completion);
  EXPECT_EQ(r.completion.usage().generated_tokens(), 300u);

  const int status = server->Stop(absl::Seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << server->Log();
  for (pid_t p : workers) EXPECT_TRUE(WaitGone(p, absl::Seconds(5))) << p;
}

// Ctrl-C in a terminal signals the whole process group: the workers must not stop before the
// front end has drained the running streams.
TEST(SupervisionE2eTest, SigintToTheProcessGroupDrainsToo) {
  ServerProcess::Options o;
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  v1::GenerateRequest req;
  req.set_prompt("Another long story:");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_tokens(200);
  req.mutable_stopping()->set_ignore_eos(true);
  BackgroundStream running(stub.get(), req);
  ASSERT_TRUE(running.WaitFirstMessage());
  ASSERT_EQ(kill(-server->pid(), SIGINT), 0);
  ASSERT_TRUE(running.WaitDone(absl::Seconds(120)));
  GenerateResult r = running.result();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.completion.usage().generated_tokens(), 200u);
  const int status = server->Stop(absl::Seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << server->Log();
}

// Past the grace period, running streams are cancelled with a last message and UNAVAILABLE.
TEST(SupervisionE2eTest, StreamsStillRunningAfterTheGracePeriodAreCancelled) {
  ServerProcess::Options o;
  o.extra = {"--grace_period=1s"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  auto stub = server->Stub();
  BackgroundStream running(stub.get(), Long(3, 2048));
  ASSERT_TRUE(running.WaitFirstMessage());
  ASSERT_EQ(kill(server->pid(), SIGTERM), 0);
  ASSERT_TRUE(running.WaitDone(absl::Seconds(30)));
  GenerateResult r = running.result();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(r.status.error_message(), HasSubstr("shutting down"));
  ASSERT_TRUE(r.has_completion);
  EXPECT_EQ(r.completion.finish_reason(), v1::FINISH_REASON_CANCELLED);
  const int status = server->Stop(absl::Seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << server->Log();
}

// After the grace period the server is gone within kExitBound (1 s, front_end.h), whatever still
// holds it: a stream that would run for minutes, a health Watch stream, the test's idle channel,
// and the metrics endpoint, which has served a scrape.
TEST(SupervisionE2eTest, ExitsWithinTheGracePeriodPlusItsBound) {
  constexpr absl::Duration kGrace = absl::Seconds(2);
  constexpr absl::Duration kExitBound = absl::Seconds(1);
  ServerProcess::Options o;
  o.metrics_port = FreePort();
  o.extra = {"--grace_period=2s"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  ASSERT_FALSE(HttpGet(o.metrics_port, "/metrics").empty());
  auto stub = server->Stub();
  BackgroundStream running(stub.get(), Long(4, 2048));
  ASSERT_TRUE(running.WaitFirstMessage());
  // A health Watch, as a load balancer keeps one.
  auto health = grpc::health::v1::Health::NewStub(server->channel());
  grpc::ClientContext watch_ctx;
  grpc::health::v1::HealthCheckRequest watch_req;
  auto watch = health->Watch(&watch_ctx, watch_req);
  grpc::health::v1::HealthCheckResponse first;
  ASSERT_TRUE(watch->Read(&first));

  const absl::Time signalled = absl::Now();
  const int status = server->SignalAndWait(SIGTERM, absl::Seconds(30));
  const absl::Duration took = absl::Now() - signalled;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << server->Log();
  EXPECT_GE(took, kGrace);  // the stream had its grace period
  EXPECT_LE(took, kGrace + kExitBound) << server->Log();
  ASSERT_TRUE(running.WaitDone(absl::Seconds(10)));
  EXPECT_EQ(running.result().status.error_code(), grpc::StatusCode::UNAVAILABLE);
  watch_ctx.TryCancel();
  while (watch->Read(&first)) {
  }
  (void)watch->Finish();
}

// The front end dies without a chance to clean up: its workers die too.
TEST(SupervisionE2eTest, WorkersDieWithTheFrontEnd) {
  ServerProcess::Options o;
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  const std::vector<pid_t> workers = WorkerPids(*server);
  ASSERT_EQ(workers.size(), 2u);
  for (pid_t p : workers) ASSERT_TRUE(Alive(p));
  server->SignalAndWait(SIGKILL, absl::Seconds(10));
  for (pid_t p : workers) EXPECT_TRUE(WaitGone(p, absl::Seconds(5))) << "orphan worker " << p;
}

// A worker that stops answering (SIGSTOP) is declared wedged by the heartbeat, killed and
// replaced.
TEST(SupervisionE2eTest, AWedgedWorkerIsKilledAndReplaced) {
  ServerProcess::Options o;
  o.extra = {"--heartbeat_interval=200ms", "--heartbeat_timeout=1s"};
  std::string error;
  auto server = ServerProcess::Start(o, &error);
  ASSERT_NE(server, nullptr) << error;
  const std::vector<pid_t> workers = WorkerPids(*server);
  ASSERT_EQ(kill(workers[0], SIGSTOP), 0);
  bool replaced = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!replaced && absl::Now() < deadline) {
    const v1::ServingInfo s = server->Info().serving();
    replaced = s.live_workers() == 2 && s.worker_status(0).pid() != workers[0] &&
               s.worker_status(0).pid() != 0;
    if (!replaced) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(replaced) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("failed its heartbeat"));
  EXPECT_TRUE(WaitGone(workers[0], absl::Seconds(5)));
}

}  // namespace
}  // namespace qwen::testing

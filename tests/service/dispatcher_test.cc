#include "service/dispatcher.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace qwen::service {
namespace {

// Records what the dispatcher does with each job.
struct Log {
  std::vector<std::pair<uint64_t, WorkerRef>> started;
  std::vector<std::pair<uint64_t, absl::Status>> failed;
};

Dispatcher::Job MakeJob(uint64_t id, Log* log, std::vector<WorkerRef> exclude = {}) {
  Dispatcher::Job j;
  j.id = id;
  j.start = [id, log](WorkerRef w) { log->started.emplace_back(id, w); };
  j.fail = [id, log](absl::Status s) { log->failed.emplace_back(id, s); };
  j.exclude = std::move(exclude);
  return j;
}

TEST(DispatcherTest, NoLiveWorkerIsUnavailable) {
  Dispatcher d(2, 4);
  Log log;
  EXPECT_EQ(d.Submit(MakeJob(1, &log)).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(log.started.empty());
}

TEST(DispatcherTest, SpreadsOverTheLeastLoadedWorker) {
  Dispatcher d(2, 4);
  d.WorkerUp(0, 1, 2);
  d.WorkerUp(1, 1, 2);
  Log log;
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(d.Submit(MakeJob(id, &log)).ok());
  ASSERT_EQ(log.started.size(), 4u);
  EXPECT_EQ(log.started[0].second.index, 0);
  EXPECT_EQ(log.started[1].second.index, 1);
  EXPECT_EQ(log.started[2].second.index, 0);
  EXPECT_EQ(log.started[3].second.index, 1);
  EXPECT_EQ(d.GetStats().busy_slots, 4);
}

// Jobs with an affinity key go to the worker the key prefers while it has a free slot, whatever
// the load elsewhere; then to the least busy one. Keys spread over the workers.
TEST(DispatcherTest, AffinityPrefersOneWorkerUntilItIsFull) {
  Dispatcher d(3, 8);
  for (int k = 0; k < 3; ++k) d.WorkerUp(k, 1, 2);
  std::vector<int32_t> prompt(100);
  for (int i = 0; i < 100; ++i) prompt[i] = i;
  const uint64_t key = Dispatcher::PromptAffinity(prompt.data(), prompt.size());
  // Only the first kAffinityTokens tokens count: a longer conversation keeps its key.
  prompt.resize(Dispatcher::kAffinityTokens);
  EXPECT_EQ(Dispatcher::PromptAffinity(prompt.data(), prompt.size()), key);
  prompt[3] = 999;
  EXPECT_NE(Dispatcher::PromptAffinity(prompt.data(), prompt.size()), key);
  Log log;
  for (uint64_t id = 1; id <= 3; ++id) {
    Dispatcher::Job j = MakeJob(id, &log);
    j.affinity = key;
    ASSERT_TRUE(d.Submit(std::move(j)).ok());
  }
  ASSERT_EQ(log.started.size(), 3u);
  const int preferred = log.started[0].second.index;
  EXPECT_EQ(log.started[1].second.index, preferred);  // though others are idle
  EXPECT_NE(log.started[2].second.index, preferred);  // the preferred one is full
  // When the preferred worker goes, its keys move to another live one, the rest stay.
  std::set<int> used;
  for (uint64_t k = 1; k <= 64; ++k) {
    used.insert(Dispatcher::Preferred(k * 7919, 3, [](int) { return true; }));
  }
  EXPECT_EQ(used.size(), 3u);
  for (uint64_t k = 1; k <= 64; ++k) {
    const int all = Dispatcher::Preferred(k, 3, [](int) { return true; });
    const int without = Dispatcher::Preferred(k, 3, [&](int w) { return w != preferred; });
    if (all != preferred) EXPECT_EQ(without, all);
    EXPECT_NE(without, preferred);
  }
}

TEST(DispatcherTest, QueuesInFifoOrderAndStartsOnRelease) {
  Dispatcher d(1, 2);
  d.WorkerUp(0, 7, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());
  ASSERT_TRUE(d.Submit(MakeJob(3, &log)).ok());
  EXPECT_EQ(log.started.size(), 1u);
  EXPECT_EQ(d.GetStats().queued, 2);
  d.Release(WorkerRef{0, 7});
  ASSERT_EQ(log.started.size(), 2u);
  EXPECT_EQ(log.started[1].first, 2u);
  d.Release(WorkerRef{0, 7});
  ASSERT_EQ(log.started.size(), 3u);
  EXPECT_EQ(log.started[2].first, 3u);
}

TEST(DispatcherTest, FullQueueIsResourceExhaustedAtOnce) {
  Dispatcher d(1, 1);
  d.WorkerUp(0, 1, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());  // runs
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());  // waits
  absl::Status s = d.Submit(MakeJob(3, &log));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(d.GetStats().queued, 1);
  EXPECT_TRUE(log.failed.empty());
}

TEST(DispatcherTest, ZeroQueueStillRunsWhenASlotIsFree) {
  Dispatcher d(1, 0);
  d.WorkerUp(0, 1, 1);
  Log log;
  EXPECT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  EXPECT_EQ(d.Submit(MakeJob(2, &log)).code(), absl::StatusCode::kResourceExhausted);
}

TEST(DispatcherTest, CancelRemovesAWaitingJob) {
  Dispatcher d(1, 4);
  d.WorkerUp(0, 1, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());
  EXPECT_TRUE(d.Cancel(2));
  EXPECT_FALSE(d.Cancel(2));
  EXPECT_FALSE(d.Cancel(1));  // running, not waiting
  d.Release(WorkerRef{0, 1});
  EXPECT_EQ(log.started.size(), 1u);
  EXPECT_EQ(d.GetStats().busy_slots, 0);
}

TEST(DispatcherTest, ReleaseOfAPastIncarnationIsIgnored) {
  Dispatcher d(1, 4);
  d.WorkerUp(0, 1, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  d.WorkerDown(0);
  d.WorkerUp(0, 2, 1);
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());  // takes the new incarnation's slot
  d.Release(WorkerRef{0, 1});                    // the old job ends: no effect
  EXPECT_EQ(d.GetStats().busy_slots, 1);
  ASSERT_TRUE(d.Submit(MakeJob(3, &log)).ok());
  EXPECT_EQ(log.started.size(), 2u);
  d.Release(WorkerRef{0, 2});
  EXPECT_EQ(log.started.size(), 3u);
}

TEST(DispatcherTest, ExcludedWorkersAreSkippedWithoutBlockingOthers) {
  Dispatcher d(2, 4);
  d.WorkerUp(0, 1, 2);
  d.WorkerUp(1, 1, 1);
  Log log;
  const std::vector<WorkerRef> not0 = {WorkerRef{0, 1}};
  ASSERT_TRUE(d.Resubmit(MakeJob(1, &log, not0)).ok());  // -> worker 1, now full
  ASSERT_EQ(log.started.size(), 1u);
  EXPECT_EQ(log.started[0].second.index, 1);
  ASSERT_TRUE(d.Submit(MakeJob(2, &log, not0)).ok());  // waits: only worker 0 has room
  ASSERT_TRUE(d.Submit(MakeJob(3, &log)).ok());        // passes it, to worker 0
  ASSERT_EQ(log.started.size(), 2u);
  EXPECT_EQ(log.started[1].first, 3u);
  EXPECT_EQ(log.started[1].second.index, 0);
  d.Release(WorkerRef{1, 1});
  ASSERT_EQ(log.started.size(), 3u);
  EXPECT_EQ(log.started[2].first, 2u);
  EXPECT_EQ(log.started[2].second.index, 1);
}

TEST(DispatcherTest, ResubmitGoesFirstAndIgnoresTheBound) {
  Dispatcher d(1, 1);
  d.WorkerUp(0, 1, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());
  ASSERT_TRUE(d.Resubmit(MakeJob(3, &log)).ok());
  EXPECT_EQ(d.GetStats().queued, 2);
  d.Release(WorkerRef{0, 1});
  ASSERT_EQ(log.started.size(), 2u);
  EXPECT_EQ(log.started[1].first, 3u);
}

TEST(DispatcherTest, LosingTheLastWorkerFailsWaitingJobs) {
  Dispatcher d(2, 4);
  d.WorkerUp(0, 1, 1);
  d.WorkerUp(1, 1, 1);
  Log log;
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(d.Submit(MakeJob(id, &log)).ok());
  d.WorkerDown(0);
  EXPECT_TRUE(log.failed.empty());  // worker 1 still serves
  d.WorkerDown(1);
  ASSERT_EQ(log.failed.size(), 2u);
  EXPECT_EQ(log.failed[0].second.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(d.GetStats().live_workers, 0);
  EXPECT_EQ(d.GetStats().queued, 0);
}

TEST(DispatcherTest, AWorkerComingUpStartsWaitingJobs) {
  Dispatcher d(2, 4);
  d.WorkerUp(0, 1, 1);
  Log log;
  ASSERT_TRUE(d.Submit(MakeJob(1, &log)).ok());
  ASSERT_TRUE(d.Submit(MakeJob(2, &log)).ok());
  EXPECT_EQ(log.started.size(), 1u);
  d.WorkerUp(1, 1, 1);
  ASSERT_EQ(log.started.size(), 2u);
  EXPECT_EQ(log.started[1].second.index, 1);
}

TEST(DispatcherTest, CallbacksMayCallBackIn) {
  Dispatcher d(1, 4);
  d.WorkerUp(0, 1, 1);
  int started = 0;
  Dispatcher::Job j;
  j.id = 1;
  // A job that finishes at once (releasing its slot from inside its start callback).
  j.start = [&](WorkerRef w) {
    ++started;
    d.Release(w);
  };
  j.fail = [](absl::Status) {};
  ASSERT_TRUE(d.Submit(j).ok());
  j.id = 2;
  ASSERT_TRUE(d.Submit(j).ok());
  EXPECT_EQ(started, 2);
  EXPECT_EQ(d.GetStats().busy_slots, 0);
}

}  // namespace
}  // namespace qwen::service

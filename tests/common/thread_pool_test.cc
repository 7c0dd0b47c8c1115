// ThreadPool: every index runs once per Run, results written inside a parallel section are
// visible after it, and concurrent callers are serialized. Mostly here for the TSan build
// (scripts/sanitize thread), which checks the pool's hand-offs.
#include "inference/common/thread_pool.h"

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace qwen {
namespace {

TEST(ThreadPoolTest, RunCallsEveryIndexOnce) {
  ThreadPool pool(4);
  std::vector<int> hits(4, 0);  // plain ints: each thread writes only its own slot
  for (int round = 0; round < 200; ++round) {
    pool.Run([&](int i) { ++hits[i]; });
  }
  for (int h : hits) EXPECT_EQ(h, 200);
}

TEST(ThreadPoolTest, ParallelForCoversTheRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 1000, 4099}) {
    std::vector<int> seen(n, 0);
    pool.ParallelFor(n, 16, [&](int64_t begin, int64_t end, int) {
      for (int64_t k = begin; k < end; ++k) ++seen[k];
    });
    for (int64_t k = 0; k < n; ++k) ASSERT_EQ(seen[k], 1) << n << " " << k;
  }
}

// ParallelFor's sections let late pool threads skip them while Run() waits for every thread:
// alternating the two many times exercises the hand-over between the kinds of section.
TEST(ThreadPoolTest, ParallelForAndRunInterleave) {
  ThreadPool pool(3);
  std::vector<int> hits(3, 0);
  for (int round = 0; round < 3000; ++round) {
    std::vector<int> seen(5, 0);
    pool.ParallelFor(5, 1, [&](int64_t begin, int64_t end, int) {
      for (int64_t k = begin; k < end; ++k) ++seen[k];
    });
    for (int k = 0; k < 5; ++k) ASSERT_EQ(seen[k], 1) << round;
    if (round % 3 == 0) pool.Run([&](int i) { ++hits[i]; });
  }
  for (int h : hits) EXPECT_EQ(h, 1000);
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerialized) {
  ThreadPool pool(3);
  int64_t total = 0;  // written by every section; safe only because Run() is serialized
  auto caller = [&] {
    for (int round = 0; round < 100; ++round) {
      std::atomic<int64_t> part{0};
      pool.ParallelFor(300, 10, [&](int64_t b, int64_t e, int) { part += e - b; });
      pool.Run([&](int i) {
        if (i == 0) total += part.load();
      });
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total, 2 * 100 * 300);
}

TEST(ThreadPoolTest, SingleThreadPoolRunsInline) {
  ThreadPool pool(1);
  const std::thread::id self = std::this_thread::get_id();
  pool.Run([&](int i) {
    EXPECT_EQ(i, 0);
    EXPECT_EQ(std::this_thread::get_id(), self);
  });
}

}  // namespace
}  // namespace qwen

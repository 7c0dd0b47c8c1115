#include "inference/common/thread_pool.h"

#include <sched.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>

namespace qwen {
namespace {

// Waiting, in three stages. Busy spinning (pause is about 26 ns on Zen 4, so some 7 us) catches
// the next parallel section of a decode step when it follows at once. Then the thread yields its
// core, polling between yields (1024 of them, under a millisecond when nothing else wants the
// core, and a new section is still seen within a microsecond or so): when the cores are shared
// with other processes, the thread being waited for is often not running but queued, possibly
// behind this very waiter, and a pause loop would hold the core until its time slice ends. Then
// it sleeps on a futex.
constexpr int kSpinIterations = 1 << 8;
constexpr int kYieldIterations = 1 << 10;

// The CPU's spin-wait hint: x86's pause; aarch64's yield (a hint to SMT siblings, a no-op
// elsewhere; the yields to the scheduler below do the real sharing).
inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

// One step of waiting: true while the caller should keep polling, false when it should sleep.
inline bool SpinOrYield(int spin) {
  if (spin < kSpinIterations) {
    CpuRelax();
    return true;
  }
  if (spin < kSpinIterations + kYieldIterations) {
    sched_yield();
    return true;
  }
  return false;
}

constexpr uint64_t kGateClosed = uint64_t{1} << 31;
constexpr uint64_t kGateCount = kGateClosed - 1;

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  threads_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) {
    threads_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint32_t seen = 0;
  while (true) {
    uint32_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen; ++spin) {
      if (!SpinOrYield(spin)) generation_.wait(seen, std::memory_order_acquire);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    uint64_t v = gate_.load(std::memory_order_acquire);
    // The gate's generation is g for a RunOptional section, older for a Run() one (whose caller
    // waits for this thread, so it is still the latest), newer if section g was a RunOptional one
    // that has ended without this thread.
    const int32_t age = static_cast<int32_t>(g - static_cast<uint32_t>(v >> 32));
    if (age <= 0) {
      // Enter section g unless its caller has closed it.
      bool entered = false;
      while ((v >> 32) == g && (v & kGateClosed) == 0) {
        if (gate_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) {
          entered = true;
          break;
        }
      }
      if (!entered) continue;
      (*job_)(index);
      // The last one out of a closed section wakes the caller.
      if (gate_.fetch_sub(1, std::memory_order_acq_rel) - 1 ==
          ((uint64_t{g} << 32) | kGateClosed)) {
        gate_.notify_one();
      }
      continue;
    }
    (*job_)(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::Run(absl::FunctionRef<void(int)> fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  absl::MutexLock lock(&run_mutex_);
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  fn(0);
  int32_t left = pending_.load(std::memory_order_acquire);
  for (int spin = 0; left != 0; ++spin) {
    if (!SpinOrYield(spin)) pending_.wait(left, std::memory_order_acquire);
    left = pending_.load(std::memory_order_acquire);
  }
  job_ = nullptr;
}

void ThreadPool::RunOptional(absl::FunctionRef<void(int)> fn) {
  absl::MutexLock lock(&run_mutex_);
  job_ = &fn;
  const uint32_t g = generation_.load(std::memory_order_relaxed) + 1;
  gate_.store(uint64_t{g} << 32, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  fn(0);
  // Close the section, then wait for the threads already inside (each finishes the piece it
  // holds; the caller has found no piece left).
  uint64_t v = gate_.fetch_or(kGateClosed, std::memory_order_acq_rel) | kGateClosed;
  for (int spin = 0; (v & kGateCount) != 0; ++spin) {
    if (!SpinOrYield(spin)) gate_.wait(v, std::memory_order_acquire);
    v = gate_.load(std::memory_order_acquire);
  }
  job_ = nullptr;
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             absl::FunctionRef<void(int64_t, int64_t, int)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  // Pieces of about a quarter of an even share, so a thread slowed by the other process on its
  // core does not hold everyone back, but no smaller than `grain`.
  const int64_t piece = std::max<int64_t>(grain, n / (4 * n_threads_));
  std::atomic<int64_t> next{0};
  RunOptional([&](int thread) {
    while (true) {
      const int64_t begin = next.fetch_add(piece, std::memory_order_relaxed);
      if (begin >= n) break;
      fn(begin, std::min(n, begin + piece), thread);
    }
  });
}

int AvailableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

}  // namespace qwen

// A fixed pool of compute threads for the model's parallel loops.
#ifndef QWEN_INFERENCE_COMMON_THREAD_POOL_H_
#define QWEN_INFERENCE_COMMON_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace qwen {

// Runs a function on N threads at once: the calling thread plus N-1 pool threads.
//
// Made for many short parallel sections per token (hundreds per decode step): between sections
// the pool threads spin briefly, then sleep on a futex, so a dispatch costs about a microsecond
// while the model runs and nothing while it is idle.
//
// Thread-safe: Run() may be called from any thread; concurrent calls are serialized. A function
// passed to Run() must not call Run() on the same pool.
class ThreadPool {
 public:
  // `n_threads` >= 1 counts the calling thread.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index) once on every thread (the caller is index 0) and returns when all
  // calls have returned.
  void Run(absl::FunctionRef<void(int thread_index)> fn);

  // Splits [0, n) into pieces of at least `grain` items handed out dynamically, and calls
  // fn(begin, end, thread_index) for each. Returns when all are done. Unlike Run(), it does not
  // wait for pool threads that have not started by the time the caller has run out of pieces
  // (on a shared machine such a thread is often not even scheduled): they skip the section.
  void ParallelFor(int64_t n, int64_t grain,
                   absl::FunctionRef<void(int64_t begin, int64_t end, int thread_index)> fn);

 private:
  void WorkerLoop(int index);
  // Run() for a function that any subset of the threads may call, the caller always among them.
  void RunOptional(absl::FunctionRef<void(int thread_index)> fn);

  const int n_threads_;
  std::vector<std::thread> threads_;
  absl::Mutex run_mutex_;  // one Run() at a time
  const absl::FunctionRef<void(int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int32_t> pending_{0};
  // The gate of the latest RunOptional section: its generation in the high 32 bits, kGateClosed
  // once the caller is done (no thread may enter after that), and in the low bits how many pool
  // threads are inside. A section whose generation is newer than the gate's is a Run() one.
  std::atomic<uint64_t> gate_{0};
  std::atomic<bool> stop_{false};
};

// CPU cores this process may run on (its affinity mask, so containers with a cpuset are honoured).
int AvailableCores();

}  // namespace qwen

#endif  // QWEN_INFERENCE_COMMON_THREAD_POOL_H_

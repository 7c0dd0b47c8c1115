// Which worker runs which request: the front end's bounded queue and slot accounting.
#ifndef QWEN_SERVICE_DISPATCHER_H_
#define QWEN_SERVICE_DISPATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace qwen::service {

// One incarnation of a worker: its index in the pool and which (re)start of it. A request that
// holds a slot of epoch 3 of worker 1 releases it to that epoch only; after a restart the new
// process starts with all slots free.
struct WorkerRef {
  int index = -1;
  uint64_t epoch = 0;
  bool operator==(const WorkerRef& o) const { return index == o.index && epoch == o.epoch; }
};

// Assigns requests to worker slots. Requests wait in a FIFO queue of bounded length; whenever a
// slot is free, the oldest waiting request that may run there goes to the live worker with the
// fewest busy slots (ties: the lowest index), so load spreads evenly over the workers. A request
// with an affinity key (a hash of its prompt's first tokens, PromptAffinity) goes instead to the
// worker the key prefers (rendezvous hashing over the live workers, so keys move only when a
// worker comes or goes) as long as that worker has a free slot: requests that share a prompt
// start meet the worker whose prefix cache holds it.
//
// The dispatcher only does the bookkeeping: starting a request on a worker is the job's `start`
// callback, and the job reports the end with Release(). Callbacks run on the thread whose call
// caused them (Submit, Release, WorkerUp, WorkerDown), after the dispatcher's lock is released,
// so they may call back into the dispatcher.
//
// Thread-safe.
class Dispatcher {
 public:
  struct Job {
    uint64_t id = 0;
    // The job got a slot of `worker`; it owns the slot until it calls Release(worker).
    std::function<void(WorkerRef worker)> start;
    // The job can no longer be served (the last live worker went down while it waited).
    std::function<void(absl::Status status)> fail;
    // Worker incarnations this job must not run on (ones that already failed it).
    std::vector<WorkerRef> exclude;
    // 0: none (least busy worker).
    uint64_t affinity = 0;
  };

  struct WorkerStats {
    bool live = false;
    uint64_t epoch = 0;
    int slots = 0;
    int busy = 0;
  };
  struct Stats {
    int live_workers = 0;
    int total_slots = 0;  // of live workers
    int busy_slots = 0;
    int queued = 0;
    int queue_capacity = 0;
    std::vector<WorkerStats> workers;
  };

  // `queue_capacity` requests may wait for a slot at once (0: none may wait).
  Dispatcher(int n_workers, int queue_capacity);

  // Admits a new request: starts it at once when a slot is free, else queues it.
  // RESOURCE_EXHAUSTED when it would have to wait and the queue is full; UNAVAILABLE when no
  // worker is live. On error neither callback runs.
  absl::Status Submit(Job job);

  // Puts an admitted request back at the head of the queue (its worker died before it produced
  // anything). The queue bound does not apply. UNAVAILABLE when no worker is live.
  absl::Status Resubmit(Job job);

  // Removes a waiting request. True when it was waiting (its callbacks will not run); false
  // when it was already started or failed.
  bool Cancel(uint64_t id);

  // A request's slot is free. Ignored for a past incarnation of the worker.
  void Release(WorkerRef worker);

  // Worker `index` is up with `slots` free slots as incarnation `epoch`.
  void WorkerUp(int index, uint64_t epoch, int slots);

  // Worker `index` is gone: its slots vanish (requests on it learn of it from their own calls).
  // When no live worker remains, every waiting request fails with UNAVAILABLE.
  void WorkerDown(int index);

  Stats GetStats() const;

  // The affinity key of a prompt: a hash of its first kAffinityTokens tokens (all of a shorter
  // one), never 0. Conversations resent turn after turn, and requests sharing a system prompt,
  // share it.
  static constexpr int kAffinityTokens = 64;
  static uint64_t PromptAffinity(const int32_t* tokens, size_t n);
  // The worker a key prefers among those for which `eligible(k)` holds; -1 when none.
  static int Preferred(uint64_t affinity, int n_workers, const std::function<bool(int)>& eligible);

 private:
  struct Worker {
    bool live = false;
    uint64_t epoch = 0;
    int slots = 0;
    int busy = 0;
  };
  using Assignment = std::pair<Job, WorkerRef>;

  // Starts what can start; returns the jobs to call back once the lock is released.
  std::vector<Assignment> AssignLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int LiveLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Run(std::vector<Assignment> assignments);

  const int capacity_;
  mutable absl::Mutex mu_;
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_DISPATCHER_H_

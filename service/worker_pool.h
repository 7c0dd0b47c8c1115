// The worker processes of the front end: spawning, supervision and their channels.
#ifndef QWEN_SERVICE_WORKER_POOL_H_
#define QWEN_SERVICE_WORKER_POOL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "inference/engine/speculative_mode.h"
#include "inference/model/state.h"
#include "inference/vision/vision.h"
#include "qwen/worker/v1/worker.grpc.pb.h"
#include "service/dispatcher.h"

namespace qwen::service {

struct WorkerPoolOptions {
  std::string model_path;
  int workers = 2;
  int slots = 4;    // per worker
  int threads = 1;  // compute threads per worker
  int64_t ctx_size = 4096;
  model::KvType kv_type = model::kDefaultKvType;
  int64_t prefill_chunk = 256;  // prompt tokens per engine step
  int64_t max_draft = 3;        // speculative decoding's longest draft (0: off)
  int64_t mtp_draft_vocab = engine::kDefaultMtpDraftVocab;  // EngineOptions::mtp_draft_vocab
  // The vision tower (--mmproj; empty: no image input) and the image size bounds.
  std::string mmproj_path;
  int64_t image_min_pixels = vision::PreprocessOptions().min_pixels;
  int64_t image_max_pixels = vision::PreprocessOptions().max_pixels;
  int64_t prefix_cache_mb = 0;  // each worker's prefix cache budget; 0: none
  // Each worker's cache of image and video-frame embeddings by content (--vision_cache_mb).
  int64_t vision_cache_mb = 256;
  // Testing only: a pause before each video frame pair's encode (--testing_video_pair_delay).
  absl::Duration testing_video_pair_delay = absl::ZeroDuration();
  // Where the workers share the packed copy of the weights (--packed_dir); empty: none.
  std::string packed_dir;
  int64_t snapshot_interval = 512;  // prefix cache snapshot spacing inside prompts
  // Where the private socket directory is made; empty: $TMPDIR, else /tmp.
  std::string socket_dir;
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // A worker that does not answer a heartbeat within this is wedged and is killed.
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  // A worker not answering this long after its start is killed (and started again).
  absl::Duration startup_timeout = absl::Seconds(120);
  // Restart delay after a worker dies: doubles per consecutive failure up to the maximum, and
  // starts over once a worker has stayed up for a minute.
  absl::Duration restart_backoff_min = absl::Milliseconds(250);
  absl::Duration restart_backoff_max = absl::Seconds(30);
  bool allow_forced_tokens = false;    // passes --testing_allow_forced_tokens
  bool allow_fault_injection = false;  // passes --testing_allow_fault_injection
  // Each worker's private writable memory (heap, KV cache, stacks; not the shared read-only
  // weights) is capped at this with setrlimit(RLIMIT_DATA) before it runs; a worker that goes
  // over it exits (kExitOutOfMemory) and is restarted like any crash. 0: no limit.
  int64_t memory_limit_bytes = 0;
  // The program the workers run (`<exe> worker ...`).
  std::string exe = "/proc/self/exe";
  // Called with every successful heartbeat answer (worker index, incarnation, answer), on a
  // gRPC thread, without the pool's lock held; it must not call into the pool. May be empty.
  std::function<void(int index, uint64_t epoch, const worker::v1::HealthResponse& health)>
      on_health;
};

// What GetModelInfo reports about a worker.
struct WorkerInfo {
  int index = 0;
  std::string state;  // "starting", "up", "restarting", "stopped"
  pid_t pid = 0;
  int restarts = 0;
};

// Runs `workers` worker processes (`qwen worker --socket DIR/worker-K.sock ...`, fork + exec of
// the running program, never a shell) and keeps them running:
// - a supervisor thread reaps exited workers (waitpid) and restarts them after a back-off;
// - it probes each worker with the Health call: a starting worker is up once it answers, an up
//   worker that fails a heartbeat within heartbeat_timeout is killed (and so restarted), and so
//   is one whose engine has work (active or queued sequences) but has made no step for
//   heartbeat_timeout (its gRPC answers while its engine thread is stuck);
// - the dispatcher learns of every worker that comes up or goes down, and `on_live_change` of
//   every change in the number of live workers (the front end's health status follows it).
// Workers die with the front end: they ask for SIGKILL on their parent's death, and the
// supervisor thread, which forks them (the death signal follows the forking thread), lives
// until Stop() has stopped them.
//
// Thread-safe.
class WorkerPool {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Start(
      WorkerPoolOptions options, Dispatcher* dispatcher,
      std::function<void(int live_workers)> on_live_change);
  ~WorkerPool();  // Stop(5 s) if not stopped

  // The stub of one worker incarnation; null when that incarnation is gone.
  std::shared_ptr<worker::v1::Worker::Stub> Stub(WorkerRef worker) const;

  // A call to this incarnation failed at the transport level: the supervisor checks on it at
  // once (reaps it if it died, probes it otherwise).
  void ReportFailure(WorkerRef worker);

  // Stops the workers (SIGTERM, SIGKILL for those still running after `grace`), waits for them
  // and removes the socket directory. Idempotent.
  void Stop(absl::Duration grace);

  std::vector<WorkerInfo> Workers() const;
  int live() const;
  const std::string& socket_dir() const { return dir_; }

 private:
  enum class State { kBackoff, kStarting, kUp, kStopped };
  struct Worker {
    int index = 0;
    std::string socket;
    State state = State::kBackoff;
    pid_t pid = 0;
    uint64_t epoch = 0;
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<worker::v1::Worker::Stub> stub;
    absl::Time spawned;
    absl::Time up_since;
    absl::Time restart_at;  // kBackoff
    absl::Duration backoff;
    int restarts = 0;
    // Health probes: one at a time; their callbacks record the outcome for the supervisor.
    bool probe_in_flight = false;
    absl::Time next_probe;
    bool probe_done = false;
    bool probe_ok = false;
    std::string probe_error;
    int64_t probe_progress = 0;  // the last answer's engine layer passes and whether it had work
    bool probe_busy = false;
    // Engine progress: the layer passes last seen and when they last moved (or it was idle).
    int64_t progress_seen = -1;
    absl::Time progress_at;
    bool check_now = false;
  };

  WorkerPool(WorkerPoolOptions options, Dispatcher* dispatcher,
             std::function<void(int)> on_live_change);
  void Supervise();
  // Supervisor thread only. Each returns the dispatcher change to make once the lock is
  // released.
  absl::Status SpawnLocked(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopAllLocked(absl::Duration grace) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the worker's stub and moves its channel to retired_channels_.
  void RetireChannelLocked(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int LiveLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WorkerPoolOptions options_;
  Dispatcher* const dispatcher_;
  const std::function<void(int)> on_live_change_;
  std::string dir_;

  mutable absl::Mutex mu_;
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration stop_grace_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Health calls whose callbacks have not run yet; the pool outlives them.
  int probes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Channels of incarnations that are gone, kept until no call's ClientContext holds them and
  // then released on the supervisor thread. Why: gRPC's callback threads belong to a completion
  // queue that the server and every channel hold a reference to; if the last reference is a
  // channel dropped by a ClientContext destroyed on one of those threads (after the server is
  // gone), gRPC shuts the queue down from inside its own thread and aborts
  // (grpc_cq_internal_unref: "prior > 0"). So the pool, not a call, always drops a channel last.
  std::vector<std::shared_ptr<grpc::Channel>> retired_channels_ ABSL_GUARDED_BY(mu_);
  std::thread supervisor_;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_WORKER_POOL_H_

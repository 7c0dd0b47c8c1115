// The worker process: one engine on the model, served over a Unix domain socket.
#ifndef QWEN_SERVICE_WORKER_SERVER_H_
#define QWEN_SERVICE_WORKER_SERVER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "inference/engine/speculative_mode.h"
#include "inference/model/state.h"

namespace qwen::service {

struct WorkerOptions {
  std::string model_path;
  std::string socket_path;  // the worker listens on unix:<socket_path>
  int index = 0;            // for log lines
  int slots = 4;            // sequences at once
  int threads = 0;          // compute threads; 0: the cores this process may use
  int64_t ctx_size = 4096;  // context per slot
  model::KvType kv_type = model::kDefaultKvType;
  int64_t prefill_chunk = 256;  // prompt tokens per engine step
  int64_t max_draft = 3;        // speculative decoding's longest draft (0: off)
  int64_t mtp_draft_vocab = engine::kDefaultMtpDraftVocab;  // EngineOptions::mtp_draft_vocab
  // The vision tower's GGUF; empty: requests with images fail (FAILED_PRECONDITION).
  std::string mmproj_path;
  // Where the packed copy of the weights is shared between workers (model::LoadOptions); empty:
  // none.
  std::string packed_dir;
  int64_t prefix_cache_mb = 0;  // prefix cache budget; 0: none
  // Image and video-frame embeddings kept by content (multimodal::EmbeddingCache), so that a
  // second request about the same image or video encodes nothing; 0: none.
  int64_t vision_cache_mb = 256;
  // Testing only: each video frame pair's encode starts with this pause (not interruptible; the
  // encoder's own cancellation points are what a test then watches).
  absl::Duration testing_video_pair_delay = absl::ZeroDuration();
  int64_t snapshot_interval = 512;  // prefix cache snapshots inside prompts every this many tokens
  // The front end's pid. The worker asks the kernel for SIGKILL when its parent dies and then
  // checks that the parent is still this one (it may have died before the request), so no
  // worker outlives the front end. 0: no parent check (a worker run by hand).
  pid_t parent_pid = 0;
  // Honour GenerateRequest.forced_tokens (testing only).
  bool allow_forced_tokens = false;
  // Testing only: SIGUSR1 wedges the engine thread (the next token it reports blocks it for
  // good, while gRPC goes on answering health checks); SIGUSR2 makes the engine thread allocate
  // memory until an allocation fails (only under a memory limit, see kExitOutOfMemory).
  bool allow_fault_injection = false;
};

// The exit status of a worker whose memory allocation failed (it went over the limit the front
// end set with setrlimit(RLIMIT_DATA), --worker_memory_limit): it logs and exits at once rather
// than run on in an unknown state. The front end treats it like any crash.
inline constexpr int kExitOutOfMemory = 3;

// Runs a worker until SIGTERM or SIGINT: loads the model, starts the engine, serves
// qwen.worker.v1.Worker on the socket, and on the signal stops taking calls, cancels what runs
// and returns. Errors (model not loadable, socket not bindable, parent gone) are returned
// before anything is served.
//
// Call from main() before any other thread exists: it blocks SIGTERM and SIGINT in the calling
// thread so that every thread it starts inherits the mask and the signal is taken by sigwait.
absl::Status RunWorker(const WorkerOptions& options);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_WORKER_SERVER_H_

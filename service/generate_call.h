// One public Generate stream in the front end, from admission to the last message.
#ifndef QWEN_SERVICE_GENERATE_CALL_H_
#define QWEN_SERVICE_GENERATE_CALL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "qwen/v1/qwen.pb.h"
#include "qwen/worker/v1/worker.grpc.pb.h"
#include "service/dispatcher.h"
#include "service/output_assembler.h"
#include "service/request.h"
#include "service/text_model.h"
#include "service/worker_pool.h"

namespace qwen::service {

// The gRPC metadata key (binary, so any text) whose value a front end started with
// --testing_allow_forced_output tokenizes and has the worker emit instead of sampled tokens.
inline constexpr char kForcedOutputMetadata[] = "x-qwen-testing-forced-output-bin";
// The gRPC metadata key of a request id, used when GenerateRequest.request_id is empty.
inline constexpr char kRequestIdMetadata[] = "x-request-id";
// The metadata the HTTP API's in-process calls carry ("http"), honoured only on calls from the
// in-process channel (IsInProcessPeer): the `protocol` label of the request metrics.
inline constexpr char kProtocolMetadata[] = "x-qwen-protocol";
// gRPC's peer string of a call on the server's in-process channel (the HTTP API's calls): no
// network address ("ipv4:", "ipv6:", "unix:"), which every call from outside has.
bool IsInProcessPeer(absl::string_view peer);
// With it, the HTTP client's address ("http:ipv4:127.0.0.1:51234"), the peer of the request log.
inline constexpr char kHttpPeerMetadata[] = "x-qwen-http-peer";
// With it, "1": the call is the first of several choices of one prompt, whose others start after
// its prefill (the worker also snapshots the prompt before its last token for them).
inline constexpr char kFirstChoiceMetadata[] = "x-qwen-first-choice";

class GenerateCall;
class Metrics;

// The live Generate streams, so that shutdown can wait for them and cancel the stragglers.
// Thread-safe.
class StreamRegistry {
 public:
  void Add(const std::shared_ptr<GenerateCall>& call);
  void Remove(const GenerateCall* call);
  int size() const;
  std::vector<std::shared_ptr<GenerateCall>> Snapshot() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<const GenerateCall*, std::weak_ptr<GenerateCall>> calls_ ABSL_GUARDED_BY(mu_);
};

// What every Generate call shares; owned by the service, outlives the calls.
struct GenerateEnv {
  const TextModel* model = nullptr;
  Dispatcher* dispatcher = nullptr;
  // Set once the pool has started, after the server began serving (health first): atomic.
  std::atomic<WorkerPool*> pool{nullptr};
  StreamRegistry* registry = nullptr;
  RequestLimits limits;
  int max_retries = 2;  // re-dispatches of a request whose worker failed before its first token
  bool allow_forced_output = false;
  std::atomic<bool>* draining = nullptr;         // set: new calls are refused with UNAVAILABLE
  int64_t max_message_bytes = int64_t{8} << 20;  // larger requests: INVALID_ARGUMENT
  std::atomic<uint64_t>* request_counter = nullptr;
  Metrics* metrics = nullptr;  // null: no metrics
};

// The server side of one Generate call and the worker call(s) that serve it:
//   validate -> queue in the Dispatcher -> stream from a worker (qwen.worker.v1.Generate) ->
//   OutputAssembler -> write to the client.
// A worker failure before the first token re-dispatches the request elsewhere (up to
// max_retries); after it, the stream ends with UNAVAILABLE. A client cancel or deadline removes
// a queued request or cancels the worker call (the worker cancels the engine sequence, which
// frees the slot within a decode step). A matched stop string ends the stream and cancels the
// worker call.
//
// Lifetime: owned by shared_ptr. gRPC holds it until OnDone(); the worker call and dispatcher
// jobs hold it while they run. Thread-safe: callbacks arrive on gRPC's threads and the
// dispatcher's callers; all state is under one mutex, and gRPC operations are started outside
// it.
class GenerateCall : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                     public std::enable_shared_from_this<GenerateCall> {
 public:
  // Creates the call and starts it (validation, dispatch). Returns the reactor for gRPC.
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Create(const GenerateEnv* env,
                                                                grpc::CallbackServerContext* ctx,
                                                                const v1::GenerateRequest* req);

  // Shutdown past the grace period: sends a last message with FINISH_REASON_CANCELLED and ends
  // the stream with `status` (UNAVAILABLE).
  void Abort(const absl::Status& status);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  GenerateCall(const GenerateEnv* env, grpc::CallbackServerContext* ctx);
  ~GenerateCall() override;

 private:
  class WorkerCall;
  struct Action {
    bool write = false;
    bool finish = false;
    grpc::Status status;
  };

  void Start(const v1::GenerateRequest& request);
  // Queues the request with the dispatcher (at the head when retrying).
  void Dispatch(bool retry);
  void StartAttempt(WorkerRef worker);
  void OnWorkerMessage(WorkerCall* call, const worker::v1::GenerateResponse& message);
  void OnWorkerDone(WorkerCall* call, const grpc::Status& status);
  // Ends the stream with `status` after the messages already queued.
  void EndWith(const absl::Status& status);
  void StopGeneration();

  void QueueLocked(v1::GenerateResponse message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinalLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Action PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Execute(const Action& action);
  void LogEndLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GenerateEnv* const env_;
  grpc::CallbackServerContext* const ctx_;
  std::shared_ptr<GenerateCall> self_;  // gRPC's reference, dropped in OnDone
  uint64_t job_id_ = 0;
  absl::Time arrival_;
  std::string request_id_;         // set in Start, then read-only
  std::string peer_;               // set in Start, then read-only
  std::string protocol_ = "grpc";  // set in Start, then read-only

  absl::Mutex mu_;
  enum class Phase { kNew, kQueued, kRunning, kEnded };
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kNew;
  PreparedGenerate prepared_;  // set in Start, then read-only
  std::unique_ptr<OutputAssembler> assembler_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<WorkerCall> worker_call_ ABSL_GUARDED_BY(mu_);
  std::vector<WorkerRef> failed_workers_ ABSL_GUARDED_BY(mu_);
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  int last_worker_ ABSL_GUARDED_BY(mu_) = -1;  // index of the worker of the last attempt
  absl::Time first_token_at_ ABSL_GUARDED_BY(mu_);
  absl::Time last_token_at_ ABSL_GUARDED_BY(mu_);  // when the latest tokens arrived
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;    // client cancel, deadline or broken stream

  // Output: messages wait in outbox_ (merged while a write is in flight); the final status
  // follows once they are written.
  std::deque<v1::GenerateResponse> outbox_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse writing_message_;  // only touched while no write is in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool final_set_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_GENERATE_CALL_H_

#include "service/generate_call.h"

#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/api_names.h"
#include "service/auth.h"
#include "service/grpc_status.h"
#include "service/limits.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/request_log.h"

namespace qwen::service {
namespace {

namespace wpb = ::qwen::worker::v1;

constexpr char kComponent[] = "generate";

bool HasContent(const v1::GenerateResponse& m) {
  return !m.text().empty() || !m.reasoning().empty() || m.tool_calls_size() > 0 ||
         m.tool_call_deltas_size() > 0 || m.token_ids_size() > 0 || m.logprobs_size() > 0 ||
         m.has_completion() || m.has_progress();
}

// Appends `src` to `dst` as if both had been one message (MergeFrom would replace the strings).
void Append(v1::GenerateResponse* dst, v1::GenerateResponse&& src) {
  dst->mutable_text()->append(src.text());
  dst->mutable_reasoning()->append(src.reasoning());
  for (auto& d : *src.mutable_tool_call_deltas()) *dst->add_tool_call_deltas() = std::move(d);
  for (auto& c : *src.mutable_tool_calls()) *dst->add_tool_calls() = std::move(c);
  dst->mutable_token_ids()->MergeFrom(src.token_ids());
  for (auto& l : *src.mutable_logprobs()) *dst->add_logprobs() = std::move(l);
  if (src.has_completion()) *dst->mutable_completion() = std::move(*src.mutable_completion());
  if (src.has_progress()) *dst->mutable_progress() = src.progress();  // the latest state
}

// Statuses a worker returns about the request itself rather than about its own health.
bool IsRequestError(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kAlreadyExists || code == absl::StatusCode::kOutOfRange;
}

}  // namespace

bool IsInProcessPeer(absl::string_view peer) {
  return !absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:") &&
         !absl::StartsWith(peer, "unix:");
}

// ---------------------------------------------------------------------------------------------
// StreamRegistry

void StreamRegistry::Add(const std::shared_ptr<GenerateCall>& call) {
  absl::MutexLock lock(&mu_);
  calls_[call.get()] = call;
}

void StreamRegistry::Remove(const GenerateCall* call) {
  absl::MutexLock lock(&mu_);
  calls_.erase(call);
}

int StreamRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(calls_.size());
}

std::vector<std::shared_ptr<GenerateCall>> StreamRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<GenerateCall>> out;
  for (const auto& [ptr, weak] : calls_) {
    if (auto call = weak.lock()) out.push_back(std::move(call));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// WorkerCall: the front end's client call to one worker.

class GenerateCall::WorkerCall : public grpc::ClientReadReactor<wpb::GenerateResponse>,
                                 public std::enable_shared_from_this<WorkerCall> {
 public:
  WorkerCall(std::shared_ptr<GenerateCall> owner, WorkerRef worker)
      : owner_(std::move(owner)), worker_(worker) {}

  // `request` must outlive the call (it lives in the owner's prepared_).
  void Start(wpb::Worker::Stub* stub, const wpb::GenerateRequest& request,
             std::chrono::system_clock::time_point deadline) {
    self_ = shared_from_this();
    if (deadline != std::chrono::system_clock::time_point::max()) ctx_.set_deadline(deadline);
    stub->async()->Generate(&ctx_, &request, this);
    StartRead(&response_);
    StartCall();
  }

  void Cancel() { ctx_.TryCancel(); }
  WorkerRef worker() const { return worker_; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    owner_->OnWorkerMessage(this, response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    owner_->OnWorkerDone(this, status);
    auto keep = std::move(self_);  // may destroy this; nothing follows
  }

 private:
  std::shared_ptr<GenerateCall> owner_;
  const WorkerRef worker_;
  std::shared_ptr<WorkerCall> self_;  // gRPC's reference, dropped in OnDone
  grpc::ClientContext ctx_;
  wpb::GenerateResponse response_;
};

// ---------------------------------------------------------------------------------------------
// GenerateCall

GenerateCall::GenerateCall(const GenerateEnv* env, grpc::CallbackServerContext* ctx)
    : env_(env), ctx_(ctx) {}

GenerateCall::~GenerateCall() = default;

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Create(
    const GenerateEnv* env, grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) {
  auto call = std::make_shared<GenerateCall>(env, ctx);
  call->self_ = call;
  call->Start(*req);
  return call.get();
}

void GenerateCall::Start(const v1::GenerateRequest& request) {
  arrival_ = absl::Now();
  job_id_ = env_->request_counter->fetch_add(1) + 1;
  peer_ = ctx_->peer();
  request_id_ = request.request_id();
  if (request_id_.empty()) {
    const auto& md = ctx_->client_metadata();
    auto it = md.find(kRequestIdMetadata);
    if (it != md.end()) request_id_.assign(it->second.data(), it->second.size());
  }
  if (request_id_.empty()) request_id_ = absl::StrCat("req-", job_id_);
  if (auto it = ctx_->client_metadata().find(kProtocolMetadata);
      it != ctx_->client_metadata().end() && it->second == "http" && IsInProcessPeer(peer_)) {
    protocol_ = "http";
    if (auto peer = ctx_->client_metadata().find(kHttpPeerMetadata);
        peer != ctx_->client_metadata().end()) {
      peer_.assign(peer->second.data(), peer->second.size());
    }
  }
  if (absl::Status st = CheckAuthenticated(*ctx_); !st.ok()) {
    EndWith(st);
    return;
  }
  if (env_->draining->load()) {
    EndWith(absl::UnavailableError("the server is shutting down"));
    return;
  }
  if (absl::Status st = CheckMessageSize(request, env_->max_message_bytes); !st.ok()) {
    EndWith(st);
    return;
  }
  std::string forced;
  const std::string* forced_ptr = nullptr;
  if (env_->allow_forced_output) {
    const auto& md = ctx_->client_metadata();
    auto it = md.find(kForcedOutputMetadata);
    if (it != md.end()) {
      forced.assign(it->second.data(), it->second.size());
      forced_ptr = &forced;
    }
  }
  absl::StatusOr<PreparedGenerate> prepared =
      PrepareGenerate(request, *env_->model, env_->limits, job_id_, forced_ptr);
  if (!prepared.ok()) {
    EndWith(prepared.status());
    return;
  }
  prepared_ = std::move(*prepared);
  if (protocol_ == "http") {
    if (auto it = ctx_->client_metadata().find(kFirstChoiceMetadata);
        it != ctx_->client_metadata().end() && it->second == "1") {
      prepared_.worker_request.set_snapshot_before_last(true);
    }
  }
  prepared_.request_id = request_id_;  // the metadata's, when the field is empty
  prepared_.worker_request.set_request_id(request_id_);
  {
    absl::MutexLock lock(&mu_);
    assembler_ = std::make_unique<OutputAssembler>(prepared_, env_->model->tokenizer(), arrival_);
  }
  env_->registry->Add(shared_from_this());
  Dispatch(/*retry=*/false);
}

void GenerateCall::Dispatch(bool retry) {
  Dispatcher::Job job;
  job.id = job_id_;
  auto self = shared_from_this();
  job.start = [self](WorkerRef worker) { self->StartAttempt(worker); };
  job.fail = [self](absl::Status status) { self->EndWith(status); };
  if (!prepared_.worker_request.no_prefix_cache()) {
    const auto& prompt = prepared_.worker_request.prompt();
    job.affinity = Dispatcher::PromptAffinity(prompt.data(), static_cast<size_t>(prompt.size()));
  }
  Action action;
  bool ended = false;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kEnded || cancelled_) {
      // Cancelled while between workers: nothing is queued or running to end it later.
      FinalLocked(absl::CancelledError("the client cancelled the call"));
      action = PumpLocked();
      ended = true;
    } else {
      phase_ = Phase::kQueued;
      job.exclude = failed_workers_;
    }
  }
  if (ended) {
    Execute(action);
    return;
  }
  absl::Status st =
      retry ? env_->dispatcher->Resubmit(std::move(job)) : env_->dispatcher->Submit(std::move(job));
  if (!st.ok()) {
    EndWith(st);
    return;
  }
  // A cancel that came while this was being queued found nothing to remove; do it now, so that
  // the request does not hold a place in the queue.
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancelled_;
  }
  if (cancelled && env_->dispatcher->Cancel(job_id_)) {
    EndWith(absl::CancelledError("the call was cancelled while queued"));
  }
}

void GenerateCall::StartAttempt(WorkerRef worker) {
  std::shared_ptr<wpb::Worker::Stub> stub = env_->pool.load()->Stub(worker);
  std::shared_ptr<WorkerCall> call;
  bool give_back = false, redispatch = false;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kQueued || cancelled_ || final_set_) {
      // Cancelled (or aborted) while the dispatcher was handing it a slot.
      give_back = true;
      FinalLocked(absl::CancelledError("the call was cancelled while queued"));
      action = PumpLocked();
    } else if (stub == nullptr) {
      // The worker went away between the assignment and now: try elsewhere.
      failed_workers_.push_back(worker);
      give_back = redispatch = true;
    } else {
      ++attempts_;
      last_worker_ = worker.index;
      if (attempts_ == 1) assembler_->MarkDispatched(absl::Now());
      phase_ = Phase::kRunning;
      call = std::make_shared<WorkerCall>(shared_from_this(), worker);
      worker_call_ = call;
    }
  }
  if (give_back) env_->dispatcher->Release(worker);
  if (redispatch) Dispatch(/*retry=*/true);
  if (call != nullptr) call->Start(stub.get(), prepared_.worker_request, ctx_->deadline());
  Execute(action);
}

void GenerateCall::OnWorkerMessage(WorkerCall* call, const wpb::GenerateResponse& message) {
  std::shared_ptr<WorkerCall> to_cancel;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (worker_call_.get() != call || final_set_) return;
    const absl::Time now = absl::Now();
    v1::GenerateResponse out;
    out.set_request_id(prepared_.request_id);
    if (message.has_progress()) {
      out.mutable_progress()->set_frames_encoded(
          static_cast<uint32_t>(message.progress().frames_encoded()));
      out.mutable_progress()->set_frames_total(
          static_cast<uint32_t>(message.progress().frames_total()));
    }
    bool stop = false;
    const int before = assembler_->tokens();
    for (const wpb::Token& t : message.tokens()) {
      if (assembler_->AddToken(t, now, &out)) {
        stop = true;
        break;
      }
    }
    if (const int added = assembler_->tokens() - before; added > 0) {
      if (before == 0) first_token_at_ = now;
      if (env_->metrics != nullptr) {
        if (before == 0) {
          env_->metrics->ObserveTimeToFirstToken(now - arrival_, protocol_);
          env_->metrics->ObserveInterTokenLatency(absl::ZeroDuration(), added - 1, protocol_);
        } else {
          env_->metrics->ObserveInterTokenLatency(now - last_token_at_, added, protocol_);
        }
      }
      last_token_at_ = now;
    }
    absl::Status end = absl::OkStatus();
    bool ended = false;
    if (stop) {
      assembler_->FinishOnStop(now, &out);
      to_cancel = worker_call_;  // the worker is still generating
      ended = true;
    } else if (message.has_finish()) {
      end = assembler_->Finish(message.finish(), now, &out);
      ended = true;
    }
    if (end.ok() && HasContent(out)) QueueLocked(std::move(out));
    if (ended) FinalLocked(end);
    action = PumpLocked();
  }
  if (to_cancel != nullptr) to_cancel->Cancel();
  Execute(action);
}

void GenerateCall::OnWorkerDone(WorkerCall* call, const grpc::Status& grpc_status) {
  const absl::Status status = FromGrpcStatus(grpc_status);
  const WorkerRef worker = call->worker();
  bool report = false, retry = false;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (worker_call_.get() == call) {
      worker_call_.reset();
      if (final_set_) {
        // Finished normally, by a stop string, or aborted: nothing to add.
      } else if (cancelled_) {
        FinalLocked(absl::CancelledError("the client cancelled the call"));
      } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
        FinalLocked(absl::DeadlineExceededError("the deadline passed during generation"));
      } else if (status.ok()) {
        FinalLocked(absl::InternalError("the worker ended the stream without finishing it"));
      } else if (IsRequestError(status.code())) {
        FinalLocked(status);
      } else {
        // The worker failed (died, was killed, or its connection broke).
        report = true;
        failed_workers_.push_back(worker);
        const int tokens = assembler_->tokens();
        if (tokens == 0 && attempts_ <= env_->max_retries) {
          retry = true;
          LogWarning(kComponent,
                     absl::StrCat(prepared_.request_id, ": worker ", worker.index,
                                  " failed before the first token (", std::string(status.message()),
                                  "); retrying elsewhere"),
                     {{"request_id", request_id_},
                      {"worker", worker.index},
                      {"error", std::string(status.message())}});
        } else {
          FinalLocked(absl::UnavailableError(
              absl::StrCat("the worker serving this request failed (worker ", worker.index, ": ",
                           std::string(status.message()), ") after ", tokens,
                           " generated tokens; the stream cannot be resumed")));
        }
      }
      action = PumpLocked();
    }
  }
  if (report) env_->pool.load()->ReportFailure(worker);
  env_->dispatcher->Release(worker);
  if (retry) Dispatch(/*retry=*/true);
  Execute(action);
}

void GenerateCall::EndWith(const absl::Status& status) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    FinalLocked(status);
    action = PumpLocked();
  }
  Execute(action);
}

void GenerateCall::StopGeneration() {
  std::shared_ptr<WorkerCall> running;
  {
    absl::MutexLock lock(&mu_);
    running = worker_call_;
  }
  // Removing it from the queue fails when it is not there, or when a dispatch is racing with
  // us; then StartAttempt sees the call ended or cancelled and gives the slot back.
  if (env_->dispatcher->Cancel(job_id_)) {
    EndWith(absl::CancelledError("the call was cancelled while queued"));
  }
  if (running != nullptr) running->Cancel();
}

void GenerateCall::Abort(const absl::Status& status) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (final_set_ || assembler_ == nullptr) return;
    v1::GenerateResponse out;
    out.set_request_id(prepared_.request_id);
    assembler_->FinishCancelled(absl::Now(), &out);
    QueueLocked(std::move(out));
    FinalLocked(status);
    action = PumpLocked();
  }
  StopGeneration();
  Execute(action);
}

void GenerateCall::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  StopGeneration();
}

void GenerateCall::OnWriteDone(bool ok) {
  Action action;
  bool broken = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      write_failed_ = true;
      broken = !cancelled_;
      cancelled_ = true;
    }
    action = PumpLocked();
  }
  if (broken) StopGeneration();
  Execute(action);
}

void GenerateCall::OnDone() {
  env_->registry->Remove(this);
  auto keep = std::move(self_);  // may destroy this; nothing follows
}

void GenerateCall::QueueLocked(v1::GenerateResponse message) {
  if (!outbox_.empty()) {
    Append(&outbox_.back(), std::move(message));
  } else {
    outbox_.push_back(std::move(message));
  }
}

void GenerateCall::FinalLocked(const absl::Status& status) {
  if (final_set_) return;
  final_set_ = true;
  phase_ = Phase::kEnded;
  final_status_ = ToGrpcStatus(status);
  LogEndLocked(status);
}

void GenerateCall::LogEndLocked(const absl::Status& status) {
  RequestSummary r;
  r.method = "Generate";
  r.request_id = request_id_;
  r.peer = peer_;
  r.protocol = protocol_;
  r.status = status;
  // A deadline reaches the server as a cancellation, often the client's RST_STREAM arriving just
  // before the server's own copy of the deadline (computed from the grpc-timeout header on
  // arrival, so slightly later) expires. Account for it as the client saw it: a cancel within
  // 10% of the call's time budget (at most a second) before its deadline counts as the deadline.
  const absl::Time call_deadline = absl::FromChrono(ctx_->deadline());
  const absl::Duration window = std::min(absl::Seconds(1), (call_deadline - arrival_) / 10);
  if (status.code() == absl::StatusCode::kCancelled && call_deadline != absl::InfiniteFuture() &&
      call_deadline <= absl::Now() + window) {
    r.status = absl::DeadlineExceededError("the deadline passed");
  }
  r.duration = absl::Now() - arrival_;
  r.generate = true;
  r.worker = last_worker_;
  r.attempts = attempts_;
  r.prompt_tokens = prepared_.prompt_tokens;
  if (assembler_ != nullptr) r.generated_tokens = assembler_->tokens();
  if (!outbox_.empty() && outbox_.back().has_completion()) {
    const v1::Completion& c = outbox_.back().completion();
    r.finish_reason = FinishReasonName(c.finish_reason());
    r.cached_tokens = static_cast<int>(c.usage().cached_tokens());
    r.drafted_tokens = static_cast<int>(c.usage().drafted_tokens());
    r.accepted_tokens = static_cast<int>(c.usage().accepted_tokens());
    r.queue_wait = absl::Microseconds(c.timings().queue_wait_ms() * 1000);
    r.tokens_per_second = c.timings().tokens_per_second();
  }
  if (r.generated_tokens > 0) r.time_to_first_token = first_token_at_ - arrival_;
  LogRequest(r);
  if (env_->metrics != nullptr) env_->metrics->RecordRequest(r);
}

GenerateCall::Action GenerateCall::PumpLocked() {
  Action a;
  if (finish_called_ || writing_) return a;
  if (!outbox_.empty() && !write_failed_) {
    writing_message_ = std::move(outbox_.front());
    outbox_.pop_front();
    writing_ = true;
    a.write = true;
    return a;
  }
  if (final_set_) {
    finish_called_ = true;
    a.finish = true;
    a.status = final_status_;
  }
  return a;
}

void GenerateCall::Execute(const Action& action) {
  if (action.write) StartWrite(&writing_message_);
  if (action.finish) Finish(action.status);
}

}  // namespace qwen::service

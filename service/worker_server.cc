#include "service/worker_server.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "inference/common/status_macros.h"
#include "inference/engine/engine.h"
#include "inference/gguf/gguf_file.h"
#include "inference/grammar/spec.h"
#include "inference/model/model.h"
#include "inference/multimodal/embedding_cache.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/video/frame_pairs.h"
#include "inference/video/video.h"
#include "inference/vision/vision.h"
#include "qwen/worker/v1/worker.grpc.pb.h"
#include "service/grpc_status.h"
#include "service/log.h"
#include "service/prefix_cache_budget.h"

namespace qwen::service {
namespace {

namespace wpb = ::qwen::worker::v1;

constexpr char kComponent[] = "worker";

// Most tokens sent in one message when the front end reads slower than the engine produces.
constexpr int kMaxTokensPerMessage = 64;

// Faults injected on request (--testing_allow_fault_injection; see WorkerOptions), acted on by
// the engine thread when it next reports a token.
std::atomic<bool> wedge_engine{false};
std::atomic<bool> exhaust_memory{false};

void OnOutOfMemory() {
  static const char kMessage[] =
      "qwen worker: out of memory (over the memory limit of this worker); exiting\n";
  (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  _exit(kExitOutOfMemory);
}

void InjectFaults() {
  if (wedge_engine.load()) {
    LogWarning("worker", "testing: the engine thread is wedged on purpose");
    while (true) pause();  // until the front end's heartbeat kills the process
  }
  if (exhaust_memory.exchange(false)) {
    rlimit rl;
    if (getrlimit(RLIMIT_DATA, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
      LogWarning("worker", "testing: no memory limit is set; not exhausting memory");
      return;
    }
    LogWarning("worker", "testing: allocating memory until the limit is hit");
    std::vector<char*> blocks;
    while (true) {
      char* b = new char[16 << 20];
      for (size_t i = 0; i < (16 << 20); i += 4096) b[i] = 1;  // make the pages real
      blocks.push_back(b);
    }
  }
}

class Stream;

// The gRPC side of one worker Generate call: forwards write completions to its Stream and a
// cancellation (front end cancelled, deadline, shutdown) to the engine. Owned by gRPC until
// OnDone, where it deletes itself.
class GenerateReactor : public grpc::ServerWriteReactor<wpb::GenerateResponse> {
 public:
  GenerateReactor(engine::Engine* engine, uint64_t id) : engine_(engine), id_(id) {}
  void Begin(std::shared_ptr<Stream> stream) { stream_ = std::move(stream); }
  void OnWriteDone(bool ok) override;
  void OnCancel() override { engine_->Cancel(id_); }
  void OnDone() override;

 private:
  engine::Engine* engine_;
  const uint64_t id_;
  std::shared_ptr<Stream> stream_;
};

// The state one Generate call shares between its gRPC reactor (gRPC's threads) and its engine
// sink (the scheduler thread). The sink may outlive the reactor (the engine reports the finish
// after a cancelled call is gone), so the reactor pointer is cleared when gRPC is done with it.
// Thread-safe: all state is under its mutex; gRPC operations are started outside it.
class Stream : public engine::RequestSink {
 public:
  Stream(GenerateReactor* reactor, std::string request_id)
      : reactor_(reactor), request_id_(std::move(request_id)) {}

  // The request's videos have `total` frames to encode (nothing is sent yet).
  void ExpectVideoFrames(int total) {
    absl::MutexLock lock(&mu_);
    progress_total_ = total;
  }

  // Video frames encoded so far (or found in the embedding cache), of `total`: sent with the next
  // message, the latest state only. Called from the engine's threads (the encode functions).
  void OnProgress(int encoded, int total) {
    {
      absl::MutexLock lock(&mu_);
      if (encoded <= progress_encoded_ && total == progress_total_) return;
      progress_encoded_ = encoded;
      progress_total_ = total;
      progress_pending_ = true;
    }
    Pump();
  }

  void OnToken(const engine::TokenOutput& t) override {
    InjectFaults();
    {
      absl::MutexLock lock(&mu_);
      wpb::Token& tok = pending_.emplace_back();
      tok.set_id(t.token);
      if (t.logprob) {
        tok.set_has_logprob(true);
        tok.set_logprob(t.logprob->logprob);
        for (const auto& [id, lp] : t.logprob->top) {
          tok.add_top_ids(id);
          tok.add_top_logprobs(lp);
        }
      }
    }
    Pump();
  }

  void OnFinish(const engine::FinishInfo& info) override {
    {
      absl::MutexLock lock(&mu_);
      wpb::Finish& f = finish_;
      switch (info.reason) {
        case engine::FinishReason::kStopToken:
          f.set_reason(wpb::Finish::REASON_STOP_TOKEN);
          f.set_stop_token(info.stop_token);
          break;
        case engine::FinishReason::kLength:
          f.set_reason(wpb::Finish::REASON_LENGTH);
          break;
        case engine::FinishReason::kCancelled:
          f.set_reason(wpb::Finish::REASON_CANCELLED);
          break;
        case engine::FinishReason::kError:
          f.set_reason(wpb::Finish::REASON_ERROR);
          f.set_error(std::string(info.status.message()));
          f.set_error_code(static_cast<int32_t>(info.status.code()));
          break;
        case engine::FinishReason::kGrammarDone:
          f.set_reason(wpb::Finish::REASON_GRAMMAR_DONE);
          break;
      }
      f.set_prompt_tokens(info.prompt_tokens);
      f.set_generated_tokens(info.generated_tokens);
      f.set_cached_tokens(info.cached_tokens);
      f.set_drafted_tokens(info.drafted_tokens);
      f.set_accepted_tokens(info.accepted_tokens);
      f.set_queue_ms(absl::ToDoubleMilliseconds(info.queue_time));
      f.set_time_to_first_token_ms(absl::ToDoubleMilliseconds(info.time_to_first_token));
      f.set_decode_ms(absl::ToDoubleMilliseconds(info.decode_time));
      finished_ = true;
    }
    LogFinish(info);
    LogVideoCancelled(info);
    Pump();
  }

  // Submission failed: the call ends with this status and no message.
  void Fail(const absl::Status& status) {
    LogWarning(kComponent, "generation refused",
               {{"request_id", request_id_}, {"error", status.ToString()}});
    GenerateReactor* r;
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || final_sent_) return;
      final_sent_ = true;
      r = reactor_;
    }
    r->Finish(ToGrpcStatus(status));
  }

  void WriteDone(bool ok) {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
    }
    Pump();
  }

  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  // Starts the next write, or the finish, when none is in flight. gRPC calls are made outside
  // the lock: a reaction may run inline and take it again.
  void Pump() {
    GenerateReactor* r = nullptr;
    bool write = false, write_last = false, finish_only = false;
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || writing_ || final_sent_) return;
      if (broken_) {
        // The front end is gone; the engine was told by OnCancel. End once it finished.
        if (!finished_) return;
        final_sent_ = true;
        finish_only = true;
      } else if (!pending_.empty() || finished_ || progress_pending_) {
        out_.Clear();
        if (progress_pending_) {
          out_.mutable_progress()->set_frames_encoded(progress_encoded_);
          out_.mutable_progress()->set_frames_total(progress_total_);
          progress_pending_ = false;
        }
        const int n = std::min<int>(static_cast<int>(pending_.size()), kMaxTokensPerMessage);
        for (int k = 0; k < n; ++k) {
          *out_.add_tokens() = std::move(pending_.front());
          pending_.pop_front();
        }
        if (finished_ && pending_.empty()) {
          *out_.mutable_finish() = finish_;
          write_last = true;
          final_sent_ = true;
        } else {
          write = true;
          writing_ = true;
        }
      } else {
        return;
      }
      r = reactor_;
    }
    if (finish_only) {
      r->Finish(grpc::Status::OK);
    } else if (write_last) {
      r->StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
    } else if (write) {
      r->StartWrite(&out_);
    }
  }

  // The engine's account of the sequence: debug; an error line for an engine failure of ours,
  // an info line for one that was the request's fault (an image that does not decode).
  void LogFinish(const engine::FinishInfo& info) {
    const bool error = info.reason == engine::FinishReason::kError;
    const absl::StatusCode code = info.status.code();
    const bool requests_fault = code == absl::StatusCode::kInvalidArgument ||
                                code == absl::StatusCode::kFailedPrecondition ||
                                code == absl::StatusCode::kOutOfRange;
    const LogLevel level = !error           ? LogLevel::kDebug
                           : requests_fault ? LogLevel::kInfo
                                            : LogLevel::kError;
    if (!LogEnabled(level)) return;
    static constexpr const char* kReasons[] = {"stop_token", "length", "cancelled", "error",
                                               "grammar_done"};
    LogFields f = {{"request_id", request_id_},
                   {"reason", kReasons[static_cast<int>(info.reason)]},
                   {"prompt_tokens", info.prompt_tokens},
                   {"generated_tokens", info.generated_tokens},
                   {"cached_tokens", info.cached_tokens},
                   {"drafted_tokens", info.drafted_tokens},
                   {"accepted_tokens", info.accepted_tokens},
                   {"queue_ms", absl::ToDoubleMilliseconds(info.queue_time)},
                   {"time_to_first_token_ms", absl::ToDoubleMilliseconds(info.time_to_first_token)},
                   {"decode_ms", absl::ToDoubleMilliseconds(info.decode_time)}};
    if (error) {
      f["error"] = std::string(info.status.message());
      f["code"] = absl::StatusCodeToString(code);
      Log(level, kComponent, "generation failed", f);
    } else {
      LogDebug(kComponent, "generation finished", f);
    }
  }

  // A request cancelled while its videos were being encoded: how far the encoding got, so that
  // an operator (and the e2e test) can see that it stopped at once.
  void LogVideoCancelled(const engine::FinishInfo& info) {
    if (info.reason != engine::FinishReason::kCancelled) return;
    int encoded, total;
    {
      absl::MutexLock lock(&mu_);
      encoded = progress_encoded_;
      total = progress_total_;
    }
    if (total == 0 || encoded >= total) return;
    LogInfo(kComponent,
            absl::StrCat("request cancelled during its video encode: ", encoded, " of ", total,
                         " frames encoded"),
            {{"event", "video_encode_cancelled"},
             {"request_id", request_id_},
             {"frames_encoded", encoded},
             {"frames_total", total}});
  }

  absl::Mutex mu_;
  GenerateReactor* reactor_ ABSL_GUARDED_BY(mu_);
  const std::string request_id_;
  int progress_encoded_ ABSL_GUARDED_BY(mu_) = 0;
  int progress_total_ ABSL_GUARDED_BY(mu_) = 0;
  bool progress_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<wpb::Token> pending_ ABSL_GUARDED_BY(mu_);
  wpb::Finish finish_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool final_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  // The message being written; only touched while no write is in flight.
  wpb::GenerateResponse out_;
};

void GenerateReactor::OnWriteDone(bool ok) { stream_->WriteDone(ok); }

void GenerateReactor::OnDone() {
  stream_->Detach();
  delete this;
}

// qwen.worker.v1.Worker over one engine: each Generate call becomes an engine request whose
// tokens stream back through a Stream. Thread-safe (the engine is; request ids are atomic).
class WorkerService final : public wpb::Worker::CallbackService {
 public:
  WorkerService(engine::Engine* engine, bool allow_forced,
                std::shared_ptr<const vision::VisionEncoder> vision,
                std::shared_ptr<const gguf::GgufFile> file, size_t vision_cache_bytes,
                absl::Duration video_pair_delay)
      : engine_(engine),
        allow_forced_(allow_forced),
        vision_(std::move(vision)),
        file_(std::move(file)),
        embeddings_(std::make_shared<multimodal::EmbeddingCache>(vision_cache_bytes)),
        video_pair_delay_(video_pair_delay) {}

  // An encode function that looks in the embedding cache first and fills it after.
  engine::PromptImage::EncodeFn Cached(std::string key, engine::PromptImage::EncodeFn encode) {
    return [cache = embeddings_, key = std::move(key), encode = std::move(encode)](
               ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
      if (!key.empty()) {
        if (std::shared_ptr<const std::vector<float>> hit = cache->Find(key)) {
          if (LogEnabled(LogLevel::kDebug)) {
            LogDebug(kComponent, "vision embeddings from the cache",
                     {{"event", "vision_cache_hit"}, {"key", key}});
          }
          return *hit;
        }
      }
      ASSIGN_OR_RETURN(std::vector<float> rows, encode(ctx));
      if (LogEnabled(LogLevel::kDebug)) {
        LogDebug(kComponent, "vision embeddings encoded",
                 {{"event", "vision_encoded"}, {"key", key}});
      }
      if (!key.empty()) cache->Insert(key, rows);
      return rows;
    };
  }

  // The prompt images of one video: a frame pair each, encoded in order by one PairEncoder as
  // the engine reaches them. `frames_before` counts the frames of the request's earlier videos
  // (for progress); errors name the video's field.
  absl::StatusOr<std::vector<engine::PromptImage>> VideoPairs(const wpb::Video& v,
                                                              std::shared_ptr<Stream> stream,
                                                              int frames_before, int frames_total) {
    video::VideoOptions options;
    options.fps = v.fps();
    options.min_frames = v.min_frames();
    options.max_frames = v.max_frames();
    options.min_pixels = v.min_pixels();
    options.max_pixels = v.max_pixels();
    video::VideoLimits limits;
    limits.max_bytes = static_cast<size_t>(std::max<int64_t>(v.max_bytes(), 0));
    limits.max_duration_seconds = v.max_duration_seconds();
    limits.max_frame_pixels = v.max_frame_pixels();
    limits.max_frames = v.max_source_frames();
    std::unique_ptr<video::FrameSource> source;
    video::VideoPlan plan;
    if (v.frames().empty()) {
      // Probed again (demuxing only: cheap) rather than trusted: the plan must come out the same.
      auto bytes = std::make_shared<const std::string>(v.data());
      ASSIGN_OR_RETURN(
          video::VideoInfo info,
          video::ProbeVideo(
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
              limits, v.field()));
      ASSIGN_OR_RETURN(plan, video::PlanVideo(info, vision_->config(), options));
      source = video::FileFrames(std::move(bytes), std::move(info), limits, v.field());
    } else {
      const std::vector<double> times(v.frame_times().begin(), v.frame_times().end());
      ASSIGN_OR_RETURN(plan,
                       video::PlanFrames(times, v.width(), v.height(), vision_->config(), options));
      vision::DecodeLimits frame_limits;
      if (v.frame_max_bytes() > 0)
        frame_limits.max_bytes = static_cast<size_t>(v.frame_max_bytes());
      if (v.frame_max_pixels() > 0) frame_limits.max_pixels = v.frame_max_pixels();
      source = video::ImageFrames(std::vector<std::string>(v.frames().begin(), v.frames().end()),
                                  v.width(), v.height(), frame_limits, v.field());
    }
    if (plan.n_pairs() != v.pair_offsets_size() || plan.grid.rows() != v.rows() ||
        plan.grid.cols() != v.cols()) {
      return absl::InternalError(
          absl::StrCat(v.field(), ": the worker's plan (", plan.n_pairs(), " frame pairs of ",
                       plan.grid.rows(), "x", plan.grid.cols(), ") differs from the front end's (",
                       v.pair_offsets_size(), " of ", v.rows(), "x", v.cols(), ")"));
    }
    auto pairs = std::make_shared<video::PairEncoder>(vision_, std::move(source), plan);
    std::vector<engine::PromptImage> out;
    for (int k = 0; k < v.pair_offsets_size(); ++k) {
      engine::PromptImage pi;
      pi.offset = v.pair_offsets(k);
      pi.rows = v.rows();
      pi.cols = v.cols();
      pi.key = absl::StrCat(v.key(), "#", k);
      // Encoded when the prompt reaches the video, on the engine's compute or encoder thread
      // (see the images below); pairs come in order, so the decoder only moves forward.
      pi.encode = Cached(pi.key, [pairs, k, delay = video_pair_delay_](ops::ComputeContext& ctx) {
        if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
        return pairs->EncodePair(k, ctx);
      });
      // Progress counts the pair once its rows are there, from the cache or the tower.
      pi.encode = [encode = std::move(pi.encode), stream, done = frames_before + 2 * (k + 1),
                   frames_total](ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
        absl::StatusOr<std::vector<float>> rows = encode(ctx);
        if (rows.ok()) stream->OnProgress(done, frames_total);
        return rows;
      };
      out.push_back(std::move(pi));
    }
    return out;
  }

  // The compiled grammar of a request's constraint, from the cache. The vocabulary is read from
  // the model file on first use (workers that never see a constraint never pay for it).
  absl::StatusOr<std::shared_ptr<grammar::CompiledGrammar>> Grammar(const wpb::Constraint& c) {
    grammar::GrammarCache* cache;
    {
      absl::MutexLock lock(&grammar_mu_);
      if (grammars_ == nullptr) {
        ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                         tokenizer::Tokenizer::FromGguf(*file_));
        grammars_ = std::make_unique<grammar::GrammarCache>(grammar::TokenTableFromTokenizer(
            *tok, static_cast<int32_t>(engine_->model().config().n_vocab)));
      }
      cache = grammars_.get();
    }
    grammar::ConstraintSpec spec;
    switch (c.kind()) {
      case wpb::Constraint::KIND_JSON_SCHEMA:
        spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
        break;
      case wpb::Constraint::KIND_REGEX:
        spec.kind = grammar::ConstraintSpec::Kind::kRegex;
        break;
      case wpb::Constraint::KIND_CHOICES:
        spec.kind = grammar::ConstraintSpec::Kind::kChoices;
        break;
      case wpb::Constraint::KIND_GRAMMAR:
        spec.kind = grammar::ConstraintSpec::Kind::kGrammar;
        break;
      case wpb::Constraint::KIND_TOOL_CALLS:
        spec.kind = grammar::ConstraintSpec::Kind::kToolCalls;
        break;
      default:
        return absl::InvalidArgumentError("constraint.kind: unknown");
    }
    spec.text = c.text();
    spec.choices.assign(c.choices().begin(), c.choices().end());
    spec.tools_json = c.tools_json();
    spec.tool_calls_required = c.tool_calls_required();
    spec.after_reasoning = c.after_reasoning();
    ASSIGN_OR_RETURN(std::shared_ptr<grammar::CompiledGrammar> g, cache->Get(spec));
    // The first mask is computed here, on the gRPC thread, rather than on the engine's.
    grammar::Matcher warm(g);
    std::vector<uint64_t> mask(g->mask_words());
    warm.FillNextTokenMask(mask.data());
    return g;
  }

  grpc::ServerWriteReactor<wpb::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const wpb::GenerateRequest* req) override {
    const uint64_t id = next_id_.fetch_add(1);
    auto* reactor = new GenerateReactor(engine_, id);
    auto stream = std::make_shared<Stream>(reactor, req->request_id());
    reactor->Begin(stream);
    if (LogEnabled(LogLevel::kDebug)) {
      LogDebug(kComponent, "generation started",
               {{"request_id", req->request_id()},
                {"prompt_tokens", req->prompt_size()},
                {"max_tokens", req->max_tokens()}});
    }

    engine::GenerationRequest r;
    r.id = id;
    r.prompt.assign(req->prompt().begin(), req->prompt().end());
    const wpb::SamplingParams& s = req->sampling();
    r.sampling.temperature = s.temperature();
    r.sampling.top_k = s.top_k();
    r.sampling.top_p = s.top_p();
    r.sampling.min_p = s.min_p();
    r.sampling.repetition_penalty = s.repetition_penalty();
    r.sampling.presence_penalty = s.presence_penalty();
    r.sampling.frequency_penalty = s.frequency_penalty();
    r.sampling.seed = s.seed();
    for (const auto& [token, bias] : s.logit_bias())
      r.sampling.logit_bias.emplace_back(token, bias);
    // Map order is unspecified; the sampler adds biases in list order, so fix it.
    std::sort(r.sampling.logit_bias.begin(), r.sampling.logit_bias.end());
    r.max_tokens = req->max_tokens();
    r.stop_tokens.assign(req->stop_token_ids().begin(), req->stop_token_ids().end());
    r.logprobs = req->logprobs();
    r.use_prefix_cache = !req->no_prefix_cache();
    r.snapshot_before_last = req->snapshot_before_last();
    if (req->has_reasoning_budget()) {
      r.reasoning_budget = req->reasoning_budget();
      r.reasoning_end = req->reasoning_end();
      r.reasoning_close.assign(req->reasoning_close().begin(), req->reasoning_close().end());
    }
    {
      absl::StatusOr<engine::SpeculativeMode> mode =
          engine::ParseSpeculativeMode(req->speculative(), "speculative.mode");
      if (!mode.ok()) {
        stream->Fail(mode.status());
        return reactor;
      }
      r.speculative = *mode;
      r.max_draft = req->max_draft();
    }
    if (!req->forced_tokens().empty()) {
      if (!allow_forced_) {
        stream->Fail(absl::FailedPreconditionError(
            "forced_tokens: this worker was not started with --testing_allow_forced_tokens"));
        return reactor;
      }
      r.forced_tokens.assign(req->forced_tokens().begin(), req->forced_tokens().end());
    }
    if (!req->images().empty() || !req->videos().empty()) {
      if (vision_ == nullptr) {
        stream->Fail(absl::FailedPreconditionError(
            absl::StrCat(req->images().empty() ? req->videos(0).field() : req->images(0).field(),
                         ": this worker runs without --mmproj")));
        return reactor;
      }
      for (const wpb::Image& im : req->images()) {
        engine::PromptImage pi;
        pi.offset = im.token_offset();
        pi.rows = im.rows();
        pi.cols = im.cols();
        pi.key = im.key();
        // Decoded and encoded when the request's prompt is about to be fed: on the engine's
        // compute threads, or on its encoder thread while other sequences run (the engine may
        // call this from either; the encoder is safe with one context per caller).
        vision::DecodeLimits limits;
        if (im.max_bytes() > 0) limits.max_bytes = static_cast<size_t>(im.max_bytes());
        if (im.max_decoded_pixels() > 0) limits.max_pixels = im.max_decoded_pixels();
        pi.encode = Cached(
            im.key(),
            [vision = vision_, data = im.data(), field = im.field(), limits,
             options = vision::PreprocessOptions{im.min_pixels(), im.max_pixels()},
             rows = im.rows(),
             cols = im.cols()](ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
              // A body that is corrupt after a good header is found here (the front end read only
              // the header): INVALID_ARGUMENT naming the field, which reaches the client as such.
              ASSIGN_OR_RETURN(vision::RgbImage rgb,
                               vision::DecodeImage(
                                   absl::MakeConstSpan(
                                       reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                                   limits, field));
              ASSIGN_OR_RETURN(vision::ImageEmbedding e, vision->Encode(rgb, options, ctx));
              if (e.grid.rows() != rows || e.grid.cols() != cols) {
                return absl::InternalError(
                    absl::StrCat(field, ": the worker's grid ", e.grid.rows(), "x", e.grid.cols(),
                                 " differs from the front end's ", rows, "x", cols));
              }
              return std::move(e.data);
            });
        r.images.push_back(std::move(pi));
      }
      int frames_total = 0;
      for (const wpb::Video& v : req->videos()) frames_total += 2 * v.pair_offsets_size();
      stream->ExpectVideoFrames(frames_total);
      int frames_before = 0;
      for (const wpb::Video& v : req->videos()) {
        absl::StatusOr<std::vector<engine::PromptImage>> pairs =
            VideoPairs(v, stream, frames_before, frames_total);
        if (!pairs.ok()) {
          stream->Fail(pairs.status());
          return reactor;
        }
        frames_before += 2 * v.pair_offsets_size();
        for (engine::PromptImage& p : *pairs) r.images.push_back(std::move(p));
      }
      // The engine takes images and frame pairs in prompt order.
      std::stable_sort(r.images.begin(), r.images.end(),
                       [](const engine::PromptImage& a, const engine::PromptImage& b) {
                         return a.offset < b.offset;
                       });
    }
    if (req->has_constraint()) {
      absl::StatusOr<std::shared_ptr<grammar::CompiledGrammar>> g = Grammar(req->constraint());
      if (!g.ok()) {
        stream->Fail(
            absl::InvalidArgumentError(absl::StrCat("response_format: ", g.status().message())));
        return reactor;
      }
      r.grammar = *std::move(g);
    }
    absl::Status st = engine_->Submit(std::move(r), stream);
    if (!st.ok()) stream->Fail(st);
    return reactor;
  }

  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* ctx, const wpb::HealthRequest* req,
                                   wpb::HealthResponse* resp) override {
    const engine::EngineStats s = engine_->Stats();
    resp->set_pid(getpid());
    resp->set_slots(s.slots);
    resp->set_active(s.active);
    resp->set_queued(s.queued);
    resp->set_context_length(engine_->options().n_ctx);
    resp->set_tokens_generated(s.tokens_generated);
    resp->set_tokens_prefilled(s.tokens_prefilled);
    resp->set_steps(s.steps);
    resp->set_layers_done(s.layers_done);
    resp->set_state_bytes(static_cast<int64_t>(s.state_bytes));
    resp->set_kv_bytes_resident(static_cast<int64_t>(s.kv_bytes_resident));
    resp->set_kv_bytes_reserved(static_cast<int64_t>(s.kv_bytes_reserved));
    resp->set_prefix_cache_budget_bytes(static_cast<int64_t>(s.prefix_cache.budget_bytes));
    resp->set_prefix_cache_used_bytes(static_cast<int64_t>(s.prefix_cache.used_bytes));
    resp->set_prefix_cache_entries(s.prefix_cache.entries);
    resp->set_prefix_lookups(s.prefix_lookups);
    resp->set_prefix_hits(s.prefix_hits);
    resp->set_prefix_cached_tokens(s.prefix_cached_tokens);
    resp->set_prefix_cache_evictions(s.prefix_cache.evictions);
    resp->set_tokens_drafted(s.tokens_drafted);
    resp->set_tokens_accepted(s.tokens_accepted);
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  engine::Engine* engine_;
  const bool allow_forced_;
  std::shared_ptr<const vision::VisionEncoder> vision_;  // null without --mmproj
  std::shared_ptr<const gguf::GgufFile> file_;
  const std::shared_ptr<multimodal::EmbeddingCache> embeddings_;
  const absl::Duration video_pair_delay_;
  absl::Mutex grammar_mu_;
  std::unique_ptr<grammar::GrammarCache> grammars_ ABSL_GUARDED_BY(grammar_mu_);
  std::atomic<uint64_t> next_id_{1};
};

// One line on the packed copy of the weights: where it is and whether this worker wrote it, or
// why there is none (a warning: batched decode and prefill are slower without it).
void LogPacking(absl::string_view component, const model::PackingReport& p) {
  if (!p.requested) return;
  if (!p.status.ok()) {
    LogWarning(component,
               absl::StrCat("no packed copy of the weights (computing from the file's layout, "
                            "slower): ",
                            p.status.message()),
               {{"event", "packed_weights_unavailable"}});
    return;
  }
  if (p.packed_tensors == 0) {
    LogInfo(component, "weights: no packed layout for this file's types; computing from the file",
            {{"event", "packed_weights"}, {"bytes", 0}});
    return;
  }
  LogInfo(
      component,
      absl::StrCat(p.info.written ? "wrote" : "mapped", " the packed copy of ", p.packed_tensors,
                   " weight matrices: ", p.info.path, " (", p.packed_bytes >> 20, " MiB, ",
                   absl::FormatDuration(absl::Trunc(p.info.elapsed, absl::Milliseconds(1))), ")"),
      {{"event", "packed_weights"},
       {"path", p.info.path},
       {"bytes", p.packed_bytes},
       {"written", p.info.written}});
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options) {
  SetLogProcessName(absl::StrCat("qwen-worker-", options.index));
  SetLogContextField("worker", options.index);
  const std::string component = kComponent;
  // Die with the front end. The request is cancelled if the parent is already gone, so check.
  if (options.parent_pid > 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
      return absl::InternalError("prctl(PR_SET_PDEATHSIG) failed");
    }
    if (getppid() != options.parent_pid) {
      return absl::FailedPreconditionError(
          absl::StrCat("the front end (pid ", options.parent_pid, ") is gone"));
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (options.allow_fault_injection) {
    sigaddset(&signals, SIGUSR1);
    sigaddset(&signals, SIGUSR2);
  }
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed log pipe must not kill the worker
  std::set_new_handler(&OnOutOfMemory);

  if (options.socket_path.empty()) return absl::InvalidArgumentError("--socket is required");
  const absl::Time t0 = absl::Now();
  auto file = gguf::GgufFile::Open(options.model_path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat(options.model_path, ": ", file.status().message()));
  }
  std::shared_ptr<const gguf::GgufFile> shared_file = std::move(*file);
  std::shared_ptr<model::Model> model;
  {
    model::LoadOptions lo;
    lo.packed_dir = options.packed_dir;
    // Only for writing the packed copy, if this worker is the first; the engine has its own.
    ThreadPool load_pool(options.threads > 0 ? options.threads : AvailableCores());
    lo.pool = &load_pool;
    ASSIGN_OR_RETURN(std::unique_ptr<model::Model> loaded, model::Model::Load(shared_file, lo));
    model = std::move(loaded);
  }
  LogPacking(component, model->packing());
  engine::EngineOptions eo;
  eo.n_slots = options.slots;
  eo.n_ctx = options.ctx_size;
  eo.n_threads = options.threads;
  eo.kv_type = options.kv_type;
  eo.prefill_chunk = options.prefill_chunk;
  eo.max_draft = static_cast<int>(options.max_draft);
  eo.mtp_draft_vocab = options.mtp_draft_vocab;
  int64_t prefix_cache_mb = options.prefix_cache_mb;
  if (prefix_cache_mb == kAutoPrefixCacheMb) {
    // A worker started by hand; `qwen serve` passes the number it resolved.
    prefix_cache_mb = AutoPrefixCacheBudget(model->config(), options.ctx_size, options.kv_type,
                                            options.slots, 1, AvailableMemoryBytes())
                          .mb;
  }
  eo.prefix_cache_bytes = static_cast<size_t>(prefix_cache_mb) << 20;
  eo.snapshot_interval = options.snapshot_interval;
  std::shared_ptr<const vision::VisionEncoder> vision;
  if (!options.mmproj_path.empty()) {
    ASSIGN_OR_RETURN(vision, multimodal::LoadMmproj(options.mmproj_path, model->config()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine, engine::Engine::Create(model, eo));

  WorkerService service(engine.get(), options.allow_forced_tokens, vision, shared_file,
                        static_cast<size_t>(std::max<int64_t>(options.vision_cache_mb, 0)) << 20,
                        options.testing_video_pair_delay);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", options.socket_path),
                           grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on unix:", options.socket_path));
  }
  // What the slots need at most: their recurrent states now, and the KV cache of a full context
  // (address space reserved here, committed as tokens arrive), so that an operator sizing a long
  // context sees the cost before the first long prompt does.
  const engine::EngineStats stats = engine->Stats();
  const auto mib = [](size_t b) { return static_cast<int64_t>(b >> 20); };
  LogInfo(
      component,
      absl::StrCat("serving ", options.model_path, " on unix:", options.socket_path, " with ",
                   options.slots, " slots of ", options.ctx_size, " tokens, ",
                   engine->options().n_threads, " threads (ready in ",
                   absl::FormatDuration(absl::Trunc(absl::Now() - t0, absl::Milliseconds(1))),
                   "); memory: sequence states ", mib(stats.state_bytes), " MiB + KV cache up to ",
                   mib(stats.kv_bytes_reserved), " MiB (", model::KvTypeName(options.kv_type),
                   ") + weights ", mib(shared_file->file_size()),
                   " MiB mapped shared + prefix cache up to ", prefix_cache_mb, " MiB"),
      {{"event", "worker_ready"},
       {"state_bytes", static_cast<int64_t>(stats.state_bytes)},
       {"kv_bytes_reserved", static_cast<int64_t>(stats.kv_bytes_reserved)},
       {"weights_bytes", static_cast<int64_t>(shared_file->file_size())}});

  // Wait for SIGTERM/SIGINT. The timeout lets a worker notice a vanished parent even if the
  // death signal were lost (it is not, on Linux, but a check costs nothing).
  while (true) {
    timespec timeout{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT) {
      LogInfo(component, absl::StrCat("signal ", sig, ": stopping"));
      break;
    }
    if (sig == SIGUSR1) {
      LogWarning(component, "testing: SIGUSR1: the engine thread wedges at its next token");
      wedge_engine.store(true);
    }
    if (sig == SIGUSR2) {
      LogWarning(component,
                 "testing: SIGUSR2: the engine thread exhausts memory at its next token");
      exhaust_memory.store(true);
    }
    if (options.parent_pid > 0 && getppid() != options.parent_pid) {
      LogWarning(component, "the front end is gone: stopping");
      break;
    }
  }
  // Calls still running are cancelled (their reactors cancel the engine's sequences); then the
  // engine stops. The front end sends SIGTERM after it has cancelled its streams, so nothing is
  // worth a wait (and gRPC would wait out the whole deadline for the front end's idle channel):
  // the front end kills a worker that is not gone within kWorkerStop (front_end.h).
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(100)));
  server->Wait();
  engine.reset();
  return absl::OkStatus();
}

}  // namespace qwen::service

#include "inference/engine/engine.h"

#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::engine {

constexpr int32_t kMaxLogprobs = 20;

struct Engine::Sequence {
  GenerationRequest req;
  std::shared_ptr<RequestSink> sink;
  std::unique_ptr<sampling::Sampler> sampler;
  std::unique_ptr<grammar::Matcher> matcher;  // with a grammar
  std::vector<uint64_t> mask;                 // allowed tokens, bit per id
  absl::Duration constraint_time;
  absl::Time submitted;
  absl::Time admitted;
  absl::Time first_token;
  int slot = -1;
  int64_t prefilled = 0;  // prompt tokens in the state, cached ones included
  int32_t cached = 0;
  int32_t computed = 0;  // prompt tokens fed to the model
  int32_t generated = 0;
  int32_t last_token = -1;
  // Reasoning budget (GenerationRequest::reasoning_budget): tokens generated inside the block,
  // and the next closing token to emit (-1: not closing).
  bool in_reasoning = false;
  int32_t reasoning_tokens = 0;
  int32_t closing = -1;
  std::atomic<bool> cancelled{false};
  // With images: M-RoPE positions [n_prompt, 4] and the embedding row of every prompt token
  // (null for text), set once the images are encoded.
  std::vector<int32_t> positions;
  std::vector<const float*> rows;
  bool images_ready = false;
  std::shared_ptr<EncodeJob> encoding;  // images under way on the encoder thread

  // Speculative decoding.
  int max_draft = 0;            // longest draft per step; 0: never drafts
  bool mtp_catch_up = false;    // its MTP head follows the trunk (Segment::mtp)
  std::vector<int32_t> fed;     // this step's decode segment: the last token, then the drafts
  bool drafts_counted = false;  // they came from a drafter (not from forced tokens)
  int32_t drafted = 0;
  int32_t accepted = 0;
  // The adaptive switch: the accepted and drafted tokens of recent steps (each step's counts
  // weigh 0.9 times less per later step), from a prior of 1 in 4. Counting tokens rather than
  // averaging each step's share keeps a good drafter's unlucky steps (a first draft refused
  // wastes all k) from pausing it. A sequence starts with a probe, as after a pause: a
  // drafter that is never right costs one draft token before it stops.
  double recent_accepted = 0.5;
  double recent_drafted = 2.0;
  int paused = 0;       // steps left without drafting
  int backoff = 8;      // the next pause's length
  bool probing = true;  // the next draft is one token, a cheap probe (at the start, after a pause)

  bool decoding() const { return prefilled == static_cast<int64_t>(req.prompt.size()); }
  // Its prompt cannot be fed yet: its images are not encoded.
  bool waits_for_images() const { return !req.images.empty() && !images_ready; }
};

struct Engine::ImageToEncode {
  size_t index;    // in the request's images
  int64_t tokens;  // rows * cols
  PromptImage::EncodeFn encode;
};

// Images of one sequence handed to the encoder thread. It holds copies of what encoding needs,
// so a sequence that ends meanwhile (cancelled) leaves nothing dangling.
struct Engine::EncodeJob {
  std::vector<ImageToEncode> images;
  // Written by the encoder thread, then `done`; all under the engine's mu_.
  absl::StatusOr<std::vector<std::vector<float>>> result;
  bool done = false;
  // Its sequence has ended (or the engine is going away): not worth starting, and an encode
  // under way gives up at its next layer (the encoder context's cancel flag points here).
  std::atomic<bool> cancel{false};
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<model::Model> model,
                                                       EngineOptions options) {
  if (options.n_slots < 1) return absl::InvalidArgumentError("n_slots must be at least 1");
  if (options.n_ctx < 2) return absl::InvalidArgumentError("n_ctx must be at least 2");
  if (options.prefill_chunk < 1)
    return absl::InvalidArgumentError("prefill_chunk must be positive");
  if (options.snapshot_interval < 0)
    return absl::InvalidArgumentError("snapshot_interval must not be negative");
  if (options.max_draft < 0 || options.max_draft > kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_draft must be between 0 and ", kMaxDraftTokens));
  }
  if (options.speculative_step_tokens < 1) {
    return absl::InvalidArgumentError("speculative_step_tokens must be positive");
  }
  if (options.n_threads <= 0) options.n_threads = AvailableCores();
  std::unique_ptr<Engine> e(new Engine(std::move(model), options));
  if (options.prefix_cache_bytes > 0) {
    e->cache_ = std::make_unique<PrefixCache>(
        options.prefix_cache_bytes,
        model::SequenceState::SizeFor(e->model_->config(), options.n_ctx, options.kv_type));
  }
  e->slots_.resize(options.n_slots);
  for (Slot& s : e->slots_) {
    ASSIGN_OR_RETURN(s.state, e->model_->NewState(options.n_ctx, options.kv_type));
  }
  {
    absl::MutexLock lock(&e->mu_);
    e->stats_.slots = options.n_slots;
    const model::StateSize size =
        model::SequenceState::SizeFor(e->model_->config(), options.n_ctx, options.kv_type);
    e->stats_.state_bytes = (size.recurrent_bytes + size.conv_bytes) * options.n_slots;
    e->stats_.kv_bytes_reserved = size.kv_bytes_reserved * options.n_slots;
    e->stats_.prefix_cache_enabled = e->cache_ != nullptr;
    if (e->cache_ != nullptr) e->stats_.prefix_cache = e->cache_->stats();
  }
  e->thread_ = std::thread([engine = e.get()] { engine->Loop(); });
  return e;
}

Engine::Engine(std::shared_ptr<model::Model> model, EngineOptions options)
    : model_(std::move(model)), options_(options) {
  pool_ = std::make_unique<ThreadPool>(options_.n_threads);
  ctx_ = std::make_unique<ops::ComputeContext>(pool_.get(), options_.math);
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    // An image being encoded, on the encoder thread or inline for a running sequence, stops at
    // its next layer instead of holding the shutdown for seconds.
    if (encoding_ != nullptr) encoding_->cancel.store(true);
    for (auto& s : owned_running_) s->cancelled.store(true);
  }
  if (thread_.joinable()) thread_.join();
  if (encoder_thread_.joinable()) encoder_thread_.join();
  // Whatever was left ends as cancelled.
  std::vector<std::unique_ptr<Sequence>> left;
  {
    absl::MutexLock lock(&mu_);
    for (auto& s : queue_) left.push_back(std::move(s));
    for (auto& s : owned_running_) left.push_back(std::move(s));
    queue_.clear();
    owned_running_.clear();
    by_id_.clear();
  }
  for (auto& s : left) {
    FinishInfo info;
    info.reason = FinishReason::kCancelled;
    info.prompt_tokens = static_cast<int32_t>(s->req.prompt.size());
    info.generated_tokens = s->generated;
    s->sink->OnFinish(info);
  }
}

absl::Status Engine::Submit(GenerationRequest req, std::shared_ptr<RequestSink> sink) {
  const int64_t V = model_->config().n_vocab;
  if (req.prompt.empty()) return absl::InvalidArgumentError("prompt: is empty");
  for (int32_t t : req.prompt) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: token id ", t, " is outside the vocabulary [0, ", V, ")"));
    }
  }
  if (req.max_tokens < 1) return absl::InvalidArgumentError("max_tokens: must be at least 1");
  // Every prompt row must be computed to be reported.
  if (req.all_logits) req.use_prefix_cache = false;
  if (static_cast<int64_t>(req.prompt.size()) + req.max_tokens > options_.n_ctx) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: the prompt (", req.prompt.size(), " tokens) plus max_tokens (",
                     req.max_tokens, ") exceeds the context size of ", options_.n_ctx, " tokens"));
  }
  for (int32_t t : req.stop_tokens) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids: token id ", t, " is outside the vocabulary"));
    }
  }
  for (int32_t t : req.forced_tokens) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("forced_tokens: token id ", t, " is outside the vocabulary"));
    }
  }
  for (int32_t t : req.reasoning_close) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("reasoning_close: token id ", t, " is outside the vocabulary"));
    }
  }
  if (req.reasoning_budget >= 0 && req.reasoning_close.empty()) {
    return absl::InvalidArgumentError("reasoning_budget: needs reasoning_close tokens");
  }
  if (req.logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: at most ", kMaxLogprobs, " alternatives"));
  }
  RETURN_IF_ERROR(sampling::Validate(req.sampling, V));
  if (req.max_draft < 0 || req.max_draft > kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_draft: must be between 0 and ", kMaxDraftTokens));
  }
  if (req.speculative == SpeculativeMode::kMtp && !model_->has_mtp()) {
    return absl::InvalidArgumentError(
        "speculative: the model file has no MTP head; use \"ngram\" or \"auto\"");
  }
  std::vector<int32_t> positions;
  if (!req.images.empty()) {
    // Cached state is shared only between requests with the same images at the same places.
    uint64_t salt = req.cache_salt ^ 0xcbf29ce484222325ull;
    auto mix = [&salt](absl::string_view bytes) {
      for (unsigned char c : bytes) salt = (salt ^ c) * 0x100000001b3ull;  // FNV-1a
    };
    for (const PromptImage& im : req.images) {
      if (im.key.empty()) req.use_prefix_cache = false;
      mix(absl::StrCat(im.offset, ":", im.rows, "x", im.cols, ":", im.key, ";"));
    }
    req.cache_salt = salt;
    std::vector<model::ImageSpan> spans;
    const int64_t E = model_->config().n_embd;
    for (size_t k = 0; k < req.images.size(); ++k) {
      const PromptImage& im = req.images[k];
      spans.push_back({im.offset, im.rows, im.cols});
      const size_t want = static_cast<size_t>(int64_t{im.rows} * im.cols * E);
      if (im.embedding.empty() ? !im.encode : im.embedding.size() != want) {
        return absl::InvalidArgumentError(
            absl::StrCat("images[", k, "]: needs ", want, " embedding values or an encoder"));
      }
    }
    absl::StatusOr<std::vector<int32_t>> pos =
        model::MropePositions(static_cast<int64_t>(req.prompt.size()), spans, /*start=*/0, nullptr);
    if (!pos.ok())
      return absl::InvalidArgumentError(absl::StrCat("images: ", pos.status().message()));
    positions = std::move(*pos);
  }
  auto seq = std::make_unique<Sequence>();
  seq->positions = std::move(positions);
  if (req.grammar != nullptr) {
    if (req.grammar->vocab_size() != V) {
      return absl::InvalidArgumentError(absl::StrCat("grammar: compiled for a vocabulary of ",
                                                     req.grammar->vocab_size(),
                                                     " tokens; the model has ", V));
    }
    seq->matcher = std::make_unique<grammar::Matcher>(req.grammar);
    seq->mask.resize((V + 63) / 64);
  }
  seq->sampler = std::make_unique<sampling::Sampler>(req.sampling, V, req.prompt);
  if (req.speculative != SpeculativeMode::kOff) {
    seq->max_draft =
        std::min(req.max_draft > 0 ? req.max_draft : options_.max_draft, options_.max_draft);
  }
  seq->mtp_catch_up =
      seq->max_draft > 0 && model_->has_mtp() && req.speculative != SpeculativeMode::kNgram;
  seq->req = std::move(req);
  seq->sink = std::move(sink);
  seq->submitted = absl::Now();
  if (seq->req.reasoning_budget >= 0) {
    seq->in_reasoning = true;
    if (seq->req.reasoning_budget == 0) seq->closing = 0;
  }
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  if (by_id_.contains(seq->req.id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request id ", seq->req.id, " is already running"));
  }
  by_id_[seq->req.id] = seq.get();
  queue_.push_back(std::move(seq));
  stats_.queued = static_cast<int>(queue_.size());
  return absl::OkStatus();
}

void Engine::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it != by_id_.end()) it->second->cancelled.store(true);
}

EngineStats Engine::Stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats s = stats_;
  s.layers_done = ctx_->layers_done();
  if (const ops::ComputeContext* e = encoder_progress_.load(std::memory_order_acquire)) {
    s.layers_done += e->layers_done();
  }
  return s;
}

bool Engine::Caching(const Sequence& seq) const {
  return cache_ != nullptr && seq.req.use_prefix_cache;
}

void Engine::Snapshot(const Sequence& seq, absl::Span<const int32_t> tokens) {
  if (!Caching(seq)) return;
  cache_->Insert(seq.req.cache_salt, tokens, *slots_[seq.slot].state);
}

void Engine::Admit() {
  while (!queue_.empty()) {
    // Best slot: a free one whose history the prompt extends (its state resumes there);
    // otherwise the free one holding the least.
    const GenerationRequest& r = queue_.front()->req;
    const std::vector<int32_t>& p = r.prompt;
    const std::vector<PromptImage>& images = r.images;
    // The images of the first `n` history tokens are the request's (same places, same keys).
    auto same_images = [&images](const Slot& s, size_t n) {
      size_t k = 0;
      for (const Slot::HeldImage& h : s.images) {
        if (h.offset >= static_cast<int64_t>(n)) break;
        if (k >= images.size()) return false;
        const PromptImage& im = images[k++];
        if (h.key.empty() || h.key != im.key || h.offset != im.offset ||
            h.n != int64_t{im.rows} * im.cols) {
          return false;
        }
      }
      return k == images.size() || images[k].offset >= static_cast<int64_t>(n);
    };
    int best = -1, fallback = -1;
    size_t best_reuse = 0;
    for (size_t k = 0; k < slots_.size(); ++k) {
      const Slot& s = slots_[k];
      if (s.seq != nullptr) continue;
      const std::vector<int32_t>& h = s.history;
      if (options_.reuse_prefix && r.use_prefix_cache && s.salt == r.cache_salt && !h.empty() &&
          h.size() < p.size() && h.size() > best_reuse &&
          std::equal(h.begin(), h.end(), p.begin()) && same_images(s, h.size())) {
        best = static_cast<int>(k);
        best_reuse = h.size();
      }
      if (fallback < 0 || h.size() < slots_[fallback].history.size()) {
        fallback = static_cast<int>(k);
      }
    }
    if (fallback < 0) break;  // no free slot
    std::unique_ptr<Sequence> seq = std::move(queue_.front());
    queue_.pop_front();
    // The prefix cache wins when it holds more of the prompt than the best slot. At least one
    // prompt token is always computed: its logits give the first output token.
    PrefixCache::Match match;
    if (Caching(*seq)) {
      match = cache_->Lookup(r.cache_salt, p, static_cast<int64_t>(p.size()) - 1);
      if (match.length <= static_cast<int64_t>(best_reuse)) match = {};
    }
    const int chosen = match.length > 0 ? fallback : best >= 0 ? best : fallback;
    Slot& s = slots_[chosen];
    int64_t reused = static_cast<int64_t>(best_reuse);
    if (match.length > 0) {
      cache_->Restore(match, *s.state);
      s.history.assign(p.begin(), p.begin() + match.length);
      reused = match.length;
      if (!seq->positions.empty()) {
        // An image's tokens take fewer positions than cells: the next position is one past the
        // largest the restored prefix used, not its length.
        int32_t top = -1;
        for (int64_t i = 0; i < 4 * match.length; ++i) top = std::max(top, seq->positions[i]);
        s.state->SetNextPosition(top + 1);
      }
    } else if (best < 0) {
      s.state->Reset();
      s.history.clear();
    }
    s.images.clear();
    for (const PromptImage& im : images) {
      s.images.push_back({im.offset, int64_t{im.rows} * im.cols, im.key});
    }
    s.salt = seq->req.cache_salt;
    if (seq->req.use_prefix_cache && (cache_ != nullptr || options_.reuse_prefix)) {
      ++stats_.prefix_lookups;
      if (reused > 0) ++stats_.prefix_hits;
      stats_.prefix_cached_tokens += reused;
    }
    seq->slot = chosen;
    seq->cached = static_cast<int32_t>(reused);
    seq->prefilled = reused;
    seq->admitted = absl::Now();
    s.seq = seq.get();
    running_.push_back(seq.get());
    owned_running_.push_back(std::move(seq));
  }
  stats_.queued = static_cast<int>(queue_.size());
  stats_.active = static_cast<int>(running_.size());
}

void Engine::Loop() {
  while (true) {
    std::vector<std::unique_ptr<Sequence>> cancelled;
    {
      absl::MutexLock lock(&mu_);
      const bool has_running = !running_.empty();
      if (!has_running) {
        mu_.Await(absl::Condition(
            +[](Engine* e)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->stop_ || !e->queue_.empty(); },
            this));
      }
      if (stop_) return;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if ((*it)->cancelled.load()) {
          by_id_.erase((*it)->req.id);
          cancelled.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      Admit();
    }
    for (auto& seq : cancelled) {
      FinishInfo info;
      info.reason = FinishReason::kCancelled;
      info.prompt_tokens = static_cast<int32_t>(seq->req.prompt.size());
      info.queue_time = absl::Now() - seq->submitted;
      seq->sink->OnFinish(info);
    }
    if (!running_.empty() && !Step()) {
      // Every running sequence waits for its images: sleep until an encoding ends or a request
      // arrives, polling for cancellations (Cancel() only flags the sequence).
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](Engine* e) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                 return e->stop_ || e->encode_done_ || !e->queue_.empty();
                               },
                               this),
                           absl::Milliseconds(5));
    }
  }
}

std::vector<Engine::ImageToEncode> Engine::ImagesToEncode(const Sequence& seq) {
  std::vector<ImageToEncode> out;
  for (size_t k = 0; k < seq.req.images.size(); ++k) {
    const PromptImage& im = seq.req.images[k];
    const int64_t tokens = int64_t{im.rows} * im.cols;
    if (im.offset + tokens <= seq.prefilled) continue;  // resumed with the prompt's prefix
    if (!im.embedding.empty()) continue;
    out.push_back({k, tokens, im.encode});
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<float>>> Engine::EncodeImages(
    const std::vector<ImageToEncode>& images, int64_t n_embd, ops::ComputeContext& ctx) {
  std::vector<std::vector<float>> out;
  for (const ImageToEncode& im : images) {
    // Between images (a video's frame pairs): a request that ended meanwhile starts no more.
    if (ctx.cancelled()) return absl::CancelledError("the image encode was cancelled");
    absl::StatusOr<std::vector<float>> e = im.encode(ctx);
    if (!e.ok()) return e.status();
    if (e->size() != static_cast<size_t>(im.tokens * n_embd)) {
      return absl::InternalError(absl::StrCat("image ", im.index, ": the encoder gave ", e->size(),
                                              " values for ", im.tokens, " tokens of width ",
                                              n_embd));
    }
    out.push_back(std::move(*e));
  }
  return out;
}

void Engine::AttachImages(Sequence* seq, const std::vector<ImageToEncode>& images,
                          absl::StatusOr<std::vector<std::vector<float>>> encoded) {
  if (absl::IsCancelled(encoded.status())) {
    Finish(seq, FinishReason::kCancelled, absl::OkStatus());
    return;
  }
  if (!encoded.ok()) {
    Finish(seq, FinishReason::kError, encoded.status());
    return;
  }
  for (size_t i = 0; i < images.size(); ++i) {
    seq->req.images[images[i].index].embedding = std::move((*encoded)[i]);
  }
  const int64_t E = model_->config().n_embd;
  seq->rows.assign(seq->req.prompt.size(), nullptr);
  for (const PromptImage& im : seq->req.images) {
    if (im.embedding.empty()) continue;  // resumed: its tokens are never fed
    for (int64_t i = 0; i < int64_t{im.rows} * im.cols; ++i) {
      seq->rows[im.offset + i] = im.embedding.data() + i * E;
    }
  }
  seq->images_ready = true;
}

void Engine::PrepareImages() {
  {
    absl::MutexLock lock(&mu_);
    encode_done_ = false;
  }
  const int64_t E = model_->config().n_embd;
  for (Sequence* seq : std::vector<Sequence*>(running_)) {
    if (!seq->waits_for_images()) continue;
    if (seq->encoding != nullptr) {
      absl::StatusOr<std::vector<std::vector<float>>> result;
      {
        absl::MutexLock lock(&mu_);
        if (!seq->encoding->done) continue;
        result = std::move(seq->encoding->result);
      }
      const std::shared_ptr<EncodeJob> job = std::move(seq->encoding);
      AttachImages(seq, job->images, std::move(result));
      continue;
    }
    std::vector<ImageToEncode> images = ImagesToEncode(*seq);
    const bool others_compute = std::any_of(running_.begin(), running_.end(), [&](Sequence* s) {
      return s != seq && !s->waits_for_images();
    });
    if (images.empty() || !others_compute) {
      // Cancel() reaches an encode under way through the sequence's own flag.
      ctx_->set_cancel_flag(&seq->cancelled);
      absl::StatusOr<std::vector<std::vector<float>>> encoded = EncodeImages(images, E, *ctx_);
      ctx_->set_cancel_flag(nullptr);
      AttachImages(seq, images, std::move(encoded));
      continue;
    }
    auto job = std::make_shared<EncodeJob>();
    job->images = std::move(images);
    seq->encoding = job;
    if (!encoder_thread_.joinable()) {
      encoder_pool_ = std::make_unique<ThreadPool>(std::max(1, options_.n_threads / 2));
      encoder_ctx_ = std::make_unique<ops::ComputeContext>(encoder_pool_.get(), options_.math);
      encoder_progress_.store(encoder_ctx_.get(), std::memory_order_release);
      encoder_thread_ = std::thread([this] { EncoderLoop(); });
    }
    absl::MutexLock lock(&mu_);
    encode_queue_.push_back(std::move(job));
  }
}

void Engine::EncoderLoop() {
  ops::ComputeContext& ctx = *encoder_ctx_;
  const int64_t E = model_->config().n_embd;
  while (true) {
    std::shared_ptr<EncodeJob> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Engine* e)
               ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->stop_ || !e->encode_queue_.empty(); },
          this));
      if (stop_) return;
      job = std::move(encode_queue_.front());
      encode_queue_.pop_front();
      if (job->cancel.load()) continue;
      encoding_ = job;
    }
    ctx.set_cancel_flag(&job->cancel);
    absl::StatusOr<std::vector<std::vector<float>>> result = EncodeImages(job->images, E, ctx);
    ctx.set_cancel_flag(nullptr);
    absl::MutexLock lock(&mu_);
    encoding_.reset();
    job->result = std::move(result);
    job->done = true;
    encode_done_ = true;
  }
}

bool Engine::Step() {
  for (Sequence* seq : std::vector<Sequence*>(running_)) {
    if (seq->cancelled.load()) Finish(seq, FinishReason::kCancelled, absl::OkStatus());
  }
  PrepareImages();
  if (running_.empty()) return true;

  struct Planned {
    Sequence* seq;
    int64_t n;  // tokens fed
    bool sample;
    int64_t rows;  // logit rows its segment produces
  };
  std::vector<Planned> plan;
  std::vector<model::Segment> segments;
  int64_t budget = options_.prefill_chunk;
  PlanDrafts();
  for (Sequence* seq : running_) {
    if (!seq->decoding()) continue;
    // The last token, then the drafts: every row's logits are those plain decoding computes.
    const int64_t n = static_cast<int64_t>(seq->fed.size());
    model::Segment seg{slots_[seq->slot].state.get(), absl::MakeConstSpan(seq->fed),
                       n > 1 ? model::Logits::kAll : model::Logits::kLast};
    seg.keep_states = n > 1;
    seg.mtp = seq->mtp_catch_up;
    // Not drafting this step: its head takes these rows when it next drafts (if ever).
    seg.mtp_defer = n == 1;
    segments.push_back(seg);
    plan.push_back({seq, n, true, n});
  }
  for (Sequence* seq : running_) {
    if (seq->decoding() || seq->waits_for_images()) continue;
    const int64_t remaining = static_cast<int64_t>(seq->req.prompt.size()) - seq->prefilled;
    int64_t n = std::min(remaining, budget);
    if (n <= 0) break;
    if (Caching(*seq) && options_.snapshot_interval > 0) {
      // Stop at the next snapshot position: the delta-net state exists only between chunks.
      const int64_t next =
          (seq->prefilled / options_.snapshot_interval + 1) * options_.snapshot_interval;
      n = std::min(n, next - seq->prefilled);
    }
    const int64_t before_last = static_cast<int64_t>(seq->req.prompt.size()) - 1;
    if (Caching(*seq) && seq->req.snapshot_before_last && seq->prefilled < before_last) {
      n = std::min(n, before_last - seq->prefilled);
    }
    const bool completes = n == remaining;
    const bool all = seq->req.all_logits;
    model::Segment seg{slots_[seq->slot].state.get(),
                       absl::MakeConstSpan(seq->req.prompt.data() + seq->prefilled, n),
                       all         ? model::Logits::kAll
                       : completes ? model::Logits::kLast
                                   : model::Logits::kNone};
    if (!seq->positions.empty()) {
      seg.positions = absl::MakeConstSpan(seq->positions.data() + 4 * seq->prefilled, 4 * n);
      seg.embeddings = absl::MakeConstSpan(seq->rows.data() + seq->prefilled, n);
    }
    seg.mtp = seq->mtp_catch_up;
    segments.push_back(seg);
    plan.push_back({seq, n, completes, all ? n : (completes ? 1 : 0)});
    budget -= n;
  }
  if (segments.empty()) return false;

  const int64_t V = model_->config().n_vocab;
  logits_.resize(model::Model::LogitRows(segments) * V);
  absl::Status status = model_->Forward(*ctx_, segments, logits_.data());
  if (!status.ok()) {
    for (const Planned& p : plan) {
      Slot& slot = slots_[p.seq->slot];
      slot.state->Reset();
      slot.history.clear();
      Finish(p.seq, FinishReason::kError, status);
    }
    return true;
  }

  int64_t prefilled = 0, generated = 0, row = 0, drafted = 0, accepted = 0;
  for (const Planned& p : plan) {
    Sequence* seq = p.seq;
    Slot& slot = slots_[seq->slot];
    const float* rows = logits_.data() + row * V;
    row += p.rows;
    if (!seq->decoding()) {
      slot.history.insert(slot.history.end(), seq->req.prompt.begin() + seq->prefilled,
                          seq->req.prompt.begin() + seq->prefilled + p.n);
      seq->prefilled += p.n;
      seq->computed += static_cast<int32_t>(p.n);
      prefilled += p.n;
      if (seq->decoding() ||
          (options_.snapshot_interval > 0 && seq->prefilled % options_.snapshot_interval == 0) ||
          (seq->req.snapshot_before_last &&
           seq->prefilled == static_cast<int64_t>(seq->req.prompt.size()) - 1)) {
        Snapshot(*seq, absl::MakeConstSpan(seq->req.prompt.data(), seq->prefilled));
      }
      if (seq->req.all_logits && p.rows > 0) {
        seq->sink->OnLogits(absl::MakeConstSpan(rows, static_cast<size_t>(p.rows * V)));
      }
      if (!p.sample) continue;
      const Emission e = EmitToken(seq, rows + (p.rows - 1) * V, slot.state->n_past());
      generated += e.emitted;
      if (e.finished) Finish(seq, e.reason, e.status, e.stop_token);
      continue;
    }
    // A decode segment: the rows in order, as long as each sampled token is the next draft fed.
    const int64_t base = slot.state->n_past() - p.n;
    int64_t kept = 0;
    Emission e;
    for (int64_t r = 0; r < p.rows; ++r) {
      if (seq->req.all_logits) {
        seq->sink->OnLogits(absl::MakeConstSpan(rows + r * V, static_cast<size_t>(V)));
      }
      e = EmitToken(seq, rows + r * V, base + r + 1);
      ++kept;
      generated += e.emitted;
      if (e.finished || r + 1 == p.rows || e.token != seq->fed[r + 1]) break;
    }
    if (p.n > 1) {
      // The state after the kept tokens; the KV rows after them no longer count.
      if (absl::Status st = slot.state->Rollback(kept); !st.ok() && !e.finished) {
        e.Ends(FinishReason::kError);
        e.status = absl::InternalError(absl::StrCat("speculative rollback: ", st.message()));
      }
      if (seq->drafts_counted) {
        const int32_t nd = static_cast<int32_t>(p.n - 1);
        const int32_t na = static_cast<int32_t>(kept - 1);
        seq->drafted += nd;
        seq->accepted += na;
        drafted += nd;
        accepted += na;
        // The adaptive switch: a drafted token costs about a fifth of a decode step (its verify
        // column and its share of the draft passes), so drafts of which fewer than a quarter
        // are kept cost more than they save.
        seq->recent_accepted = 0.9 * seq->recent_accepted + na;
        seq->recent_drafted = 0.9 * seq->recent_drafted + nd;
        const double rate = seq->recent_accepted / seq->recent_drafted;
        seq->probing = false;
        if (rate < 0.25) {
          seq->paused = seq->backoff;
          seq->backoff = std::min(seq->backoff * 2, 128);
          // One kept probe token resumes (rate 0.52), a refused one pauses longer (0.16).
          seq->recent_accepted = 0.5;
          seq->recent_drafted = 2.0;
        } else if (rate >= 0.4) {
          seq->backoff = 8;
        }
      }
    }
    slot.history.insert(slot.history.end(), seq->fed.begin(), seq->fed.begin() + kept);
    if (e.finished) Finish(seq, e.reason, e.status, e.stop_token);
  }

  absl::MutexLock lock(&mu_);
  stats_.steps += 1;
  stats_.tokens_prefilled += prefilled;
  stats_.tokens_generated += generated;
  stats_.tokens_drafted += drafted;
  stats_.tokens_accepted += accepted;
  size_t kv = 0;
  for (const Slot& s : slots_) kv += s.state->size().kv_bytes_per_token * s.state->n_past();
  stats_.kv_bytes_resident = kv;
  if (cache_ != nullptr) stats_.prefix_cache = cache_->stats();
  return true;
}

Engine::Emission Engine::EmitToken(Sequence* seq, const float* l, int64_t n_past) {
  const int64_t V = model_->config().n_vocab;
  Emission e;
  TokenOutput out;
  const auto& forced = seq->req.forced_tokens;
  const auto& stops = seq->req.stop_tokens;
  // The reasoning budget is spent: the block is closed by the closing tokens, in place of
  // sampled ones (forced tokens of a test come first).
  const bool closing = seq->closing >= 0 && seq->generated >= static_cast<int32_t>(forced.size());
  const bool is_forced = closing || seq->generated < static_cast<int32_t>(forced.size());
  const int32_t forced_token = closing     ? seq->req.reasoning_close[seq->closing]
                               : is_forced ? forced[seq->generated]
                                           : -1;
  if (seq->matcher != nullptr) {
    // Structured output: mask, sample among the allowed, advance the matcher.
    const absl::Time t0 = absl::Now();
    grammar::Matcher& m = *seq->matcher;
    if (is_forced) {
      out.token = forced_token;
    } else {
      m.FillNextTokenMask(seq->mask.data());
      if (m.CanEnd()) {
        for (int32_t t : stops) seq->mask[t >> 6] |= uint64_t{1} << (t & 63);
      }
      const bool any =
          std::any_of(seq->mask.begin(), seq->mask.end(), [](uint64_t w) { return w != 0; });
      if (!any) {
        seq->constraint_time += absl::Now() - t0;
        e.Ends(FinishReason::kError);
        e.status = absl::FailedPreconditionError(
            "the output constraint allows no token of the vocabulary here");
        return e;
      }
      out.token = seq->sampler->Sample(l, seq->mask.data());
    }
    const bool stop = std::find(stops.begin(), stops.end(), out.token) != stops.end();
    if (!stop && !m.AcceptToken(out.token)) {
      seq->constraint_time += absl::Now() - t0;
      // A forced token is the caller's; a sampled one was drawn from the mask, so the mask and
      // the matcher disagree: our bug, not the client's, and reported as such.
      e.Ends(FinishReason::kError);
      e.status = is_forced ? absl::InvalidArgumentError(absl::StrCat(
                                 closing ? "reasoning_close" : "forced_tokens", "[",
                                 closing ? seq->closing : seq->generated, "]: token ", out.token,
                                 " is not allowed by the output constraint"))
                           : absl::InternalError(
                                 absl::StrCat("the output constraint's matcher refused token ",
                                              out.token, ", which its token mask allowed (after ",
                                              seq->generated, " generated tokens)"));
      return e;
    }
    seq->constraint_time += absl::Now() - t0;
  } else {
    out.token = is_forced ? forced_token : seq->sampler->Sample(l);
  }
  if (closing) {
    if (++seq->closing == static_cast<int32_t>(seq->req.reasoning_close.size())) {
      seq->closing = -1;
      seq->in_reasoning = false;
    }
  } else if (seq->in_reasoning) {
    if (out.token == seq->req.reasoning_end) {
      seq->in_reasoning = false;
    } else if (++seq->reasoning_tokens >= seq->req.reasoning_budget) {
      seq->closing = 0;
    }
  }
  if (seq->req.logprobs >= 0) {
    out.logprob = sampling::Sampler::Logprobs(l, V, out.token, seq->req.logprobs);
  }
  if (seq->generated == 0) seq->first_token = absl::Now();
  ++seq->generated;
  seq->last_token = out.token;
  seq->sink->OnToken(out);
  e.emitted = true;
  e.token = out.token;
  const int64_t capacity = slots_[seq->slot].state->capacity();
  if (std::find(stops.begin(), stops.end(), out.token) != stops.end()) {
    e.Ends(FinishReason::kStopToken);
    e.stop_token = out.token;
  } else if (seq->matcher != nullptr && stops.empty() && seq->matcher->Done()) {
    e.Ends(FinishReason::kGrammarDone);
  } else if (seq->generated >= seq->req.max_tokens || n_past + 1 >= capacity) {
    e.Ends(FinishReason::kLength);
  }
  return e;
}

void Engine::PlanDrafts() {
  std::vector<Sequence*> decoding;
  for (Sequence* seq : running_) {
    if (!seq->decoding()) continue;
    decoding.push_back(seq);
    seq->fed.assign(1, seq->last_token);
    seq->drafts_counted = false;
  }
  // Drafts only fill the room the decoding sequences leave in a step, shared out one position
  // at a time in admission order: with several sequences drafting, a step runs the MTP head as
  // many times as its longest draft, so short drafts for all beat long ones for a few.
  int64_t room = options_.speculative_step_tokens - static_cast<int64_t>(decoding.size());
  step_room_ = room;
  if (room <= 0) {
    // No sequence drafts in a full step, and their heads put their rows aside
    // (Segment::mtp_defer) so that a full batch costs what it costs without speculation. One
    // that has put aside as many as its state holds gives its head up rather than pay for them
    // all; with no other drafter it stops drafting, so that it takes no room from the others.
    for (Sequence* seq : decoding) {
      if (seq->mtp_catch_up &&
          slots_[seq->slot].state->mtp_deferred() + 1 > model::kMaxMtpDeferredRows) {
        seq->mtp_catch_up = false;
        if (seq->req.speculative == SpeculativeMode::kMtp) seq->max_draft = 0;
      }
    }
    return;
  }
  std::vector<int64_t> cap(decoding.size(), 0);
  for (size_t i = 0; i < decoding.size(); ++i) {
    Sequence* seq = decoding[i];
    if (seq->max_draft <= 0) continue;
    const model::SequenceState& state = *slots_[seq->slot].state;
    // Rows past max_tokens or the context could never be kept.
    int64_t k = seq->max_draft;
    k = std::min<int64_t>(k, seq->req.max_tokens - seq->generated - 1);
    k = std::min<int64_t>(k, state.capacity() - state.n_past() - 2);
    if (k <= 0) continue;
    const auto& forced = seq->req.forced_tokens;
    if (seq->generated < static_cast<int32_t>(forced.size())) {
      // Forced tokens are known: they verify as drafts that are always right.
      cap[i] = std::min<int64_t>(k, forced.size() - seq->generated);
      continue;
    }
    if (seq->paused > 0) {
      if (--seq->paused == 0) seq->probing = true;
      continue;
    }
    cap[i] = seq->probing ? 1 : k;
  }
  std::vector<int64_t> share(decoding.size(), 0);
  for (bool more = true; more && room > 0;) {
    more = false;
    for (size_t i = 0; i < decoding.size() && room > 0; ++i) {
      if (share[i] < cap[i]) {
        ++share[i];
        --room;
        more = true;
      }
    }
  }

  std::vector<model::DraftSlot> mtp_slots;
  std::vector<Sequence*> mtp_seqs;
  std::vector<std::vector<int32_t>> mtp_drafts(decoding.size());
  std::vector<std::vector<int32_t>> replacing(decoding.size());  // test_drafter_runs_mtp
  std::vector<int32_t> context;
  const int64_t V = model_->config().n_vocab;
  for (size_t i = 0; i < decoding.size(); ++i) {
    Sequence* seq = decoding[i];
    const int64_t k = share[i];
    if (k <= 0) continue;
    const auto& forced = seq->req.forced_tokens;
    if (seq->generated < static_cast<int32_t>(forced.size())) {
      seq->fed.insert(seq->fed.end(), forced.begin() + seq->generated,
                      forced.begin() + seq->generated + k);
      continue;
    }
    const Slot& slot = slots_[seq->slot];
    const model::SequenceState& state = *slot.state;
    std::vector<int32_t> drafts;
    const SpeculativeMode mode = seq->req.speculative;
    if (options_.test_drafter) {
      context.assign(slot.history.begin(), slot.history.end());
      context.push_back(seq->last_token);
      drafts = options_.test_drafter(seq->req.id, context, static_cast<int>(k));
    } else if (mode == SpeculativeMode::kAuto || mode == SpeculativeMode::kNgram) {
      context.assign(slot.history.begin(), slot.history.end());
      context.push_back(seq->last_token);
      drafts = PromptLookupDraft(context, static_cast<int>(k));
    }
    drafts.erase(
        std::remove_if(drafts.begin(), drafts.end(), [V](int32_t t) { return t < 0 || t >= V; }),
        drafts.end());
    if (drafts.size() > static_cast<size_t>(k)) drafts.resize(k);
    const bool mtp_ready = seq->mtp_catch_up && state.mtp_follows();
    const bool run_mtp = options_.test_drafter ? options_.test_drafter_runs_mtp && mtp_ready
                                               : drafts.empty() && mtp_ready;
    if (run_mtp) {
      const size_t j = mtp_seqs.size();
      replacing[j] = std::move(drafts);
      mtp_seqs.push_back(seq);
      mtp_slots.push_back(
          {slots_[seq->slot].state.get(), seq->last_token, static_cast<int>(k), &mtp_drafts[j]});
      continue;
    }
    if (drafts.empty()) continue;
    seq->fed.insert(seq->fed.end(), drafts.begin(), drafts.end());
    seq->drafts_counted = true;
  }
  if (mtp_slots.empty()) return;
  // One batch for every sequence drafting with the head, after one that runs the rows their
  // heads put aside. A failure only costs the drafts.
  std::vector<model::SequenceState*> behind;
  for (const model::DraftSlot& d : mtp_slots) {
    if (d.state->mtp_deferred() > 0) behind.push_back(d.state);
  }
  if (!behind.empty() && !model_->MtpCatchUpDeferred(*ctx_, behind).ok()) return;
  if (!model_->MtpDraft(*ctx_, mtp_slots, options_.mtp_draft_vocab).ok()) return;
  for (size_t j = 0; j < mtp_seqs.size(); ++j) {
    const std::vector<int32_t>& d = options_.test_drafter ? replacing[j] : mtp_drafts[j];
    if (d.empty()) continue;
    mtp_seqs[j]->fed.insert(mtp_seqs[j]->fed.end(), d.begin(), d.end());
    mtp_seqs[j]->drafts_counted = true;
  }
}

void Engine::Finish(Sequence* seq, FinishReason reason, absl::Status status, int32_t stop_token) {
  FinishInfo info;
  info.reason = reason;
  info.status = std::move(status);
  info.stop_token = stop_token;
  info.prompt_tokens = static_cast<int32_t>(seq->req.prompt.size());
  info.generated_tokens = seq->generated;
  info.cached_tokens = seq->cached;
  info.constraint_time = seq->constraint_time;
  info.computed_prompt_tokens = seq->computed;
  info.drafted_tokens = seq->drafted;
  info.accepted_tokens = seq->accepted;
  const absl::Time now = absl::Now();
  info.queue_time = seq->admitted - seq->submitted;
  if (seq->generated > 0) {
    info.time_to_first_token = seq->first_token - seq->submitted;
    info.decode_time = now - seq->first_token;
  }
  Slot& slot = slots_[seq->slot];
  if (!seq->decoding()) {
    // Stopped mid-prompt (cancelled or failed): the state is not worth resuming.
    slot.state->Reset();
    slot.history.clear();
  } else if (reason != FinishReason::kError) {
    // The next turn of a conversation starts with this prompt and its answer. The snapshot
    // holds the MTP head as of the rows it ran: the waiting ones run first, so that a turn
    // restored from it drafts with the head, unless the step was full (throughput first; the
    // slot's own state keeps them for a turn that resumes it).
    if (seq->mtp_catch_up && Caching(*seq) && step_room_ > 0 && slot.state->mtp_deferred() > 0) {
      model::SequenceState* const waiting[] = {slot.state.get()};
      (void)model_->MtpCatchUpDeferred(*ctx_, waiting);  // a failure only leaves the head behind
    }
    Snapshot(*seq, slot.history);
  }
  slot.seq = nullptr;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  // The bookkeeping is done before the sink hears of it, so that a caller woken by OnFinish
  // sees the slot free and may reuse the request id at once.
  std::unique_ptr<Sequence> owned;
  {
    absl::MutexLock lock(&mu_);
    by_id_.erase(seq->req.id);
    auto it = std::find_if(owned_running_.begin(), owned_running_.end(),
                           [seq](const auto& p) { return p.get() == seq; });
    owned = std::move(*it);
    owned_running_.erase(it);
    if (seq->encoding != nullptr) seq->encoding->cancel.store(true);
    stats_.active = static_cast<int>(running_.size());
    if (cache_ != nullptr) stats_.prefix_cache = cache_->stats();
  }
  owned->sink->OnFinish(info);
}

}  // namespace qwen::engine

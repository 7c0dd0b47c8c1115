// The scheduler of a worker: many sequences on one model, continuously batched.
#ifndef QWEN_INFERENCE_ENGINE_ENGINE_H_
#define QWEN_INFERENCE_ENGINE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "inference/common/thread_pool.h"
#include "inference/engine/prefix_cache.h"
#include "inference/engine/prompt_lookup.h"
#include "inference/engine/speculative_mode.h"
#include "inference/grammar/matcher.h"
#include "inference/model/model.h"
#include "inference/ops/compute.h"
#include "inference/sampling/sampler.h"

namespace qwen::engine {

struct EngineOptions {
  int n_slots = 4;       // sequences that run at once
  int64_t n_ctx = 4096;  // context (prompt + generated) of each slot
  model::KvType kv_type = model::KvType::kF16;
  int n_threads = 0;  // compute threads; 0: the cores this process may use
  // Prompt tokens per forward step, on top of one token per decoding sequence. Smaller values
  // keep running streams' inter-token latency low while a long prompt is prefilled; larger
  // ones prefill faster.
  int64_t prefill_chunk = 256;
  ops::MathMode math = ops::MathMode::kFast;
  bool reuse_prefix = true;  // resume a slot whose history is a prefix of a new prompt
  // Prefix cache (prefix_cache.h): memory for snapshots of sequence states, 0 for none. Prompts
  // are snapshotted at their end, at every multiple of `snapshot_interval` tokens inside them
  // (prefill chunks stop there), and when their generation ends.
  size_t prefix_cache_bytes = 0;
  int64_t snapshot_interval = 512;
  // Speculative decoding: the longest draft a sequence verifies in one step (requests may ask
  // for less; 0 turns speculation off for every request), and how many decode positions a step
  // holds at most, drafts included: drafts only fill room that the decoding sequences leave
  // (at the default 8, with 8 sequences decoding nobody drafts).
  int max_draft = 3;
  int speculative_step_tokens = 8;
  // The MTP head drafts among the token ids below this and the special tokens (see
  // model::Model::MtpDraft): a draft step then reads about an eighth of the 4B model's LM head
  // instead of all of it. 0: the whole vocabulary. The output is the same either way.
  int64_t mtp_draft_vocab = kDefaultMtpDraftVocab;
  // Tests only: when set, drafts come from here instead of prompt lookup and the MTP head, for
  // every request whose mode is not kOff. `context` is the sequence's tokens so far (prompt,
  // output, the last sampled token included); at most `n` of the returned tokens are used.
  std::function<std::vector<int32_t>(uint64_t id, absl::Span<const int32_t> context, int n)>
      test_drafter;
  // Benchmarks only: with test_drafter, sequences that may draft with the MTP head run it as
  // usual (its cost), and then the test drafter's tokens replace its drafts (forced acceptance).
  bool test_drafter_runs_mtp = false;
};

// An image in a prompt: its rows * cols tokens are the prompt entries from `offset` (their ids
// are placeholders, normally <|image_pad|>), fed as embedding rows with M-RoPE positions (see
// model::MropePositions). The rows come from `embedding` or, when that is empty, from `encode`,
// which the engine runs before the prompt's first chunk: on its compute threads when no other
// sequence is computing, else on its encoder thread (see Engine), so `encode` must be safe to
// call from either thread, on a context of its own pool. A long `encode` should poll
// ctx.cancelled() and return CANCELLED when it is set (the vision encoder does, per layer).
//
// A video is a run of these, one per frame pair (each pair is encoded like an image and takes
// positions like one; the timestamp text between pairs is ordinary prompt text). The engine
// checks for cancellation before each image's encode as well as the encoder within it, so a
// cancelled video stops within one frame pair.
struct PromptImage {
  using EncodeFn = std::function<absl::StatusOr<std::vector<float>>(ops::ComputeContext&)>;
  int64_t offset = 0;
  int rows = 0;
  int cols = 0;
  // Identifies the image's content (e.g. a SHA-256 of its file and grid): a slot whose history
  // holds the same images at the same places may be resumed. Empty: never resumed.
  std::string key;
  std::vector<float> embedding;  // [rows * cols, n_embd]
  EncodeFn encode;
};

// One generation, in tokens (text and stop strings are the caller's business).
struct GenerationRequest {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  sampling::SamplingParams sampling;
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_tokens;  // generation ends after sampling one of these
  int32_t logprobs = -1;             // -1: none; 0: the chosen token's; n: and n alternatives
  // Teacher forcing: the first forced_tokens.size() outputs are these tokens instead of sampled
  // ones (logprobs still describe the model's distribution; penalties do not see them). Lets
  // tests drive text-level features (stop strings, tool-call parsing) through a model with
  // random weights, and lets a caller score a given continuation.
  std::vector<int32_t> forced_tokens;
  // Reasoning budget: the prompt opened a reasoning block (<think>) and at most this many
  // generated tokens may stay inside it; -1: no budget. A generated `reasoning_end` token (the
  // model's own </think>) closes the block. Once `reasoning_budget` tokens were generated inside
  // it, the next outputs are `reasoning_close` (e.g. "\n</think>\n\n" as tokens) instead of
  // sampled ones (as forced tokens: a grammar must allow them, penalties do not see them), and
  // the model then answers. The closing tokens count towards max_tokens.
  int32_t reasoning_budget = -1;
  int32_t reasoning_end = -1;
  std::vector<int32_t> reasoning_close;
  // Structured output: when set, every sampled token keeps the output a valid prefix of this
  // grammar (compiled for the model's vocabulary), and stop_tokens are allowed only once the
  // output is a complete sentence of it. Each sequence runs its own matcher over the shared
  // grammar. Forced tokens must be allowed by it too.
  std::shared_ptr<grammar::CompiledGrammar> grammar;
  // false: neither resume from cached state (prefix cache or a slot's history) nor leave any.
  bool use_prefix_cache = true;
  // Also snapshot the prompt's state one token before its end (the last prefill chunk stops
  // there), so that a request with the same prompt (another choice of one, started after this
  // one's prefill) resumes all of it but the last token from the prefix cache: a snapshot of
  // the whole prompt cannot be resumed by an equal prompt, which needs its last token's logits.
  bool snapshot_before_last = false;
  // Report every logit row the sequence computes to RequestSink::OnLogits: one after each
  // prompt token, then one after each token fed back (every generated one but the last). For
  // tools that compare logits row by row (`qwen generate --dump-logits`); it computes the
  // vocabulary's logits for the whole prompt, and turns use_prefix_cache off (every prompt token
  // must be computed to have its row).
  bool all_logits = false;
  // Requests whose input is more than `prompt` (e.g. image embeddings behind placeholder tokens)
  // set this to a hash of that input: cached state is only shared between equal salts.
  uint64_t cache_salt = 0;
  // Speculative decoding (EngineOptions::max_draft): the drafter, and the longest draft per
  // step (0: the engine's; at most kMaxDraftTokens, and never more than the engine's).
  SpeculativeMode speculative = SpeculativeMode::kAuto;
  int32_t max_draft = 0;
  // Images of the prompt, in prompt order. The ids alone do not say which image was seen, so a
  // slot's history is resumed only when its images have the same keys at the same places, and
  // Submit() folds the keys into cache_salt for the prefix cache (an image without a key turns
  // use_prefix_cache off).
  std::vector<PromptImage> images;
};

struct TokenOutput {
  int32_t token = 0;
  std::optional<sampling::TokenLogprob> logprob;
};

// kGrammarDone: the grammar's sentence is complete, nothing may follow and the request has no
// stop token to end on (with stop tokens, the grammar allows only them and the sequence ends
// with kStopToken).
enum class FinishReason { kStopToken, kLength, kCancelled, kError, kGrammarDone };

struct FinishInfo {
  FinishReason reason = FinishReason::kLength;
  absl::Status status;      // set with kError
  int32_t stop_token = -1;  // with kStopToken
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens resumed from cached state (a slot or the cache)
  int32_t computed_prompt_tokens = 0;  // prompt positions this request fed to the model
  absl::Duration queue_time;           // submitted -> admitted to a slot
  absl::Duration time_to_first_token;  // submitted -> first token
  absl::Duration decode_time;          // first token -> finish
  // Structured output: time spent computing token masks and advancing the matcher, and in
  // applying the mask (sampling with it minus nothing: the whole masked Sample call).
  absl::Duration constraint_time;
  // Speculative decoding: tokens drafted (by prompt lookup or the MTP head) and verified, and
  // how many of them the model accepted (each accepted one saved a forward pass).
  int32_t drafted_tokens = 0;
  int32_t accepted_tokens = 0;
};

// Receives a request's results, called on the engine's scheduler thread: keep it quick.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void OnToken(const TokenOutput& token) = 0;
  // With GenerationRequest::all_logits: rows of n_vocab logits, in order, each call the rows of
  // one forward pass (a prompt chunk, or one decode step), before the token sampled from the
  // last of them is reported.
  virtual void OnLogits(absl::Span<const float> rows) {}
  // Called once, last.
  virtual void OnFinish(const FinishInfo& info) = 0;
};

struct EngineStats {
  int slots = 0;
  int active = 0;  // sequences in a slot
  int queued = 0;  // waiting for a slot
  int64_t tokens_prefilled = 0;
  int64_t tokens_generated = 0;
  int64_t tokens_drafted = 0;   // speculative drafts verified
  int64_t tokens_accepted = 0;  // of which accepted
  int64_t steps = 0;
  // Layer passes done since the start: grows inside a step too (a long prefill chunk), so a
  // supervisor can tell a slow step from a stuck engine thread.
  int64_t layers_done = 0;
  size_t state_bytes = 0;        // delta-net and conv states of all slots
  size_t kv_bytes_resident = 0;  // KV cache of the tokens held
  size_t kv_bytes_reserved = 0;  // KV cache address space
  // Prefix reuse, over requests that allow it: how many looked, how many resumed from cached
  // state (a slot's history or the prefix cache), and the prompt tokens they skipped.
  int64_t prefix_lookups = 0;
  int64_t prefix_hits = 0;
  int64_t prefix_cached_tokens = 0;
  bool prefix_cache_enabled = false;
  PrefixCacheStats prefix_cache;
};

// Runs requests on a model with `n_slots` sequences at once. A scheduler thread repeats a step:
// admit queued requests into free slots (FIFO), then one forward pass with the next token of
// every decoding sequence plus chunks of pending prompts up to `prefill_chunk` tokens, so a
// long prompt is prefilled in pieces while running sequences keep producing tokens; then sample,
// report tokens and finish sequences. Sequences join and leave between steps.
//
// With a prefix cache (EngineOptions::prefix_cache_bytes), an admitted request resumes from the
// longest cached snapshot of its prompt (or a free slot's own history, whichever holds more),
// prefill chunks stop at multiples of snapshot_interval, and states are snapshotted there, at the
// end of each prompt and when a sequence finishes. FinishInfo says how many prompt tokens were
// resumed (cached_tokens) and fed to the model (computed_prompt_tokens).
//
// Speculative decoding (docs/speculative.md): before a step, each decoding sequence may draft a
// few tokens (GenerationRequest::speculative: prompt lookup or the model's MTP head) in the
// room the step has (EngineOptions::speculative_step_tokens); the step feeds the last token and
// the drafts as one segment whose every row is computed as a decode step would compute it, the
// rows are sampled in order exactly as plain decoding samples them (same sampler, penalties,
// grammar matcher, logprobs, stop and length checks) while the sampled token equals the next
// draft, and the sequence's state is rolled back to the tokens kept. Output, logits and
// log-probabilities are bit for bit those of plain decoding, for greedy and seeded sampling
// alike. A sequence whose drafts are mostly refused stops drafting for a while (doubling up to
// 128 steps) and then probes again. A sequence that does not draft in a step (paused, or the
// step full) leaves its MTP head's rows for when it next drafts (Segment::mtp_defer), so a full
// batch costs what it costs without speculation.
//
// Images (PromptImage::encode) are encoded before their prompt's first chunk. When other
// sequences are computing, that happens on an encoder thread (started at the first such image,
// with half the compute threads, at least one): the running sequences keep producing tokens,
// sharing the cores with the encoder, instead of waiting for the whole image; the image's own
// request takes part in steps once it is encoded. With nothing else running, the image is
// encoded at once on the compute threads (all of them: the fastest first token). Either way an
// encode whose request is cancelled, or that the destructor finds under way, gives up at its
// next layer (ComputeContext::cancelled(), polled by the encode function).
//
// Thread-safe: Submit(), Cancel() and Stats() may be called from any thread. Sinks are called on
// the scheduler thread.
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<model::Model> model,
                                                        EngineOptions options);
  ~Engine();  // cancels what is running (encodes too) and joins the scheduler and encoder threads

  // Queues a request. INVALID_ARGUMENT when it cannot run (empty prompt, prompt + max_tokens
  // over the context, token outside the vocabulary, bad sampling parameters, duplicate id).
  absl::Status Submit(GenerationRequest request, std::shared_ptr<RequestSink> sink);
  // Ends a request early (queued or running): its sink gets OnFinish(kCancelled) within a step.
  void Cancel(uint64_t id);

  EngineStats Stats() const;
  const EngineOptions& options() const { return options_; }
  const model::Model& model() const { return *model_; }

 private:
  struct Sequence;
  struct Slot {
    std::unique_ptr<model::SequenceState> state;
    std::vector<int32_t> history;  // tokens held in the state
    uint64_t salt = 0;             // the cache_salt of the request that left them
    // Images in the history: where, how many tokens, and their keys (empty: unknown content).
    struct HeldImage {
      int64_t offset;
      int64_t n;
      std::string key;
    };
    std::vector<HeldImage> images;
    Sequence* seq = nullptr;
  };

  struct ImageToEncode;
  struct EncodeJob;

  Engine(std::shared_ptr<model::Model> model, EngineOptions options);
  void Loop();
  // One forward pass; false when no running sequence could take part (all wait for images).
  bool Step();
  // The images of `seq` that still need their rows computed, in order.
  static std::vector<ImageToEncode> ImagesToEncode(const Sequence& seq);
  static absl::StatusOr<std::vector<std::vector<float>>> EncodeImages(
      const std::vector<ImageToEncode>& images, int64_t n_embd, ops::ComputeContext& ctx);
  // Stores `encoded` in the request's images and points the prompt's embedding rows at them;
  // an encode that failed ends the request with its error, one that was cancelled as cancelled.
  void AttachImages(Sequence* seq, const std::vector<ImageToEncode>& images,
                    absl::StatusOr<std::vector<std::vector<float>>> encoded);
  // Makes every running sequence's images ready or under way; scheduler thread.
  void PrepareImages();
  void EncoderLoop();
  void Admit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Sequence* seq, FinishReason reason, absl::Status status, int32_t stop_token = -1);
  // Fills the drafts of the decoding sequences for this step (speculative decoding).
  void PlanDrafts();
  // What came of sampling one logit row.
  struct Emission {
    bool emitted = false;  // a token went to the sink
    int32_t token = -1;
    bool finished = false;  // the sequence ends after this row, for `reason`
    FinishReason reason = FinishReason::kLength;
    absl::Status status;  // with kError
    int32_t stop_token = -1;
    void Ends(FinishReason r) {
      finished = true;
      reason = r;
    }
  };
  // Samples (or takes the forced token from) one decode row exactly as plain decoding does and
  // reports it; `n_past` is the sequence's length once the row's own token is fed (for the
  // length check). Does not call Finish().
  Emission EmitToken(Sequence* seq, const float* logits, int64_t n_past);
  bool Caching(const Sequence& seq) const;
  void Snapshot(const Sequence& seq, absl::Span<const int32_t> tokens);

  std::unique_ptr<PrefixCache> cache_;  // scheduler thread only; null when disabled

  std::shared_ptr<model::Model> model_;
  const EngineOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ops::ComputeContext> ctx_;
  std::vector<Slot> slots_;         // scheduler thread only
  std::vector<float> logits_;       // scheduler thread only
  std::vector<Sequence*> running_;  // scheduler thread only, admission order
  // The room the last step left for drafts (PlanDrafts; 0 or less: a full step). Scheduler
  // thread only.
  int64_t step_room_ = 0;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Sequence*> by_id_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Sequence>> owned_running_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<EncodeJob>> encode_queue_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<EncodeJob> encoding_ ABSL_GUARDED_BY(mu_);  // the encoder thread's job
  bool encode_done_ ABSL_GUARDED_BY(mu_) = false;  // a job ended since the scheduler looked
  std::thread thread_;
  // The encoder thread and its compute threads, made by the scheduler thread at the first
  // background job. encoder_progress_ publishes the context to Stats(), whose layers_done
  // counts the encoder's layers too (a long encode is progress, not a stuck engine).
  std::unique_ptr<ThreadPool> encoder_pool_;
  std::unique_ptr<ops::ComputeContext> encoder_ctx_;
  std::atomic<const ops::ComputeContext*> encoder_progress_{nullptr};
  std::thread encoder_thread_;
};

}  // namespace qwen::engine

#endif  // QWEN_INFERENCE_ENGINE_ENGINE_H_

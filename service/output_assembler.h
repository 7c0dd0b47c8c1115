// Turning a worker's token stream into the public Generate responses.
#ifndef QWEN_SERVICE_OUTPUT_ASSEMBLER_H_
#define QWEN_SERVICE_OUTPUT_ASSEMBLER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "inference/chat/output_parser.h"
#include "inference/tokenizer/tokenizer.h"
#include "qwen/v1/qwen.pb.h"
#include "qwen/worker/v1/worker.pb.h"
#include "service/request.h"
#include "service/stop_matcher.h"

namespace qwen::service {

// The text pipeline of one Generate stream: token ids -> UTF-8-safe text (StreamingDecoder) ->
// stop strings (StopMatcher) -> for chat input, reasoning / content / tool calls
// (chat::OutputParser). It also counts tokens and keeps the timings of the Completion.
//
// Text of a token that ends generation (end-of-generation or a client stop id) is not emitted;
// its id and logprob are. After a stop string matches, later tokens are ignored.
//
// One per stream; not thread-safe. `prepared` and `tokenizer` must outlive it.
class OutputAssembler {
 public:
  OutputAssembler(const PreparedGenerate& prepared, const tokenizer::Tokenizer& tokenizer,
                  absl::Time arrival);

  // Adds one token from the worker, appending what becomes visible to `out`. Returns true when a
  // stop string matched or the last tool call allowed (stopping.max_tool_calls) is complete:
  // generation should stop (cancel the worker call) and FinishOnStop() be called.
  bool AddToken(const worker::v1::Token& token, absl::Time now, v1::GenerateResponse* out);

  // The worker finished (`finish` from its last message): flushes what was held back into `out`
  // and sets out->completion. A worker error keeps its code when the request was at fault
  // (INVALID_ARGUMENT for an image or video that does not decode); anything else is INTERNAL.
  absl::Status Finish(const worker::v1::Finish& finish, absl::Time now, v1::GenerateResponse* out);

  // AddToken() returned true: flushes the output parser and sets out->completion
  // (FINISH_REASON_STOP_SEQUENCE, or FINISH_REASON_TOOL_CALLS after the last call allowed).
  void FinishOnStop(absl::Time now, v1::GenerateResponse* out);

  // The server gave up on the stream (shutdown): flushes what is certain and sets
  // out->completion with FINISH_REASON_CANCELLED.
  void FinishCancelled(absl::Time now, v1::GenerateResponse* out);

  // The worker call started (queue time in the front end ends here).
  void MarkDispatched(absl::Time now) { dispatched_ = now; }

  int32_t tokens() const { return tokens_; }
  bool stopped() const { return matcher_.stopped() || tool_calls_done(); }

 private:
  // Feeds released text to the parser (chat) or straight into out->text.
  void Emit(absl::string_view text, v1::GenerateResponse* out);
  void EmitDelta(const chat::ParserDelta& delta, v1::GenerateResponse* out);
  // Flushes decoder, matcher and parser at the end of the stream.
  void Drain(bool include_held_text, v1::GenerateResponse* out);
  void FillCompletion(v1::FinishReason reason, absl::Time now, v1::GenerateResponse* out);
  std::string TokenText(int32_t id) const;
  // "call_<request id>_<n>" of the output's n-th <tool_call> block.
  std::string CallId(int index) const;
  bool tool_calls_done() const { return parser_ != nullptr && parser_->done(); }

  const PreparedGenerate& prepared_;
  const tokenizer::Tokenizer& tokenizer_;
  tokenizer::StreamingDecoder decoder_;
  StopMatcher matcher_;
  std::unique_ptr<chat::OutputParser> parser_;
  int tool_calls_ = 0;
  int32_t tokens_ = 0;
  int32_t last_token_ = -1;
  std::string matched_stop_;
  bool drained_ = false;

  const absl::Time arrival_;
  absl::Time dispatched_;
  absl::Time first_token_;
  absl::Time last_token_time_;
  double worker_queue_ms_ = 0;
  int32_t cached_tokens_ = 0;
  int32_t drafted_tokens_ = 0;
  int32_t accepted_tokens_ = 0;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_OUTPUT_ASSEMBLER_H_

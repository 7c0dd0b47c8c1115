#include "service/output_assembler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace qwen::service {

OutputAssembler::OutputAssembler(const PreparedGenerate& prepared,
                                 const tokenizer::Tokenizer& tokenizer, absl::Time arrival)
    : prepared_(prepared),
      tokenizer_(tokenizer),
      decoder_(tokenizer),
      matcher_(prepared.stop),
      arrival_(arrival),
      dispatched_(arrival) {
  if (prepared_.parse_output) {
    parser_ = std::make_unique<chat::OutputParser>(prepared_.parser_options);
  }
}

std::string OutputAssembler::TokenText(int32_t id) const {
  // Decode() repairs an incomplete UTF-8 sequence with U+FFFD, which a proto string needs.
  return tokenizer_.Decode({id}, /*show_control=*/true);
}

std::string OutputAssembler::CallId(int index) const {
  return absl::StrCat("call_", prepared_.request_id, "_", index);
}

void OutputAssembler::EmitDelta(const chat::ParserDelta& delta, v1::GenerateResponse* out) {
  out->mutable_text()->append(delta.content);
  out->mutable_reasoning()->append(delta.reasoning);
  for (const chat::ToolCallDelta& d : delta.tool_call_deltas) {
    v1::ToolCallDelta* c = out->add_tool_call_deltas();
    c->set_index(static_cast<uint32_t>(d.index));
    if (!d.name.empty()) {
      c->set_id(CallId(d.index));
      c->set_name(d.name);
    }
    c->set_arguments(d.arguments);
  }
  for (const chat::ToolCall& call : delta.tool_calls) {
    v1::ToolCall* c = out->add_tool_calls();
    // The parser numbers blocks as this counter does, so a streamed call keeps its id.
    c->set_id(CallId(tool_calls_++));
    c->set_name(call.name);
    c->set_arguments(call.arguments_text);
    if (!call.valid) {
      c->set_error(call.error.empty() ? "the call could not be read" : call.error);
      c->set_raw(call.raw);
    }
  }
}

void OutputAssembler::Emit(absl::string_view text, v1::GenerateResponse* out) {
  if (text.empty()) return;
  if (parser_ == nullptr) {
    out->mutable_text()->append(text.data(), text.size());
    return;
  }
  EmitDelta(parser_->Add(text), out);
}

bool OutputAssembler::AddToken(const worker::v1::Token& token, absl::Time now,
                               v1::GenerateResponse* out) {
  if (stopped()) return false;
  if (tokens_ == 0) first_token_ = now;
  last_token_time_ = now;
  ++tokens_;
  last_token_ = token.id();
  if (prepared_.return_token_ids) out->add_token_ids(token.id());
  if (prepared_.logprobs && token.has_logprob()) {
    v1::TokenLogprob* lp = out->add_logprobs();
    lp->set_token_id(token.id());
    lp->set_token(TokenText(token.id()));
    const absl::string_view bytes = tokenizer_.TokenBytes(token.id());
    lp->set_token_bytes(std::string(bytes.data(), bytes.size()));
    lp->set_logprob(token.logprob());
    const int n = std::min(token.top_ids_size(), token.top_logprobs_size());
    for (int k = 0; k < n && k < prepared_.top_logprobs; ++k) {
      v1::TopLogprob* top = lp->add_top_logprobs();
      top->set_token_id(token.top_ids(k));
      top->set_token(TokenText(token.top_ids(k)));
      top->set_logprob(token.top_logprobs(k));
    }
  }
  // The token that ends generation contributes no text.
  if (prepared_.stop_ids.contains(token.id())) return false;
  const std::string piece = decoder_.Add(token.id());
  if (piece.empty()) return false;
  StopMatcher::Result r = matcher_.Add(piece);
  Emit(r.text, out);
  // The text released comes before any stop string, so a call it completes came first.
  if (tool_calls_done()) return true;
  if (r.stopped) {
    matched_stop_ = r.matched;
    return true;
  }
  return false;
}

void OutputAssembler::Drain(bool include_held_text, v1::GenerateResponse* out) {
  if (drained_) return;
  drained_ = true;
  if (include_held_text && !matcher_.stopped()) {
    StopMatcher::Result r = matcher_.Add(decoder_.Flush());
    Emit(r.text, out);
    if (r.stopped) {
      matched_stop_ = r.matched;
    } else {
      Emit(matcher_.Flush(), out);
    }
  }
  if (parser_ != nullptr) EmitDelta(parser_->Finish(), out);
}

void OutputAssembler::FillCompletion(v1::FinishReason reason, absl::Time now,
                                     v1::GenerateResponse* out) {
  v1::Completion* c = out->mutable_completion();
  c->set_finish_reason(reason);
  c->set_seed(prepared_.seed);
  v1::Usage* u = c->mutable_usage();
  u->set_prompt_tokens(static_cast<uint32_t>(prepared_.prompt_tokens));
  u->set_generated_tokens(static_cast<uint32_t>(tokens_));
  u->set_cached_tokens(static_cast<uint32_t>(cached_tokens_));
  u->set_image_tokens(static_cast<uint32_t>(prepared_.image_tokens));
  u->set_video_tokens(static_cast<uint32_t>(prepared_.video_tokens));
  u->set_drafted_tokens(static_cast<uint32_t>(drafted_tokens_));
  u->set_accepted_tokens(static_cast<uint32_t>(accepted_tokens_));
  v1::Timings* t = c->mutable_timings();
  t->set_queue_wait_ms(absl::ToDoubleMilliseconds(dispatched_ - arrival_) + worker_queue_ms_);
  t->set_total_ms(absl::ToDoubleMilliseconds(now - arrival_));
  if (tokens_ > 0) {
    t->set_time_to_first_token_ms(absl::ToDoubleMilliseconds(first_token_ - arrival_));
    const double gen_ms = absl::ToDoubleMilliseconds(last_token_time_ - first_token_);
    t->set_generation_ms(gen_ms);
    if (tokens_ > 1 && gen_ms > 0) t->set_tokens_per_second((tokens_ - 1) * 1000.0 / gen_ms);
  }
}

absl::Status OutputAssembler::Finish(const worker::v1::Finish& finish, absl::Time now,
                                     v1::GenerateResponse* out) {
  worker_queue_ms_ = finish.queue_ms();
  cached_tokens_ = finish.cached_tokens();
  drafted_tokens_ = finish.drafted_tokens();
  accepted_tokens_ = finish.accepted_tokens();
  if (finish.reason() == worker::v1::Finish::REASON_ERROR) {
    // The request's own faults keep their code and message (which names the field); anything
    // else is ours: INTERNAL, logged at error level and counted under that code.
    const int32_t code = finish.error_code();
    if (code == static_cast<int32_t>(absl::StatusCode::kInvalidArgument) ||
        code == static_cast<int32_t>(absl::StatusCode::kFailedPrecondition) ||
        code == static_cast<int32_t>(absl::StatusCode::kOutOfRange)) {
      return absl::Status(static_cast<absl::StatusCode>(code), finish.error());
    }
    return absl::InternalError(absl::StrCat("generation failed in the worker: ", finish.error()));
  }
  Drain(/*include_held_text=*/true, out);
  v1::FinishReason reason = v1::FINISH_REASON_LENGTH;
  if (tool_calls_done()) {
    // The held-back tail completed the last call allowed.
    reason = v1::FINISH_REASON_TOOL_CALLS;
  } else if (matcher_.stopped()) {
    // The held-back tail completed a stop string only at the flush.
    reason = v1::FINISH_REASON_STOP_SEQUENCE;
    out->mutable_completion()->set_stop_sequence(matched_stop_);
  } else if (finish.reason() == worker::v1::Finish::REASON_STOP_TOKEN) {
    const int32_t id = finish.stop_token();
    if (prepared_.client_stop_ids.contains(id)) {
      reason = v1::FINISH_REASON_STOP_TOKEN;
    } else {
      reason = tool_calls_ > 0 ? v1::FINISH_REASON_TOOL_CALLS : v1::FINISH_REASON_EOS;
    }
    out->mutable_completion()->set_stop_token_id(id);
  } else if (finish.reason() == worker::v1::Finish::REASON_GRAMMAR_DONE) {
    reason = tool_calls_ > 0 ? v1::FINISH_REASON_TOOL_CALLS : v1::FINISH_REASON_EOS;
  } else if (finish.reason() == worker::v1::Finish::REASON_CANCELLED) {
    reason = v1::FINISH_REASON_CANCELLED;
  }
  FillCompletion(reason, now, out);
  return absl::OkStatus();
}

void OutputAssembler::FinishOnStop(absl::Time now, v1::GenerateResponse* out) {
  Drain(/*include_held_text=*/false, out);
  if (tool_calls_done()) {
    FillCompletion(v1::FINISH_REASON_TOOL_CALLS, now, out);
    return;
  }
  out->mutable_completion()->set_stop_sequence(matched_stop_);
  FillCompletion(v1::FINISH_REASON_STOP_SEQUENCE, now, out);
}

void OutputAssembler::FinishCancelled(absl::Time now, v1::GenerateResponse* out) {
  // Held-back text is left out: it might have been the start of a stop string.
  Drain(/*include_held_text=*/false, out);
  FillCompletion(v1::FINISH_REASON_CANCELLED, now, out);
}

}  // namespace qwen::service

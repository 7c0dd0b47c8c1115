#include "service/request.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "inference/common/status_macros.h"
#include "inference/engine/speculative_mode.h"
#include "inference/grammar/spec.h"
#include "inference/sampling/sampler.h"
#include "service/chat_request.h"
#include "service/field_checks.h"
#include "service/request_images.h"
#include "service/request_videos.h"
#include "service/struct_json.h"

namespace qwen::service {
namespace {

// What closes a reasoning block (Qwen's, one token of its vocabulary).
constexpr char kReasoningEnd[] = "</think>";

// Both context errors of PrepareGenerate say this, and no other error does.
constexpr char kContextSizePhrase[] = "the context size";

uint64_t RandomSeed() {
  static absl::Mutex mu;
  static std::mt19937_64* gen = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return new std::mt19937_64(seq);
  }();
  absl::MutexLock lock(&mu);
  // Kept below 2^53 so that clients reading the JSON number as a double get it back exactly.
  return (*gen)() & ((uint64_t{1} << 53) - 1);
}

}  // namespace

absl::StatusOr<PreparedGenerate> PrepareGenerate(const v1::GenerateRequest& request,
                                                 const TextModel& model,
                                                 const RequestLimits& limits,
                                                 uint64_t request_number,
                                                 const std::string* forced_output) {
  PreparedGenerate p;
  RETURN_IF_ERROR(CheckText(request.request_id(), "request_id"));
  if (request.request_id().size() > 256)
    return FieldError("request_id", "is longer than 256 bytes");
  p.request_id =
      request.request_id().empty() ? absl::StrCat("req-", request_number) : request.request_id();
  const int32_t vocab = model.vocab_size();
  worker::v1::GenerateRequest& w = p.worker_request;
  w.set_request_id(p.request_id);

  // Input.
  std::string input_field;
  std::vector<int32_t> prompt;
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      input_field = "prompt";
      RETURN_IF_ERROR(CheckText(request.prompt(), input_field));
      prompt = model.tokenizer().Encode(request.prompt(), /*parse_special=*/true);
      break;
    case v1::GenerateRequest::kPromptTokenIds:
      input_field = "prompt_token_ids.ids";
      RETURN_IF_ERROR(CheckTokenIds(request.prompt_token_ids().ids(), input_field, vocab));
      prompt.assign(request.prompt_token_ids().ids().begin(),
                    request.prompt_token_ids().ids().end());
      break;
    case v1::GenerateRequest::kChat: {
      input_field = "chat";
      // A reasoning budget of 0 is thinking off.
      const v1::Chat* chat = &request.chat();
      v1::Chat thinking_off;
      if (request.stopping().has_max_reasoning_tokens() &&
          request.stopping().max_reasoning_tokens() == 0) {
        thinking_off = request.chat();
        thinking_off.set_enable_thinking(false);
        chat = &thinking_off;
      }
      ASSIGN_OR_RETURN(RenderedChat rendered, RenderChat(*chat, model, "chat", limits.max_tools));
      prompt = std::move(rendered.token_ids);
      for (const PlacedImage& im : rendered.images) {
        worker::v1::Image* wi = w.add_images();
        wi->set_data(im.bytes);
        wi->set_token_offset(im.span.offset);
        wi->set_rows(im.span.rows);
        wi->set_cols(im.span.cols);
        wi->set_min_pixels(model.vision_options().preprocess.min_pixels);
        wi->set_max_pixels(model.vision_options().preprocess.max_pixels);
        wi->set_max_bytes(static_cast<int64_t>(model.vision_options().decode.max_bytes));
        wi->set_max_decoded_pixels(model.vision_options().decode.max_pixels);
        wi->set_field(im.field);
        wi->set_key(ImageKey(im));
        p.image_tokens += static_cast<int32_t>(im.grid.n_tokens());
      }
      for (const PlacedVideo& v : rendered.videos) {
        ToWorkerVideo(v, w.add_videos());
        p.video_tokens += static_cast<int32_t>(VideoTokenCount(v));
      }
      p.parse_output = !request.output().raw_text();
      p.parser_options.reasoning_open = rendered.reasoning_open;
      p.parser_options.tools = std::move(rendered.tools);
      break;
    }
    default:
      return FieldError("input", "set one of prompt, prompt_token_ids or chat");
  }
  if (prompt.empty()) return FieldError(input_field, "is empty");
  p.prompt_tokens = static_cast<int32_t>(prompt.size());
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt >= limits.slot_context) {
    return FieldError(input_field, absl::StrCat("the prompt has ", n_prompt, " tokens; ",
                                                kContextSizePhrase, " is ", limits.slot_context,
                                                " tokens, which leaves no room to generate"));
  }
  w.mutable_prompt()->Assign(prompt.begin(), prompt.end());

  // Sampling.
  const v1::SamplingParams& s = request.sampling();
  sampling::SamplingParams sp;
  sp.temperature = s.has_temperature() ? s.temperature() : 1.0f;
  sp.top_k = s.top_k();
  sp.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  sp.min_p = s.min_p();
  sp.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  sp.presence_penalty = s.presence_penalty();
  sp.frequency_penalty = s.frequency_penalty();
  for (const auto& [token, bias] : s.logit_bias()) sp.logit_bias.emplace_back(token, bias);
  std::sort(sp.logit_bias.begin(), sp.logit_bias.end());
  if (absl::Status st = sampling::Validate(sp, vocab); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  }
  p.seed = s.has_seed() ? s.seed() : RandomSeed();
  worker::v1::SamplingParams& ws = *w.mutable_sampling();
  ws.set_temperature(sp.temperature);
  ws.set_top_k(sp.top_k);
  ws.set_top_p(sp.top_p);
  ws.set_min_p(sp.min_p);
  ws.set_repetition_penalty(sp.repetition_penalty);
  ws.set_presence_penalty(sp.presence_penalty);
  ws.set_frequency_penalty(sp.frequency_penalty);
  ws.set_seed(p.seed);
  for (const auto& [token, bias] : sp.logit_bias) (*ws.mutable_logit_bias())[token] = bias;

  // Stopping.
  const v1::StoppingCriteria& st = request.stopping();
  int64_t max_tokens;
  if (st.has_max_tokens()) {
    max_tokens = st.max_tokens();
    if (max_tokens < 1) return FieldError("stopping.max_tokens", "must be at least 1");
    if (n_prompt + max_tokens > limits.slot_context) {
      return FieldError(
          "stopping.max_tokens",
          absl::StrCat("the prompt (", n_prompt, " tokens) plus max_tokens (", max_tokens,
                       ") exceeds ", kContextSizePhrase, " of ", limits.slot_context, " tokens"));
    }
  } else {
    max_tokens = std::min<int64_t>(limits.default_max_tokens, limits.slot_context - n_prompt);
  }
  w.set_max_tokens(static_cast<int32_t>(max_tokens));
  if (st.stop_size() > limits.max_stop_strings) {
    return FieldError("stopping.stop",
                      absl::StrCat("at most ", limits.max_stop_strings, " strings"));
  }
  for (int k = 0; k < st.stop_size(); ++k) {
    const std::string field = absl::StrCat("stopping.stop[", k, "]");
    if (st.stop(k).empty()) return FieldError(field, "is empty");
    RETURN_IF_ERROR(CheckText(st.stop(k), field));
    if (st.stop(k).size() > limits.max_stop_bytes) {
      return FieldError(field, absl::StrCat("is longer than ", limits.max_stop_bytes, " bytes"));
    }
    p.stop.push_back(st.stop(k));
  }
  RETURN_IF_ERROR(CheckTokenIds(st.stop_token_ids(), "stopping.stop_token_ids", vocab));
  for (int32_t id : st.stop_token_ids()) {
    p.client_stop_ids.insert(id);
    p.stop_ids.insert(id);
  }
  if (!st.ignore_eos()) {
    for (int32_t id : model.eog_ids()) p.stop_ids.insert(id);
  }
  if (st.max_tool_calls() > 0) {
    if (!p.parse_output) {
      return FieldError("stopping.max_tool_calls",
                        "applies to chat input whose output is parsed (not output.raw_text)");
    }
    p.parser_options.max_tool_calls = static_cast<int>(
        std::min<uint32_t>(st.max_tool_calls(), std::numeric_limits<int32_t>::max()));
  }
  if (st.has_max_reasoning_tokens()) {
    if (request.input_case() != v1::GenerateRequest::kChat) {
      return FieldError("stopping.max_reasoning_tokens", "applies to chat input only");
    }
    if (st.max_reasoning_tokens() > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
      return FieldError("stopping.max_reasoning_tokens", "is too large");
    }
    if (p.parser_options.reasoning_open && st.max_reasoning_tokens() > 0) {
      const std::vector<int32_t> end = model.tokenizer().Encode(kReasoningEnd, true);
      if (end.size() != 1) {
        return absl::FailedPreconditionError(
            absl::StrCat("stopping.max_reasoning_tokens: the model's vocabulary has no ",
                         kReasoningEnd, " token"));
      }
      w.set_reasoning_budget(static_cast<int32_t>(st.max_reasoning_tokens()));
      w.set_reasoning_end(end[0]);
      const std::vector<int32_t> close =
          model.tokenizer().Encode(absl::StrCat("\n", kReasoningEnd, "\n\n"), true);
      w.mutable_reasoning_close()->Assign(close.begin(), close.end());
    }
  }
  std::vector<int32_t> stop_ids(p.stop_ids.begin(), p.stop_ids.end());
  std::sort(stop_ids.begin(), stop_ids.end());
  w.mutable_stop_token_ids()->Assign(stop_ids.begin(), stop_ids.end());

  // Output.
  const v1::OutputOptions& o = request.output();
  if (o.top_logprobs() > static_cast<uint32_t>(limits.max_top_logprobs)) {
    return FieldError("output.top_logprobs", absl::StrCat("at most ", limits.max_top_logprobs));
  }
  if (o.top_logprobs() > 0 && !o.logprobs()) {
    return FieldError("output.top_logprobs", "needs output.logprobs");
  }
  if (o.raw_text() && request.input_case() != v1::GenerateRequest::kChat) {
    return FieldError("output.raw_text", "applies to chat input only");
  }
  p.logprobs = o.logprobs();
  p.top_logprobs = static_cast<int>(o.top_logprobs());
  p.return_token_ids = o.return_token_ids();
  w.set_logprobs(p.logprobs ? p.top_logprobs : -1);
  w.set_no_prefix_cache(request.has_prefix_cache() && !request.prefix_cache());

  // Speculative decoding.
  {
    const v1::SpeculativeOptions& so = request.speculative();
    ASSIGN_OR_RETURN(engine::SpeculativeMode mode,
                     engine::ParseSpeculativeMode(so.mode(), "speculative.mode"));
    if (mode == engine::SpeculativeMode::kMtp && model.config().n_nextn == 0) {
      return FieldError("speculative.mode",
                        "\"mtp\" needs a model file with an MTP head, and this one has none "
                        "(GetModelInfo: capabilities.mtp); use \"auto\" or \"ngram\"");
    }
    if (so.max_draft() > static_cast<uint32_t>(engine::kMaxDraftTokens)) {
      return FieldError("speculative.max_draft", absl::StrCat("at most ", engine::kMaxDraftTokens));
    }
    w.set_speculative(std::string(engine::SpeculativeModeName(mode)));
    w.set_max_draft(static_cast<int32_t>(so.max_draft()));
  }

  // Structured output: checked here (so that a bad format fails before any work, naming the
  // construct) and compiled again by the worker for the vocabulary.
  if (request.has_response_format()) {
    const v1::ResponseFormat& rf = request.response_format();
    worker::v1::Constraint& c = *w.mutable_constraint();
    grammar::ConstraintSpec spec;
    std::string field = "response_format";
    switch (rf.format_case()) {
      case v1::ResponseFormat::kJsonSchema:
        field = "response_format.json_schema";
        RETURN_IF_ERROR(CheckText(rf.json_schema(), field));
        spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
        spec.text = rf.json_schema();
        c.set_kind(worker::v1::Constraint::KIND_JSON_SCHEMA);
        break;
      case v1::ResponseFormat::kJsonSchemaStruct:
        field = "response_format.json_schema_struct";
        spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
        spec.text = StructToJson(rf.json_schema_struct()).dump();
        c.set_kind(worker::v1::Constraint::KIND_JSON_SCHEMA);
        break;
      case v1::ResponseFormat::kRegex:
        field = "response_format.regex";
        RETURN_IF_ERROR(CheckText(rf.regex(), field));
        if (rf.regex().empty()) return FieldError(field, "is empty");
        spec.kind = grammar::ConstraintSpec::Kind::kRegex;
        spec.text = rf.regex();
        c.set_kind(worker::v1::Constraint::KIND_REGEX);
        break;
      case v1::ResponseFormat::kChoices:
        field = "response_format.choices";
        for (int k = 0; k < rf.choices().choices_size(); ++k) {
          RETURN_IF_ERROR(
              CheckText(rf.choices().choices(k), absl::StrCat(field, ".choices[", k, "]")));
          spec.choices.push_back(rf.choices().choices(k));
        }
        spec.kind = grammar::ConstraintSpec::Kind::kChoices;
        c.set_kind(worker::v1::Constraint::KIND_CHOICES);
        break;
      case v1::ResponseFormat::kGrammar:
        field = "response_format.grammar";
        RETURN_IF_ERROR(CheckText(rf.grammar(), field));
        spec.kind = grammar::ConstraintSpec::Kind::kGrammar;
        spec.text = rf.grammar();
        c.set_kind(worker::v1::Constraint::KIND_GRAMMAR);
        break;
      case v1::ResponseFormat::kToolCalls:
        field = "response_format.tool_calls";
        if (request.input_case() != v1::GenerateRequest::kChat || request.chat().tools().empty()) {
          return FieldError(field, "needs chat input with tools");
        }
        spec.kind = grammar::ConstraintSpec::Kind::kToolCalls;
        spec.tools_json = p.parser_options.tools.dump();
        spec.tool_calls_required = rf.tool_calls().required();
        c.set_kind(worker::v1::Constraint::KIND_TOOL_CALLS);
        break;
      default:
        return FieldError(field,
                          "set one of json_schema, json_schema_struct, regex, choices, "
                          "grammar or tool_calls");
    }
    spec.after_reasoning =
        request.input_case() == v1::GenerateRequest::kChat && p.parser_options.reasoning_open;
    if (absl::StatusOr<grammar::Grammar> g = grammar::BuildGrammar(spec); !g.ok()) {
      return FieldError(field, g.status().message());
    }
    c.set_text(spec.text);
    for (const std::string& choice : spec.choices) c.add_choices(choice);
    c.set_tools_json(spec.tools_json);
    c.set_tool_calls_required(spec.tool_calls_required);
    c.set_after_reasoning(spec.after_reasoning);
  }

  if (forced_output != nullptr) {
    const std::vector<int32_t> forced = model.tokenizer().Encode(*forced_output, true);
    w.mutable_forced_tokens()->Assign(forced.begin(), forced.end());
  }
  return p;
}

bool IsContextLengthError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument &&
         absl::StrContains(status.message(), kContextSizePhrase);
}

}  // namespace qwen::service

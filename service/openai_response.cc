#include "service/openai_response.h"

#include <algorithm>
#include <utility>

namespace qwen::service {
namespace {

OrderedJson Bytes(const std::string& s) {
  OrderedJson b = OrderedJson::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

OrderedJson NullIfEmpty(const std::string& s) { return s.empty() ? OrderedJson() : OrderedJson(s); }

}  // namespace

const char* OpenAIFinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_TOOL_CALLS:
      return "tool_calls";
    default:
      return "stop";
  }
}

OrderedJson ChoiceAccumulator::Logprobs(const v1::GenerateResponse& m) {
  if (m.logprobs().empty()) return OrderedJson();
  OrderedJson content = OrderedJson::array();
  for (const v1::TokenLogprob& l : m.logprobs()) {
    OrderedJson top = OrderedJson::array();
    for (const v1::TopLogprob& t : l.top_logprobs()) {
      top.push_back({{"token", t.token()}, {"logprob", t.logprob()}, {"bytes", Bytes(t.token())}});
    }
    content.push_back({{"token", l.token()},
                       {"logprob", l.logprob()},
                       {"bytes", Bytes(l.token_bytes())},
                       {"top_logprobs", std::move(top)}});
  }
  return OrderedJson{{"content", std::move(content)}};
}

int ChoiceAccumulator::StartedCall(const std::string& id) const {
  for (size_t k = 0; k < tool_calls_.size(); ++k) {
    if (tool_calls_[k]["id"] == id) return static_cast<int>(k);
  }
  return -1;
}

OrderedJson ChoiceAccumulator::Add(const v1::GenerateResponse& m) {
  OrderedJson delta = OrderedJson::object();
  if (!m.reasoning().empty()) {
    reasoning_ += m.reasoning();
    delta["reasoning_content"] = m.reasoning();
  }
  std::string text = m.text();
  OrderedJson calls = OrderedJson::array();
  // Calls as they are written: the first entry of a call has its id, type and name with empty
  // arguments, the next ones only the index and a fragment (as OpenAI streams them).
  for (const v1::ToolCallDelta& d : m.tool_call_deltas()) {
    if (!d.id().empty()) {
      const int index = static_cast<int>(tool_calls_.size());
      streaming_[d.index()] = index;
      tool_calls_.push_back({{"id", d.id()},
                             {"type", "function"},
                             {"function", {{"name", d.name()}, {"arguments", d.arguments()}}}});
      calls.push_back({{"index", index},
                       {"id", d.id()},
                       {"type", "function"},
                       {"function", {{"name", d.name()}, {"arguments", d.arguments()}}}});
      continue;
    }
    const auto it = streaming_.find(d.index());
    if (it == streaming_.end() || d.arguments().empty()) continue;
    tool_calls_[it->second]["function"]["arguments"] =
        tool_calls_[it->second]["function"]["arguments"].get<std::string>() + d.arguments();
    calls.push_back({{"index", it->second}, {"function", {{"arguments", d.arguments()}}}});
  }
  for (const v1::ToolCall& c : m.tool_calls()) {
    // A streamed call is already whole in tool_calls_: its arguments are the fragments, also
    // when it went wrong after it started (the client may have acted on it; see
    // docs/api.md).
    if (StartedCall(c.id()) >= 0) continue;
    if (!c.error().empty()) {
      // A call the model did not write well enough to be read: its text is content (as
      // llama-server and vLLM return it), not a call the client would run.
      text += c.raw();
      continue;
    }
    // A producer that does not stream calls: the call at once.
    const int index = static_cast<int>(tool_calls_.size());
    OrderedJson whole = {{"id", c.id()},
                         {"type", "function"},
                         {"function", {{"name", c.name()}, {"arguments", c.arguments()}}}};
    tool_calls_.push_back(whole);
    whole["index"] = index;
    calls.push_back(std::move(whole));
  }
  if (!text.empty()) {
    content_ += text;
    delta["content"] = text;
  }
  if (!calls.empty()) delta["tool_calls"] = std::move(calls);
  for (const v1::TokenLogprob& l : m.logprobs()) {
    OrderedJson one = Logprobs([&] {
      v1::GenerateResponse single;
      *single.add_logprobs() = l;
      return single;
    }());
    logprobs_.push_back(std::move(one["content"][0]));
  }
  if (m.has_completion()) {
    has_completion_ = true;
    completion_ = m.completion();
  }
  return delta;
}

OrderedJson ChoiceAccumulator::Choice(int index, bool logprobs) const {
  OrderedJson message = {{"role", "assistant"}, {"content", NullIfEmpty(content_)}};
  if (!reasoning_.empty()) message["reasoning_content"] = reasoning_;
  if (!tool_calls_.empty()) message["tool_calls"] = tool_calls_;
  OrderedJson lp;
  if (logprobs) lp = OrderedJson{{"content", logprobs_}};
  const char* reason = OpenAIFinishReason(completion_.finish_reason());
  return OrderedJson{{"index", index},
                     {"message", std::move(message)},
                     {"logprobs", std::move(lp)},
                     {"finish_reason", reason}};
}

OrderedJson ChunkObject(const CompletionHeader& h, OrderedJson choices) {
  return OrderedJson{
      {"id", h.id},       {"object", "chat.completion.chunk"},  {"created", h.created},
      {"model", h.model}, {"system_fingerprint", "qwen-serve"}, {"choices", std::move(choices)}};
}

OrderedJson ChunkChoice(int index, OrderedJson delta, OrderedJson logprobs,
                        const char* finish_reason) {
  return OrderedJson{
      {"index", index},
      {"delta", std::move(delta)},
      {"logprobs", std::move(logprobs)},
      {"finish_reason", finish_reason == nullptr ? OrderedJson() : OrderedJson(finish_reason)}};
}

OrderedJson UsageObject(const std::vector<const v1::Completion*>& completions,
                        int choices_per_prompt) {
  const size_t group = choices_per_prompt > 0 ? static_cast<size_t>(choices_per_prompt)
                                              : std::max<size_t>(1, completions.size());
  uint64_t prompt = 0, generated = 0, cached = 0;
  for (size_t k = 0; k < completions.size(); ++k) {
    const v1::Usage& u = completions[k]->usage();
    // The choices of a prompt share it: counted once, as OpenAI does.
    if (k % group == 0) {
      prompt += u.prompt_tokens();
      cached += u.cached_tokens();
    }
    generated += u.generated_tokens();
  }
  return OrderedJson{{"prompt_tokens", prompt},
                     {"completion_tokens", generated},
                     {"total_tokens", prompt + generated},
                     {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

std::string TextChoiceAccumulator::Add(const v1::GenerateResponse& m) {
  const size_t offset = text_.size();
  text_ += m.text();
  if (!m.logprobs().empty()) {
    OrderedJson lp = Logprobs(m, offset);
    for (auto& t : lp["tokens"]) tokens_.push_back(std::move(t));
    for (auto& t : lp["token_logprobs"]) token_logprobs_.push_back(std::move(t));
    for (auto& t : lp["top_logprobs"]) top_logprobs_.push_back(std::move(t));
    for (auto& t : lp["text_offset"]) text_offset_.push_back(std::move(t));
  }
  if (m.has_completion()) {
    has_completion_ = true;
    completion_ = m.completion();
  }
  return m.text();
}

OrderedJson TextChoiceAccumulator::Logprobs(const v1::GenerateResponse& m, size_t offset) {
  OrderedJson tokens = OrderedJson::array(), lps = OrderedJson::array(),
              tops = OrderedJson::array(), offsets = OrderedJson::array();
  for (const v1::TokenLogprob& l : m.logprobs()) {
    tokens.push_back(l.token());
    lps.push_back(l.logprob());
    OrderedJson top = OrderedJson::object();
    for (const v1::TopLogprob& t : l.top_logprobs()) top[t.token()] = t.logprob();
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += l.token_bytes().size();
  }
  return OrderedJson{{"tokens", std::move(tokens)},
                     {"token_logprobs", std::move(lps)},
                     {"top_logprobs", std::move(tops)},
                     {"text_offset", std::move(offsets)}};
}

OrderedJson TextChoiceAccumulator::Choice(int index, bool logprobs) const {
  OrderedJson lp;
  if (logprobs) {
    lp = OrderedJson{{"tokens", tokens_},
                     {"token_logprobs", token_logprobs_},
                     {"top_logprobs", top_logprobs_},
                     {"text_offset", text_offset_}};
  }
  return OrderedJson{{"text", text_},
                     {"index", index},
                     {"logprobs", std::move(lp)},
                     {"finish_reason", OpenAIFinishReason(completion_.finish_reason())}};
}

OrderedJson TextChunkObject(const CompletionHeader& h, OrderedJson choices) {
  return OrderedJson{
      {"id", h.id},       {"object", "text_completion"},        {"created", h.created},
      {"model", h.model}, {"system_fingerprint", "qwen-serve"}, {"choices", std::move(choices)}};
}

OrderedJson CompletionObject(const CompletionHeader& h, const std::vector<OrderedJson>& choices,
                             const std::vector<const v1::Completion*>& completions,
                             const char* object, int choices_per_prompt) {
  return OrderedJson{{"id", h.id},
                     {"object", object},
                     {"created", h.created},
                     {"model", h.model},
                     {"system_fingerprint", "qwen-serve"},
                     {"choices", choices},
                     {"usage", UsageObject(completions, choices_per_prompt)}};
}

OrderedJson ErrorObject(const std::string& message, const std::string& type,
                        const std::string& param, const std::string& code) {
  return OrderedJson{{"error",
                      {{"message", message},
                       {"type", type},
                       {"param", NullIfEmpty(param)},
                       {"code", NullIfEmpty(code)}}}};
}

}  // namespace qwen::service

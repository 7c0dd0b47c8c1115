// qwen.v1 Generate responses written as OpenAI's Chat Completions objects: the streamed
// chat.completion.chunk objects and the whole chat.completion. Pure functions and a small
// accumulator; no server in them.
#ifndef QWEN_SERVICE_OPENAI_RESPONSE_H_
#define QWEN_SERVICE_OPENAI_RESPONSE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.pb.h"

namespace qwen::service {

using OrderedJson = nlohmann::ordered_json;

// "stop" (end of generation, a stop string or stop token), "length", "tool_calls"; a stream the
// server gave up on is "stop" too (the error follows).
const char* OpenAIFinishReason(v1::FinishReason reason);

// What identifies one response: "chatcmpl-<request id>", its creation time and the model id.
struct CompletionHeader {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// One choice of a response, accumulated from its stream of GenerateResponse messages.
// Not thread-safe.
class ChoiceAccumulator {
 public:
  // Adds a message; returns its delta as OpenAI's stream shows it ({"content": ...,
  // "reasoning_content": ..., "tool_calls": [...]}), empty when it carries nothing visible.
  // Streamed calls (GenerateResponse.tool_call_deltas) come as OpenAI streams them: an entry
  // with index, id, type and name and "" arguments, then entries of the index and a fragment;
  // the whole call that follows adds nothing. A call that went wrong after it started stays a
  // call with the arguments streamed; one that never started and has an error is content
  // (its raw text), as llama-server and vLLM show it.
  OrderedJson Add(const v1::GenerateResponse& m);
  // The "logprobs" object of this message's tokens ({"content": [...]}), null when none.
  static OrderedJson Logprobs(const v1::GenerateResponse& m);

  bool finished() const { return has_completion_; }
  const v1::Completion& completion() const { return completion_; }
  // The whole choice of a non-streamed response.
  OrderedJson Choice(int index, bool logprobs) const;

 private:
  // The position in tool_calls_ of a started call of this id, or -1.
  int StartedCall(const std::string& id) const;

  std::map<uint32_t, int> streaming_;  // ToolCallDelta.index -> position in tool_calls_
  std::string content_;
  std::string reasoning_;
  OrderedJson tool_calls_ = OrderedJson::array();
  OrderedJson logprobs_ = OrderedJson::array();
  bool has_completion_ = false;
  v1::Completion completion_;
};

// One choice of a text completion (/v1/completions). Not thread-safe.
class TextChoiceAccumulator {
 public:
  // `echo`: the prompt's text, which the choice's text starts with ("" : none).
  explicit TextChoiceAccumulator(std::string echo = "") : text_(std::move(echo)) {}

  // Adds a message; returns the text it adds.
  std::string Add(const v1::GenerateResponse& m);
  // The legacy "logprobs" object ({"tokens", "token_logprobs", "top_logprobs",
  // "text_offset"}) of the tokens of `m`, whose text starts at `offset` of the choice's text.
  static OrderedJson Logprobs(const v1::GenerateResponse& m, size_t offset);

  bool finished() const { return has_completion_; }
  const v1::Completion& completion() const { return completion_; }
  size_t text_size() const { return text_.size(); }
  OrderedJson Choice(int index, bool logprobs) const;

 private:
  std::string text_;
  OrderedJson tokens_ = OrderedJson::array();
  OrderedJson token_logprobs_ = OrderedJson::array();
  OrderedJson top_logprobs_ = OrderedJson::array();
  OrderedJson text_offset_ = OrderedJson::array();
  bool has_completion_ = false;
  v1::Completion completion_;
};

// {"id", "object": "chat.completion.chunk", "created", "model", "choices": [...]}.
OrderedJson ChunkObject(const CompletionHeader& h, OrderedJson choices);
// One entry of a chunk's choices.
OrderedJson ChunkChoice(int index, OrderedJson delta, OrderedJson logprobs,
                        const char* finish_reason);
// OpenAI's usage object over all choices; consecutive groups of `choices_per_prompt` share a
// prompt, counted once (0: all share one).
OrderedJson UsageObject(const std::vector<const v1::Completion*>& completions,
                        int choices_per_prompt = 0);
// The whole non-streamed chat.completion (`object` "text_completion" for /v1/completions,
// whose chunks are of that object too).
OrderedJson CompletionObject(const CompletionHeader& h, const std::vector<OrderedJson>& choices,
                             const std::vector<const v1::Completion*>& completions,
                             const char* object = "chat.completion", int choices_per_prompt = 0);
OrderedJson TextChunkObject(const CompletionHeader& h, OrderedJson choices);

// {"error": {"message", "type", "param", "code"}}: OpenAI's error object.
OrderedJson ErrorObject(const std::string& message, const std::string& type,
                        const std::string& param, const std::string& code);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_OPENAI_RESPONSE_H_

// Anthropic's Messages API request body (POST /v1/messages, JSON) turned into a qwen.v1
// GenerateRequest, for agent tools that speak it. As with OpenAI's bodies
// (openai_request.h), only the shape is checked here; PrepareGenerate does the rest.
//
// Pure functions, thread-safe, no server in them.
#ifndef QWEN_SERVICE_ANTHROPIC_REQUEST_H_
#define QWEN_SERVICE_ANTHROPIC_REQUEST_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qwen/v1/qwen.pb.h"

namespace qwen::service {

struct AnthropicMessagesRequest {
  v1::GenerateRequest request;
  std::string model;  // empty when absent
  bool stream = false;
};

// Parses and checks a /v1/messages body: `system` (a string or text blocks), `messages`
// (user/assistant; content a string or blocks: text, image (base64 source), tool_use,
// tool_result, thinking), `max_tokens`, `stop_sequences`, `temperature`, `top_p`, `top_k`,
// `tools` ({name, description, input_schema}), `tool_choice` (auto, any, tool, none;
// disable_parallel_tool_use: request.stopping.max_tool_calls 1),
// `thinking` ({"type": "enabled", "budget_tokens"}: the reasoning budget; "disabled": thinking
// off), `stream`, `metadata`. INVALID_ARGUMENT "<param>: <why>" in OpenAIParamOf's spelling
// ("messages[1].content[0].input").
absl::StatusOr<AnthropicMessagesRequest> ParseMessagesRequest(absl::string_view body);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_ANTHROPIC_REQUEST_H_

// OpenAI's Chat Completions request body (JSON) turned into a qwen.v1 GenerateRequest, so that
// the HTTP front end runs the same validation, admission and workers as gRPC. Only the shape
// is checked here (types, ranges that are OpenAI's own, which fields exist); everything the
// gRPC API checks too (sampling ranges, context size, tools, schemas) is left to
// PrepareGenerate, and its errors are translated back to OpenAI's parameter names by
// OpenAIParamOf().
//
// Pure functions of their input, thread-safe, no server in them (the request fuzzer links them).
#ifndef QWEN_SERVICE_OPENAI_REQUEST_H_
#define QWEN_SERVICE_OPENAI_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qwen/v1/qwen.pb.h"

namespace qwen::service {

// At most this many choices (`n`) per request: each is a stream of its own on the workers.
inline constexpr int kMaxChoices = 8;

// The reasoning budgets (max_reasoning_tokens) of OpenAI's reasoning_effort: none and minimal
// are 0 (thinking off); low, medium and high these. -1 for another word.
inline constexpr int64_t kReasoningBudgetLow = 1024;
inline constexpr int64_t kReasoningBudgetMedium = 4096;
inline constexpr int64_t kReasoningBudgetHigh = 16384;
int64_t ReasoningEffortBudget(absl::string_view effort);

struct OpenAIChatRequest {
  v1::GenerateRequest request;  // what every choice runs (choice k adds k to a given seed)
  std::string model;            // as the client named it; empty when absent
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  bool logprobs = false;
  // parallel_tool_calls: false ends each choice after its first tool call
  // (request.stopping.max_tool_calls 1).
  bool parallel_tool_calls = true;
};

// Parses and checks a /v1/chat/completions body. INVALID_ARGUMENT "<param>: <why>", the param
// in OpenAI's spelling ("messages[1].content[0].image_url.url: ..."); a body that is not JSON
// names the byte offset of the error ("the body is not valid JSON: ... at byte 17 ...").
absl::StatusOr<OpenAIChatRequest> ParseChatCompletionRequest(absl::string_view body);

// OpenAI's legacy Completions request (/v1/completions): one prompt or a batch, as text or as
// token ids.
struct OpenAICompletionRequest {
  // One request per prompt and choice: choice k of prompt p is requests[p * n + k], index
  // p * n + k in the response.
  std::vector<v1::GenerateRequest> requests;
  int prompts = 1;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  int n = 1;
  int logprobs = -1;  // -1: none; k: the chosen token's and k alternatives
  bool echo = false;  // the prompt's text comes first in each choice's text
};

// Parses and checks a /v1/completions body; errors as ParseChatCompletionRequest's. At most
// kMaxChoices prompts x n.
absl::StatusOr<OpenAICompletionRequest> ParseCompletionRequest(absl::string_view body);

// `n` copies of a request, one per choice; with a seed, choice k gets seed + k (else each gets
// its own random seed).
std::vector<v1::GenerateRequest> ExpandChoices(const v1::GenerateRequest& base, int n);

// The parameter an INVALID_ARGUMENT error is about, in OpenAI's spelling, and the message with
// that spelling: "stopping.max_tokens: ..." (from PrepareGenerate) -> "max_tokens". Empty param
// when the message names no field.
struct OpenAIParamError {
  std::string param;
  std::string message;
};
OpenAIParamError OpenAIParamOf(absl::string_view message);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_OPENAI_REQUEST_H_

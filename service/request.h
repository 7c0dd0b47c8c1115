// Turning a public Generate request (qwen.v1) into what the workers run, with validation. Its
// parts live beside it: chat_request.h (chats, tools), request_images.h (images),
// request_videos.h (videos), tool_schema.h, struct_json.h and field_checks.h; this header
// includes them for its users.
#ifndef QWEN_SERVICE_REQUEST_H_
#define QWEN_SERVICE_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/chat/output_parser.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.pb.h"
#include "qwen/worker/v1/worker.pb.h"
#include "service/chat_request.h"
#include "service/field_checks.h"
#include "service/request_images.h"
#include "service/request_videos.h"
#include "service/struct_json.h"
#include "service/text_model.h"
#include "service/tool_schema.h"

namespace qwen::service {

// Limits of this server that requests are checked against.
struct RequestLimits {
  int64_t slot_context = 4096;       // prompt + generated tokens per sequence
  int32_t default_max_tokens = 256;  // when the request does not say
  int max_stop_strings = 16;         // --max_stop_strings
  size_t max_stop_bytes = 256;
  int max_top_logprobs = 20;
  int max_tools = kDefaultMaxTools;  // --max_tools: tools of one chat
};

// A validated Generate request, ready to dispatch.
struct PreparedGenerate {
  std::string request_id;
  // What the worker runs (prompt ids, sampling with the seed filled in, stop ids, logprobs).
  worker::v1::GenerateRequest worker_request;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  // The request's own stop_token_ids (generation ending on one is STOP_TOKEN, not EOS).
  absl::flat_hash_set<int32_t> client_stop_ids;
  // Every token that ends generation (end-of-generation unless ignore_eos, and the client's).
  absl::flat_hash_set<int32_t> stop_ids;
  // Chat input whose output is split into reasoning, content and tool calls.
  bool parse_output = false;
  chat::OutputParserOptions parser_options;
  bool return_token_ids = false;
  bool logprobs = false;
  int top_logprobs = 0;
  int32_t prompt_tokens = 0;
  int32_t image_tokens = 0;  // of prompt_tokens
  int32_t video_tokens = 0;  // of prompt_tokens
};

// Checks a Generate request and prepares it. INVALID_ARGUMENT with a message that starts with
// the path of the offending field ("sampling.top_p: must be in (0, 1]"). `forced_output`, when
// not null, is text whose tokens the worker emits in place of sampled ones (testing only; the
// caller decides whether it is allowed). `request_number` names requests without a client id.
absl::StatusOr<PreparedGenerate> PrepareGenerate(const v1::GenerateRequest& request,
                                                 const TextModel& model,
                                                 const RequestLimits& limits,
                                                 uint64_t request_number,
                                                 const std::string* forced_output = nullptr);

// Whether PrepareGenerate refused the request because its prompt, or its prompt plus
// max_tokens, does not fit the context (HTTP clients get code "context_length_exceeded", which
// agents read to compact their history). Thread-safe.
bool IsContextLengthError(const absl::Status& status);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REQUEST_H_

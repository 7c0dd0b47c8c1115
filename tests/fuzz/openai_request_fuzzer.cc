// The HTTP API's request parsing on arbitrary bodies: every body goes through the OpenAI chat and
// text completion parsers (service/openai_request.h) and Anthropic's Messages parser
// (service/anthropic_request.h), each followed by the gRPC validation the HTTP front end hands
// them to (PrepareGenerate with the tiny model's tokenizer and chat template). A body must be
// refused with INVALID_ARGUMENT (or FAILED_PRECONDITION, for images on a server without a vision
// tower: both are HTTP 400) whose OpenAI parameter, when it names one, starts the message; or
// accepted with n, logprobs and the prepared request within their limits. Never a crash, a
// sanitizer report or another status code.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/anthropic_request.h"
#include "service/openai_request.h"
#include "service/request.h"
#include "service/text_model.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const qwen::service::TextModel* model;

void CheckError(const absl::Status& status) {
  using qwen::fuzz::Fail;
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kFailedPrecondition) {
    Fail(absl::StrCat("not INVALID_ARGUMENT: ", status.ToString()));
  }
  const qwen::service::OpenAIParamError e = qwen::service::OpenAIParamOf(status.message());
  if (!e.param.empty() && !absl::StartsWith(e.message, e.param + ": ")) {
    Fail(absl::StrCat("param \"", e.param, "\" does not start \"", e.message, "\""));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  auto m = qwen::service::TextModel::Load(qwen::fuzz::DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  if (!m.ok()) qwen::fuzz::Fail(m.status().ToString());
  model = m->release();
  return 0;
}

void Prepare(const qwen::v1::GenerateRequest& request) {
  using qwen::fuzz::Fail;
  qwen::service::RequestLimits limits;
  limits.slot_context = 512;
  limits.default_max_tokens = 64;
  auto prepared = qwen::service::PrepareGenerate(request, *model, limits, 1);
  if (!prepared.ok()) {
    CheckError(prepared.status());
    return;
  }
  const auto& w = prepared->worker_request;
  if (w.prompt_size() == 0) Fail("accepted with an empty prompt");
  if (w.prompt_size() + int64_t{w.max_tokens()} > limits.slot_context) Fail("over the context");
  if (prepared->top_logprobs > limits.max_top_logprobs) Fail("top_logprobs over the limit");
  if (w.has_reasoning_budget() && w.reasoning_close().empty()) Fail("a budget without its close");
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qwen::fuzz::Fail;
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto chat = qwen::service::ParseChatCompletionRequest(body);
  if (!chat.ok()) {
    CheckError(chat.status());
  } else {
    if (chat->n < 1 || chat->n > qwen::service::kMaxChoices) Fail("n outside [1, 8]");
    if (chat->include_usage && !chat->stream) Fail("include_usage without stream");
    if (!chat->request.has_chat()) Fail("not a chat");
    Prepare(chat->request);
  }
  auto text = qwen::service::ParseCompletionRequest(body);
  if (!text.ok()) {
    CheckError(text.status());
  } else {
    if (text->requests.empty() ||
        text->requests.size() != static_cast<size_t>(text->prompts * text->n) ||
        text->requests.size() > static_cast<size_t>(qwen::service::kMaxChoices)) {
      Fail("requests are not prompts x n, or too many");
    }
    Prepare(text->requests[0]);
  }
  auto messages = qwen::service::ParseMessagesRequest(body);
  if (!messages.ok()) {
    CheckError(messages.status());
  } else {
    Prepare(messages->request);
  }
  return 0;
}

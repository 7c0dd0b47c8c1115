// Request validation of the gRPC service (service/request.h PrepareGenerate) on arbitrary
// requests, with the tiny model's tokenizer and chat template. The first byte picks the
// encoding of the rest: even, protobuf JSON (what grpcurl and the README send; the dictionary
// has the field names); odd, the binary wire format. Every request must be refused with
// INVALID_ARGUMENT or accepted with its limits respected: a non-empty prompt of ids inside the
// vocabulary, prompt + max_tokens within the context, stop ids inside the vocabulary, at most
// the allowed stop strings and top log-probabilities. Never a crash or another status code.
#include <google/protobuf/util/json_util.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "qwen/v1/qwen.pb.h"
#include "service/request.h"
#include "service/text_model.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const qwen::service::TextModel* model;

qwen::service::RequestLimits Limits() {
  qwen::service::RequestLimits l;
  l.slot_context = 512;
  l.default_max_tokens = 64;
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  auto m = qwen::service::TextModel::Load(qwen::fuzz::DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  if (!m.ok()) qwen::fuzz::Fail(m.status().ToString());
  model = m->release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qwen::fuzz::Fail;
  if (size == 0) return 0;
  qwen::v1::GenerateRequest request;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    if (!google::protobuf::util::JsonStringToMessage(rest, &request).ok()) return 0;
  } else if (!request.ParseFromString(rest)) {
    return 0;
  }
  const qwen::service::RequestLimits limits = Limits();
  auto prepared = qwen::service::PrepareGenerate(request, *model, limits, 1);
  if (!prepared.ok()) {
    if (prepared.status().code() != absl::StatusCode::kInvalidArgument) {
      Fail(absl::StrCat("not INVALID_ARGUMENT: ", prepared.status().ToString()));
    }
    return 0;
  }
  const auto& w = prepared->worker_request;
  const int32_t vocab = model->vocab_size();
  if (w.prompt_size() == 0) Fail("accepted with an empty prompt");
  for (int32_t id : w.prompt()) {
    if (id < 0 || id >= vocab) Fail(absl::StrCat("prompt id ", id, " outside the vocabulary"));
  }
  if (prepared->prompt_tokens != w.prompt_size()) Fail("prompt_tokens differs from the prompt");
  if (w.max_tokens() < 1 || w.prompt_size() + int64_t{w.max_tokens()} > limits.slot_context) {
    Fail(absl::StrCat("prompt ", w.prompt_size(), " + max_tokens ", w.max_tokens(),
                      " outside the context of ", limits.slot_context));
  }
  for (int32_t id : w.stop_token_ids()) {
    if (id < 0 || id >= vocab) Fail(absl::StrCat("stop id ", id, " outside the vocabulary"));
  }
  if (prepared->stop.size() > static_cast<size_t>(limits.max_stop_strings)) {
    Fail("more stop strings than allowed");
  }
  if (prepared->top_logprobs < 0 || prepared->top_logprobs > limits.max_top_logprobs) {
    Fail(absl::StrCat("top_logprobs ", prepared->top_logprobs));
  }
  return 0;
}

#include "service/http_shapes.h"

#include <map>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "service/grpc_status.h"
#include "service/openai_request.h"
#include "service/request.h"

namespace qwen::service {

std::string Dump(const OrderedJson& j) {
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

void SendJson(httplib::Response& res, int status, const OrderedJson& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

// The OpenAI error object of a status, with the HTTP status that matches its code
// (ToHttpError, the one mapping).
void SendStatusError(httplib::Response& res, const absl::Status& status) {
  const HttpError e = ToHttpError(status.code());
  std::string param, message(status.message()), code;
  if (status.code() == absl::StatusCode::kInvalidArgument ||
      status.code() == absl::StatusCode::kFailedPrecondition) {
    OpenAIParamError p = OpenAIParamOf(status.message());
    param = std::move(p.param);
    message = std::move(p.message);
    if (IsContextLengthError(status)) code = "context_length_exceeded";
  }
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    res.set_header("Retry-After", kRetryAfterSeconds);
    code = "queue_full";
  }
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    res.set_header("WWW-Authenticate", "Bearer");
    code = "invalid_api_key";
  }
  SendJson(res, e.status, ErrorObject(message, e.type, param, code));
}

// Anthropic's error object, {"type": "error", "error": {"type", "message"}}, with the HTTP
// status of the code (ToHttpError) and Anthropic's names of the types.
OrderedJson AnthropicErrorObject(const absl::Status& status, int* http_status) {
  const HttpError e = ToHttpError(status.code());
  std::string type;
  switch (e.status) {
    case 400:
      type = "invalid_request_error";
      break;
    case 401:
      type = "authentication_error";
      break;
    case 403:
      type = "permission_error";
      break;
    case 404:
      type = "not_found_error";
      break;
    case 413:
      type = "request_too_large";
      break;
    case 429:
      type = "rate_limit_error";
      break;
    case 503:
      type = "overloaded_error";
      break;
    default:
      type = "api_error";
  }
  if (http_status != nullptr) *http_status = e.status;
  return OrderedJson{{"type", "error"},
                     {"error", {{"type", type}, {"message", std::string(status.message())}}}};
}

void SendAnthropicError(httplib::Response& r, const absl::Status& status) {
  int http_status = 500;
  OrderedJson body = AnthropicErrorObject(status, &http_status);
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    r.set_header("Retry-After", kRetryAfterSeconds);
  }
  SendJson(r, http_status, body);
}

std::vector<OrderedJson> Shape::Events(int choice, const v1::GenerateResponse& m) {
  OrderedJson c = Chunk(choice, m);
  if (c.is_null()) return {};
  return {std::move(c)};
}

std::vector<OrderedJson> Shape::Ending(bool include_usage) {
  if (!include_usage) return {};
  return {UsageChunk()};
}

std::string Shape::Frame(OrderedJson event, bool include_usage) const {
  if (include_usage && !event.contains("usage")) event["usage"] = nullptr;
  return absl::StrCat("data: ", Dump(event), "\n\n");
}

std::string Shape::ErrorFrame(const absl::Status& error) const {
  const HttpError he = ToHttpError(error.code());
  return absl::StrCat("data: ", Dump(ErrorObject(std::string(error.message()), he.type, "", "")),
                      "\n\n");
}

namespace {

class ChatShape : public Shape {
 public:
  ChatShape(int n, bool logprobs) : logprobs_(logprobs), choices_(static_cast<size_t>(n)) {}
  std::vector<OrderedJson> Opening() override {
    OrderedJson choices = OrderedJson::array();
    for (size_t k = 0; k < choices_.size(); ++k) {
      choices.push_back(ChunkChoice(static_cast<int>(k), {{"role", "assistant"}, {"content", ""}},
                                    nullptr, nullptr));
    }
    return {ChunkObject(header_, std::move(choices))};
  }
  std::vector<OrderedJson> Events(int choice, const v1::GenerateResponse& m) override {
    OrderedJson delta = choices_[choice].Add(m);
    OrderedJson lp = logprobs_ ? ChoiceAccumulator::Logprobs(m) : OrderedJson();
    OrderedJson calls = OrderedJson::array();
    if (auto it = delta.find("tool_calls"); it != delta.end()) {
      calls = std::move(*it);
      delta.erase(it);
    }
    std::vector<OrderedJson> out;
    if (!delta.empty() || !lp.is_null()) {
      out.push_back(ChunkObject(header_, OrderedJson::array({ChunkChoice(
                                             choice, std::move(delta), std::move(lp), nullptr)})));
    }
    // Each piece of a call in a chunk of its own, as OpenAI sends them: a client sees the
    // arguments grow even when several pieces arrived together.
    for (OrderedJson& call : calls) {
      out.push_back(ChunkObject(
          header_, OrderedJson::array({ChunkChoice(
                       choice, OrderedJson{{"tool_calls", OrderedJson::array({std::move(call)})}},
                       nullptr, nullptr)})));
    }
    return out;
  }
  bool Finished(int choice) const override { return choices_[choice].finished(); }
  OrderedJson Finish(int choice) override {
    OrderedJson last = choices_[choice].Choice(choice, false);
    const std::string reason = last["finish_reason"].get<std::string>();
    return ChunkObject(
        header_,
        OrderedJson::array({ChunkChoice(choice, OrderedJson::object(), nullptr, reason.c_str())}));
  }
  OrderedJson UsageChunk() override {
    OrderedJson chunk = ChunkObject(header_, OrderedJson::array());
    chunk["usage"] = UsageObject(Completions());
    return chunk;
  }
  OrderedJson Whole() override {
    std::vector<OrderedJson> choices;
    for (size_t k = 0; k < choices_.size(); ++k) {
      choices.push_back(choices_[k].Choice(static_cast<int>(k), logprobs_));
    }
    return CompletionObject(header_, choices, Completions());
  }

 private:
  std::string IdPrefix() const override { return "chatcmpl-"; }
  std::vector<const v1::Completion*> Completions() const {
    std::vector<const v1::Completion*> out;
    for (const ChoiceAccumulator& c : choices_) out.push_back(&c.completion());
    return out;
  }
  const bool logprobs_;
  std::vector<ChoiceAccumulator> choices_;
};

class TextShape : public Shape {
 public:
  // `echo[p]`: the text prompt p's choices start with ("" without echo).
  TextShape(const std::vector<std::string>& echo, int n, bool logprobs)
      : n_(n), logprobs_(logprobs) {
    for (const std::string& e : echo) {
      for (int k = 0; k < n; ++k) choices_.emplace_back(e);
    }
    pending_echo_ = echo;
  }
  OrderedJson Chunk(int choice, const v1::GenerateResponse& m) override {
    const size_t offset = choices_[choice].text_size();
    std::string text = choices_[choice].Add(m);
    std::string& echo = pending_echo_[choice / n_];
    if (!echo.empty() && choice % n_ == 0) {
      // The echoed prompt goes out once, with the first text of the prompt's first choice;
      // the others have it in their whole text only.
      text = echo + text;
      echo.clear();
    }
    OrderedJson lp = logprobs_ && !m.logprobs().empty() ? TextChoiceAccumulator::Logprobs(m, offset)
                                                        : OrderedJson();
    if (text.empty() && lp.is_null()) return OrderedJson();
    return TextChunkObject(header_,
                           OrderedJson::array({Choice(choice, text, std::move(lp), nullptr)}));
  }
  bool Finished(int choice) const override { return choices_[choice].finished(); }
  OrderedJson Finish(int choice) override {
    return TextChunkObject(
        header_, OrderedJson::array(
                     {Choice(choice, "", nullptr,
                             OpenAIFinishReason(choices_[choice].completion().finish_reason()))}));
  }
  OrderedJson UsageChunk() override {
    OrderedJson chunk = TextChunkObject(header_, OrderedJson::array());
    chunk["usage"] = UsageObject(Completions(), n_);
    return chunk;
  }
  OrderedJson Whole() override {
    std::vector<OrderedJson> choices;
    for (size_t k = 0; k < choices_.size(); ++k) {
      choices.push_back(choices_[k].Choice(static_cast<int>(k), logprobs_));
    }
    return CompletionObject(header_, choices, Completions(), "text_completion", n_);
  }

 private:
  static OrderedJson Choice(int index, const std::string& text, OrderedJson lp,
                            const char* finish) {
    return OrderedJson{{"text", text},
                       {"index", index},
                       {"logprobs", std::move(lp)},
                       {"finish_reason", finish == nullptr ? OrderedJson() : OrderedJson(finish)}};
  }
  std::string IdPrefix() const override { return "cmpl-"; }
  std::vector<const v1::Completion*> Completions() const {
    std::vector<const v1::Completion*> out;
    for (const TextChoiceAccumulator& c : choices_) out.push_back(&c.completion());
    return out;
  }
  const int n_;
  const bool logprobs_;
  std::vector<TextChoiceAccumulator> choices_;
  std::vector<std::string> pending_echo_;
};

// Anthropic's Messages API: content blocks (thinking, text, tool_use) and their events.
class AnthropicShape : public Shape {
 public:
  std::vector<OrderedJson> Opening() override {
    OrderedJson message = Message(/*whole=*/false);
    return {OrderedJson{{"type", "message_start"}, {"message", std::move(message)}}};
  }
  std::vector<OrderedJson> Events(int, const v1::GenerateResponse& m) override {
    std::vector<OrderedJson> ev;
    if (!m.reasoning().empty()) {
      Open(kThinking, &ev);
      reasoning_ += m.reasoning();
      ev.push_back(Delta({{"type", "thinking_delta"}, {"thinking", m.reasoning()}}));
    }
    // Calls that start in this message (they are tool_use blocks however they end).
    absl::flat_hash_set<std::string> starting;
    for (const v1::ToolCallDelta& d : m.tool_call_deltas()) {
      if (!d.id().empty()) starting.insert(d.id());
    }
    std::string text = m.text();
    std::vector<const v1::ToolCall*> whole;
    for (const v1::ToolCall& c : m.tool_calls()) {
      if (starting.contains(c.id()) || FindCall(c.id()) != nullptr) continue;
      if (!c.error().empty()) {
        text += c.raw();  // not a call the client could run: its text
      } else {
        whole.push_back(&c);
      }
    }
    if (!text.empty()) {
      Open(kText, &ev);
      text_ += text;
      ev.push_back(Delta({{"type", "text_delta"}, {"text", text}}));
    }
    // A streamed call: content_block_start, then its arguments as input_json_delta events.
    for (const v1::ToolCallDelta& d : m.tool_call_deltas()) {
      if (!d.id().empty()) {
        Close(&ev);
        calls_.push_back({d.id(), d.name(), d.arguments()});
        streaming_[d.index()] = calls_.size() - 1;
        block_ = kToolUse;
        open_call_ = d.index();
        ev.push_back({{"type", "content_block_start"},
                      {"index", index_},
                      {"content_block",
                       {{"type", "tool_use"},
                        {"id", d.id()},
                        {"name", d.name()},
                        {"input", OrderedJson::object()}}}});
        continue;
      }
      const auto it = streaming_.find(d.index());
      if (it == streaming_.end() || d.arguments().empty()) continue;
      calls_[it->second].arguments += d.arguments();
      if (block_ == kToolUse && open_call_ == d.index()) {
        ev.push_back(Delta({{"type", "input_json_delta"}, {"partial_json", d.arguments()}}));
      }
    }
    // A streamed call that is complete: its block ends.
    for (const v1::ToolCall& c : m.tool_calls()) {
      const auto it = streaming_.find(open_call_);
      if (block_ == kToolUse && it != streaming_.end() && calls_[it->second].id == c.id()) {
        Close(&ev);
      }
    }
    for (const v1::ToolCall* c : whole) {
      Close(&ev);
      calls_.push_back({c->id(), c->name(), c->arguments()});
      ev.push_back({{"type", "content_block_start"},
                    {"index", index_},
                    {"content_block",
                     {{"type", "tool_use"},
                      {"id", c->id()},
                      {"name", c->name()},
                      {"input", OrderedJson::object()}}}});
      ev.push_back(Delta({{"type", "input_json_delta"}, {"partial_json", c->arguments()}}));
      ev.push_back({{"type", "content_block_stop"}, {"index", index_}});
      ++index_;
    }
    if (m.has_completion()) {
      finished_ = true;
      completion_ = m.completion();
    }
    return ev;
  }
  bool Finished(int) const override { return finished_; }
  std::vector<OrderedJson> FinishEvents(int) override {
    std::vector<OrderedJson> ev;
    Close(&ev);
    ev.push_back({{"type", "message_delta"},
                  {"delta", {{"stop_reason", StopReason()}, {"stop_sequence", StopSequence()}}},
                  {"usage", Usage()}});
    ev.push_back({{"type", "message_stop"}});
    return ev;
  }
  std::vector<OrderedJson> Ending(bool) override { return {}; }
  OrderedJson Whole() override { return Message(/*whole=*/true); }
  std::string Frame(OrderedJson event, bool) const override {
    return absl::StrCat("event: ", event["type"].get<std::string>(), "\ndata: ", Dump(event),
                        "\n\n");
  }
  std::string ErrorFrame(const absl::Status& error) const override {
    return absl::StrCat("event: error\ndata: ", Dump(AnthropicErrorObject(error, nullptr)), "\n\n");
  }
  std::string Closing() const override { return ""; }
  void SendError(httplib::Response& r, const absl::Status& status) const override {
    SendAnthropicError(r, status);
  }

 private:
  enum Block { kNone, kThinking, kText, kToolUse };
  struct Call {
    std::string id;
    std::string name;
    std::string arguments;  // JSON text, as streamed
  };
  std::string IdPrefix() const override { return "msg_"; }

  const Call* FindCall(const std::string& id) const {
    for (const Call& c : calls_) {
      if (c.id == id) return &c;
    }
    return nullptr;
  }
  // A tool_use block's input: its arguments, or, for a call cut off after some parameters
  // (`{"a":1` without its brace), the parameters it has, as Anthropic's SDKs read the partial
  // JSON of such a stream.
  static OrderedJson ParseInput(const std::string& arguments) {
    OrderedJson input = OrderedJson::parse(arguments, nullptr, false);
    if (input.is_discarded()) input = OrderedJson::parse(arguments + "}", nullptr, false);
    if (input.is_discarded() || !input.is_object()) return OrderedJson::object();
    return input;
  }
  OrderedJson Delta(OrderedJson delta) const {
    return OrderedJson{{"type", "content_block_delta"}, {"index", index_}, {"delta", delta}};
  }
  void Open(Block b, std::vector<OrderedJson>* ev) {
    if (block_ == b) return;
    Close(ev);
    block_ = b;
    OrderedJson start = b == kThinking ? OrderedJson{{"type", "thinking"}, {"thinking", ""}}
                                       : OrderedJson{{"type", "text"}, {"text", ""}};
    ev->push_back({{"type", "content_block_start"}, {"index", index_}, {"content_block", start}});
  }
  void Close(std::vector<OrderedJson>* ev) {
    if (block_ == kNone) return;
    ev->push_back({{"type", "content_block_stop"}, {"index", index_}});
    block_ = kNone;
    ++index_;
  }
  const char* StopReason() const {
    switch (completion_.finish_reason()) {
      case v1::FINISH_REASON_LENGTH:
        return "max_tokens";
      case v1::FINISH_REASON_STOP_SEQUENCE:
        return "stop_sequence";
      case v1::FINISH_REASON_TOOL_CALLS:
        return "tool_use";
      default:
        return "end_turn";
    }
  }
  OrderedJson StopSequence() const {
    if (completion_.finish_reason() != v1::FINISH_REASON_STOP_SEQUENCE) return OrderedJson();
    return completion_.stop_sequence();
  }
  OrderedJson Usage() const {
    const v1::Usage& u = completion_.usage();
    return OrderedJson{{"input_tokens", u.prompt_tokens()},
                       {"output_tokens", u.generated_tokens()},
                       {"cache_read_input_tokens", u.cached_tokens()}};
  }
  OrderedJson Message(bool whole) const {
    OrderedJson content = OrderedJson::array();
    if (whole) {
      if (!reasoning_.empty()) {
        content.push_back({{"type", "thinking"}, {"thinking", reasoning_}, {"signature", ""}});
      }
      if (!text_.empty()) content.push_back({{"type", "text"}, {"text", text_}});
      for (const Call& c : calls_) {
        content.push_back({{"type", "tool_use"},
                           {"id", c.id},
                           {"name", c.name},
                           {"input", ParseInput(c.arguments)}});
      }
    }
    return OrderedJson{
        {"id", header_.id},
        {"type", "message"},
        {"role", "assistant"},
        {"model", header_.model},
        {"content", std::move(content)},
        {"stop_reason", whole ? OrderedJson(StopReason()) : OrderedJson()},
        {"stop_sequence", whole ? StopSequence() : OrderedJson()},
        {"usage", whole ? Usage() : OrderedJson{{"input_tokens", 0}, {"output_tokens", 0}}}};
  }

  Block block_ = kNone;
  int index_ = 0;  // of the open block, or the next one
  std::string reasoning_;
  std::string text_;
  std::vector<Call> calls_;
  std::map<uint32_t, size_t> streaming_;  // ToolCallDelta.index -> position in calls_
  uint32_t open_call_ = 0;                // with block_ kToolUse: its ToolCallDelta.index
  bool finished_ = false;
  v1::Completion completion_;
};

}  // namespace

std::unique_ptr<Shape> MakeChatShape(int n, bool logprobs) {
  return std::make_unique<ChatShape>(n, logprobs);
}

std::unique_ptr<Shape> MakeTextShape(const std::vector<std::string>& echo, int n, bool logprobs) {
  return std::make_unique<TextShape>(echo, n, logprobs);
}

std::unique_ptr<Shape> MakeAnthropicShape() { return std::make_unique<AnthropicShape>(); }

}  // namespace qwen::service

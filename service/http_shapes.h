// How the HTTP API writes the answers of its endpoints: OpenAI's chat and text completion
// objects and Anthropic's messages, whole or as Server-Sent Events, and their error responses.
// The HTTP front end (http_front_end.h) feeds a Shape the qwen.v1 Generate messages of a
// request's choices; the Shape says what goes on the wire.
#ifndef QWEN_SERVICE_HTTP_SHAPES_H_
#define QWEN_SERVICE_HTTP_SHAPES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qwen/v1/qwen.pb.h"
#include "service/openai_response.h"

namespace httplib {
struct Response;
}

namespace qwen::service {

// Sent with 429: the queue drains in about a generation's time; clients back off from there.
inline constexpr char kRetryAfterSeconds[] = "1";

// JSON text, invalid UTF-8 (a token's partial bytes) replaced rather than thrown on.
std::string Dump(const OrderedJson& j);
void SendJson(httplib::Response& res, int status, const OrderedJson& body);
// The OpenAI error object of a status, with the HTTP status that matches its code (ToHttpError,
// the one mapping): `param` and the message in OpenAI's spelling for a bad field,
// context_length_exceeded, Retry-After with 429, WWW-Authenticate with 401.
void SendStatusError(httplib::Response& res, const absl::Status& status);
// Anthropic's error object, {"type": "error", "error": {"type", "message"}}, with the HTTP
// status of the code (ToHttpError) and Anthropic's names of the types; *http_status gets it.
OrderedJson AnthropicErrorObject(const absl::Status& status, int* http_status);
void SendAnthropicError(httplib::Response& res, const absl::Status& status);

// One request's answer. Not thread-safe: used by the request's thread only.
class Shape {
 public:
  virtual ~Shape() = default;
  void SetId(const std::string& request_id) { header_.id = IdPrefix() + request_id; }
  CompletionHeader& header() { return header_; }
  // Events before any output (chat: the role of each choice).
  virtual std::vector<OrderedJson> Opening() { return {}; }
  // The events of one message of a choice (none when it shows nothing).
  virtual std::vector<OrderedJson> Events(int choice, const v1::GenerateResponse& m);
  // The events that end a choice once its last message was added.
  virtual std::vector<OrderedJson> FinishEvents(int choice) { return {Finish(choice)}; }
  virtual bool Finished(int choice) const = 0;
  // The events after every choice finished (OpenAI: the usage chunk, when asked for).
  virtual std::vector<OrderedJson> Ending(bool include_usage);
  // The whole non-streamed response.
  virtual OrderedJson Whole() = 0;
  // The framing of the event stream: OpenAI's "data: {...}" events ("usage": null on each
  // chunk with include_usage), an error event, and "data: [DONE]".
  virtual std::string Frame(OrderedJson event, bool include_usage) const;
  virtual std::string ErrorFrame(const absl::Status& error) const;
  virtual std::string Closing() const { return "data: [DONE]\n\n"; }
  // An error answered instead of a response (before any event was sent).
  virtual void SendError(httplib::Response& r, const absl::Status& status) const {
    SendStatusError(r, status);
  }

 protected:
  virtual OrderedJson Chunk(int choice, const v1::GenerateResponse& m) { return OrderedJson(); }
  virtual OrderedJson Finish(int choice) { return OrderedJson(); }
  virtual OrderedJson UsageChunk() { return OrderedJson(); }
  virtual std::string IdPrefix() const = 0;
  CompletionHeader header_;
};

// /v1/chat/completions: `n` choices.
std::unique_ptr<Shape> MakeChatShape(int n, bool logprobs);
// /v1/completions: echo[p] starts the text of prompt p's `n` choices ("": no echo).
std::unique_ptr<Shape> MakeTextShape(const std::vector<std::string>& echo, int n, bool logprobs);
// /v1/messages (one choice).
std::unique_ptr<Shape> MakeAnthropicShape();

}  // namespace qwen::service

#endif  // QWEN_SERVICE_HTTP_SHAPES_H_

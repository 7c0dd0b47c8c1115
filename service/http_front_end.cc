#include "service/http_front_end.h"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "qwen/v1/qwen.grpc.pb.h"
#include "service/anthropic_request.h"
#include "service/generate_call.h"
#include "service/grpc_status.h"
#include "service/http_shapes.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/openai_request.h"
#include "service/openai_response.h"
#include "service/request.h"
#include "service/request_log.h"

namespace qwen::service {
namespace {

constexpr char kComponent[] = "http";
// How often a waiting request looks whether its client closed the connection: well under a
// decode step of the full model.
constexpr absl::Duration kClientPoll = absl::Milliseconds(20);
// The HTTP header of a test's forced output (honoured only with --testing_allow_forced_output,
// like its gRPC metadata).
constexpr char kForcedOutputHeader[] = "X-Qwen-Testing-Forced-Output";
// A deadline for the request, in seconds (the gRPC deadline of the call it becomes).
constexpr char kTimeoutHeader[] = "X-Request-Timeout";

// The socket of the request's connection (the one whose addresses are the request's), to
// notice a client that closes it while its request waits or generates; -1 when not found.
// httplib does not hand handlers their socket; the thread that serves the request keeps it
// open, so the descriptor found stays this connection's while the handler runs.
// The other descriptors it looks at belong to other threads, which may close them meanwhile:
// it only asks the kernel for their addresses (getpeername fails on anything but a connected
// socket, and on a descriptor closed meanwhile), and a match of the peer's address and port
// and our port is this connection, which no other socket can have while it is open. No fstat:
// ThreadSanitizer counts it as a use of the descriptor and reports a race with the other thread's
// close (the metrics exposer's listening socket closed at shutdown).
int FindConnectionSocket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    int fd = 0;
    if (!absl::SimpleAtoi(e->d_name, &fd) || fd == dirfd(dir)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof(peer), local_len = sizeof(local);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      continue;
    }
    if (req.remote_addr != host || std::to_string(req.remote_port) != port) continue;
    if (getnameinfo(reinterpret_cast<sockaddr*>(&local), local_len, nullptr, 0, port, sizeof(port),
                    NI_NUMERICSERV) != 0 ||
        std::to_string(req.local_port) != port) {
      continue;
    }
    found = fd;
    break;
  }
  closedir(dir);
  return found;
}

// The client closed (or reset) its connection. Bytes it sent (a pipelined request) do not count.
bool ClientGone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

// The Generate streams of one HTTP request (one per choice) on the in-process channel, and the
// queue of what they deliver, which the request's own thread consumes. Thread-safe. Owned by
// shared_ptr: each running call holds it until the call is done.
class GenerateStreams : public std::enable_shared_from_this<GenerateStreams> {
 public:
  struct Event {
    int choice = 0;
    bool end = false;              // the stream of `choice` ended with `status`
    v1::GenerateResponse message;  // when !end
    absl::Status status;
  };
  enum class Wait { kEvent, kAllDone, kClientGone };

  struct CallOptions {
    std::vector<std::pair<std::string, std::string>> metadata;
    std::optional<absl::Time> deadline;
    std::string request_id;  // empty: the server names each call
  };

  // Starts one call per request. Requests come in groups of `group` choices of one prompt: the
  // first of a group starts at once and the others when it has produced its first output (or
  // ended), so that the prompt is computed once and the others resume it from the worker's
  // prefix cache (the dispatcher sends a prompt to the worker that holds it).
  static std::shared_ptr<GenerateStreams> Start(v1::Qwen::Stub* stub,
                                                std::vector<v1::GenerateRequest> requests,
                                                const CallOptions& options, int group = 1) {
    auto s = std::shared_ptr<GenerateStreams>(new GenerateStreams());
    s->stub_ = stub;
    s->group_ = std::max(1, group);
    std::vector<std::shared_ptr<Call>> calls;
    for (size_t k = 0; k < requests.size(); ++k) {
      auto call = std::make_shared<Call>(s, static_cast<int>(k));
      call->request = std::move(requests[k]);
      if (!options.request_id.empty()) {
        call->request.set_request_id(k == 0 ? options.request_id
                                            : absl::StrCat(options.request_id, "-", k));
      }
      for (const auto& [key, value] : options.metadata) call->ctx.AddMetadata(key, value);
      if (options.deadline) call->ctx.set_deadline(absl::ToChronoTime(*options.deadline));
      if (s->group_ > 1 && k % s->group_ == 0) call->ctx.AddMetadata(kFirstChoiceMetadata, "1");
      calls.push_back(std::move(call));
    }
    std::vector<std::shared_ptr<Call>> leaders;
    {
      absl::MutexLock lock(&s->mu_);
      s->calls_ = calls;
      s->begun_.assign(calls.size(), false);
      s->running_ = static_cast<int>(calls.size());
      for (size_t k = 0; k < calls.size(); k += s->group_) {
        s->begun_[k] = true;
        leaders.push_back(calls[k]);
      }
    }
    for (auto& call : leaders) call->Begin(stub);
    return s;
  }

  // The next event, waiting for it; kClientGone when the client closed `client_fd` meanwhile
  // (the caller cancels).
  Wait Next(Event* e, int client_fd) {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &GenerateStreams::Ready), kClientPoll);
        if (!events_.empty()) {
          *e = std::move(events_.front());
          events_.pop_front();
          return Wait::kEvent;
        }
        if (running_ == 0) return Wait::kAllDone;
      }
      if (ClientGone(client_fd)) return Wait::kClientGone;
    }
  }

  // Cancels every call still running (their slots are freed within a decode step); calls not
  // started yet end as cancelled without starting.
  void CancelAll() {
    std::vector<std::shared_ptr<Call>> calls;
    {
      absl::MutexLock lock(&mu_);
      for (size_t k = 0; k < calls_.size(); ++k) {
        if (begun_[k]) {
          calls.push_back(calls_[k]);
          continue;
        }
        begun_[k] = true;
        calls_[k]->Abandon();
        Event e;
        e.choice = static_cast<int>(k);
        e.end = true;
        e.status = absl::CancelledError("the request was cancelled");
        events_.push_back(std::move(e));
        --running_;
      }
    }
    for (auto& c : calls) c->ctx.TryCancel();
  }

 private:
  class Call : public grpc::ClientReadReactor<v1::GenerateResponse> {
   public:
    Call(std::shared_ptr<GenerateStreams> owner, int index)
        : owner_(std::move(owner)), index_(index) {}
    void Begin(v1::Qwen::Stub* stub) {
      stub->async()->Generate(&ctx, &request, this);
      StartRead(&response_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;  // OnDone follows
      owner_->Push(index_, std::move(response_));
      response_.Clear();
      StartRead(&response_);
    }
    void OnDone(const grpc::Status& status) override {
      std::shared_ptr<GenerateStreams> owner = std::move(owner_);
      owner->Finished(index_, FromGrpcStatus(status));
    }
    // Never started: drops its reference to the owner (which OnDone would have dropped).
    void Abandon() { owner_.reset(); }

    grpc::ClientContext ctx;
    v1::GenerateRequest request;

   private:
    std::shared_ptr<GenerateStreams> owner_;  // until done
    const int index_;
    v1::GenerateResponse response_;
  };

  GenerateStreams() = default;
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !events_.empty() || running_ == 0;
  }
  void Push(int choice, v1::GenerateResponse m) {
    std::vector<std::shared_ptr<Call>> followers;
    {
      absl::MutexLock lock(&mu_);
      Event e;
      e.choice = choice;
      e.message = std::move(m);
      events_.push_back(std::move(e));
      followers = FollowersLocked(choice);
    }
    for (auto& f : followers) f->Begin(stub_);
  }
  void Finished(int choice, absl::Status status) {
    std::vector<std::shared_ptr<Call>> followers;
    {
      absl::MutexLock lock(&mu_);
      Event e;
      e.choice = choice;
      e.end = true;
      e.status = std::move(status);
      events_.push_back(std::move(e));
      --running_;
      followers = FollowersLocked(choice);
    }
    for (auto& f : followers) f->Begin(stub_);
  }
  // The calls of `choice`'s group that wait for it (it is its group's first), now started.
  std::vector<std::shared_ptr<Call>> FollowersLocked(int choice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::shared_ptr<Call>> out;
    if (choice % group_ != 0) return out;
    for (int k = choice + 1; k < choice + group_ && k < static_cast<int>(calls_.size()); ++k) {
      if (begun_[k]) continue;
      begun_[k] = true;
      out.push_back(calls_[k]);
    }
    return out;
  }

  v1::Qwen::Stub* stub_ = nullptr;
  int group_ = 1;
  absl::Mutex mu_;
  std::vector<bool> begun_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

class HttpFrontEnd::Impl {
 public:
  Impl(const HttpFrontEndOptions& options, std::shared_ptr<grpc::Channel> channel,
       std::function<bool()> serving, std::function<bool()> draining)
      : options_(options),
        stub_(v1::Qwen::NewStub(channel)),
        serving_(std::move(serving)),
        draining_(std::move(draining)),
        created_(absl::ToUnixSeconds(absl::Now())) {}

  void Register(httplib::Server& s) {
    s.Post("/v1/chat/completions", Generating(&Impl::ChatCompletions));
    s.Post("/v1/completions", Generating(&Impl::Completions));
    s.Post("/v1/messages", Generating(&Impl::Messages));
    s.Post("/tokenize",
           [this](const httplib::Request& q, httplib::Response& r) { Tokenize(q, r); });
    s.Post("/detokenize",
           [this](const httplib::Request& q, httplib::Response& r) { Detokenize(q, r); });
    s.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) { Models(q, r); });
    s.Get(R"(/v1/models/(.+))",
          [this](const httplib::Request& q, httplib::Response& r) { Model(q, r); });
    s.Get("/health", [this](const httplib::Request& q, httplib::Response& r) { Health(q, r); });
    // httplib's own answers (404 no route, 413 body too large, 400 unparsable request) get an
    // OpenAI error object too.
    s.set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request& q, httplib::Response& r) {
          if (!r.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string message;
          std::string type = "invalid_request_error";
          std::string code;
          switch (r.status) {
            case 404:
              message = absl::StrCat("no endpoint ", q.method, " ", q.path);
              type = "not_found_error";
              break;
            case 413:
              message = "the request body is larger than the server's limit (--max_message_bytes)";
              code = "request_too_large";
              break;
            default:
              message = absl::StrCat("HTTP ", r.status);
              if (r.status >= 500) type = "server_error";
          }
          r.set_content(Dump(ErrorObject(message, type, "", code)), "application/json");
          return httplib::Server::HandlerResponse::Handled;
        }));
    s.set_exception_handler(
        [](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          LogError(kComponent, absl::StrCat("handler failed: ", what));
          SendJson(r, 500, ErrorObject("internal error", "server_error", "", ""));
        });
  }

 private:
  // The authorization header values of a request: "Authorization", or Anthropic's
  // "x-api-key: <token>" read as "Bearer <token>".
  static std::vector<std::string> AuthorizationValues(const httplib::Request& q) {
    std::vector<std::string> values;
    for (size_t k = 0; k < q.get_header_value_count("Authorization"); ++k) {
      values.push_back(q.get_header_value("Authorization", k));
    }
    if (values.empty()) {
      for (size_t k = 0; k < q.get_header_value_count("x-api-key"); ++k) {
        values.push_back(absl::StrCat("Bearer ", q.get_header_value("x-api-key", k)));
      }
    }
    return values;
  }

  // OK, or 401 sent. The token goes on to the gRPC call, whose own check it then passes.
  bool Authorize(const httplib::Request& q, httplib::Response& r, bool probe = false,
                 bool anthropic = false) {
    if (options_.authenticator == nullptr) return true;
    if (probe && options_.auth_exempt_probes) return true;
    const std::vector<std::string> values = AuthorizationValues(q);
    std::vector<absl::string_view> views(values.begin(), values.end());
    absl::Status st = options_.authenticator->Check(views);
    if (st.ok()) return true;
    if (anthropic) {
      SendAnthropicError(r, st);
    } else {
      SendStatusError(r, st);
    }
    return false;
  }

  bool KnownModel(const std::string& name) const {
    if (name == options_.model_id) return true;
    for (const std::string& a : options_.model_aliases) {
      if (name == a) return true;
    }
    return false;
  }

  OrderedJson ModelObject() const {
    return OrderedJson{{"id", options_.model_id},
                       {"object", "model"},
                       {"created", created_},
                       {"owned_by", "qwen-serve"},
                       {"context_length", options_.context_length},
                       {"max_model_len", options_.context_length}};
  }

  void Models(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    SendJson(r, 200,
             OrderedJson{{"object", "list"}, {"data", OrderedJson::array({ModelObject()})}});
  }

  void Model(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    const std::string name = q.matches[1];
    if (!KnownModel(name)) {
      SendJson(r, 404,
               ErrorObject(absl::StrCat("the model \"", name, "\" does not exist"),
                           "invalid_request_error", "model", "model_not_found"));
      return;
    }
    SendJson(r, 200, ModelObject());
  }

  void Health(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r, /*probe=*/true)) return;
    if (serving_() && !draining_()) {
      SendJson(r, 200, OrderedJson{{"status", "ok"}});
    } else {
      SendJson(r, 503, OrderedJson{{"status", draining_() ? "shutting down" : "unavailable"}});
    }
  }

  GenerateStreams::CallOptions CallOptionsOf(const httplib::Request& q, absl::Status* error) {
    GenerateStreams::CallOptions o;
    for (const std::string& v : AuthorizationValues(q)) o.metadata.emplace_back("authorization", v);
    o.metadata.emplace_back(kProtocolMetadata, "http");
    o.metadata.emplace_back(kHttpPeerMetadata, HttpPeer(q));
    if (q.has_header("X-Request-Id")) o.request_id = q.get_header_value("X-Request-Id");
    if (q.has_header(kForcedOutputHeader)) {
      o.metadata.emplace_back(kForcedOutputMetadata, q.get_header_value(kForcedOutputHeader));
    }
    if (q.has_header(kTimeoutHeader)) {
      double seconds = 0;
      if (!absl::SimpleAtod(q.get_header_value(kTimeoutHeader), &seconds) || !(seconds > 0) ||
          seconds > 86400 * 30) {
        *error = absl::InvalidArgumentError(
            absl::StrCat(kTimeoutHeader, ": must be a number of seconds in (0, 2592000]"));
      } else {
        o.deadline = absl::Now() + absl::Seconds(seconds);
      }
    }
    return o;
  }

  // OK, or the error sent: the server is shutting down, or `model` is not this server's.
  bool CheckServingAndModel(const std::string& model, httplib::Response& r) {
    if (draining_()) {
      SendStatusError(r, absl::UnavailableError("the server is shutting down"));
      return false;
    }
    if (!model.empty() && !KnownModel(model)) {
      SendJson(r, 404,
               ErrorObject(
                   absl::StrCat("the model \"", model, "\" does not exist; this server serves \"",
                                options_.model_id, "\""),
                   "invalid_request_error", "model", "model_not_found"));
      return false;
    }
    return true;
  }

  void ChatCompletions(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    absl::StatusOr<OpenAIChatRequest> parsed = ParseChatCompletionRequest(q.body);
    if (!parsed.ok()) {
      SendStatusError(r, parsed.status());
      return;
    }
    if (!CheckServingAndModel(parsed->model, r)) return;
    std::shared_ptr<Shape> shape = MakeChatShape(parsed->n, parsed->logprobs);
    Run(q, r, ExpandChoices(parsed->request, parsed->n), parsed->stream, parsed->include_usage,
        shape, parsed->n);
  }

  void Completions(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    absl::StatusOr<OpenAICompletionRequest> parsed = ParseCompletionRequest(q.body);
    if (!parsed.ok()) {
      SendStatusError(r, parsed.status());
      return;
    }
    if (!CheckServingAndModel(parsed->model, r)) return;
    std::vector<std::string> echo(static_cast<size_t>(parsed->prompts));
    if (parsed->echo) {
      for (int p = 0; p < parsed->prompts; ++p) {
        const v1::GenerateRequest& g = parsed->requests[static_cast<size_t>(p * parsed->n)];
        if (!g.has_prompt_token_ids()) {
          echo[p] = g.prompt();
          continue;
        }
        // The text of a prompt given as ids, as the tokenizer spells it.
        v1::DetokenizeRequest d;
        *d.mutable_token_ids() = g.prompt_token_ids().ids();
        d.set_include_control_tokens(true);
        v1::DetokenizeResponse text;
        grpc::ClientContext ctx;
        AddAuthorization(q, &ctx);
        // Ids outside the vocabulary: the Generate call names them (prompt[k]).
        if (!stub_->Detokenize(&ctx, d, &text).ok()) continue;
        echo[p] = text.text();
      }
    }
    std::shared_ptr<Shape> shape = MakeTextShape(echo, parsed->n, parsed->logprobs >= 0);
    Run(q, r, std::move(parsed->requests), parsed->stream, parsed->include_usage, shape, parsed->n);
  }

  // Anthropic's POST /v1/messages (one choice; errors in Anthropic's error object).
  void Messages(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r, /*probe=*/false, /*anthropic=*/true)) return;
    absl::StatusOr<AnthropicMessagesRequest> parsed = ParseMessagesRequest(q.body);
    if (!parsed.ok()) {
      OpenAIParamError p = OpenAIParamOf(parsed.status().message());
      SendAnthropicError(r, absl::Status(parsed.status().code(), p.message));
      return;
    }
    if (draining_()) {
      SendAnthropicError(r, absl::UnavailableError("the server is shutting down"));
      return;
    }
    if (!parsed->model.empty() && !KnownModel(parsed->model)) {
      SendAnthropicError(
          r, absl::NotFoundError(absl::StrCat("model: \"", parsed->model,
                                              "\" does not exist; this server serves \"",
                                              options_.model_id, "\"")));
      return;
    }
    std::shared_ptr<Shape> shape = MakeAnthropicShape();
    std::vector<v1::GenerateRequest> calls;
    calls.push_back(std::move(parsed->request));
    Run(q, r, std::move(calls), parsed->stream, /*include_usage=*/false, shape);
  }

  // llama-server's POST /tokenize: {"content", "add_special", "parse_special" (default true),
  // "with_pieces"} -> {"tokens": [ids]} or, with pieces, [{"id", "piece"}].
  void Tokenize(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    const OrderedJson body = OrderedJson::parse(q.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      SendStatusError(r, absl::InvalidArgumentError("the body must be a JSON object"));
      return;
    }
    v1::TokenizeRequest t;
    const auto content = body.find("content");
    if (content == body.end() || !content->is_string()) {
      SendStatusError(r, absl::InvalidArgumentError("content: must be a string"));
      return;
    }
    t.set_text(content->get<std::string>());
    for (const char* key : {"add_special", "parse_special", "with_pieces"}) {
      const auto it = body.find(key);
      if (it != body.end() && !it->is_boolean() && !it->is_null()) {
        SendStatusError(r, absl::InvalidArgumentError(absl::StrCat(key, ": must be a boolean")));
        return;
      }
    }
    t.set_special_as_text(!body.value("parse_special", true));
    const bool pieces = body.value("with_pieces", false);
    t.set_return_pieces(pieces);
    v1::TokenizeResponse resp;
    grpc::ClientContext ctx;
    AddAuthorization(q, &ctx);
    if (absl::Status st = FromGrpcStatus(stub_->Tokenize(&ctx, t, &resp)); !st.ok()) {
      SendStatusError(r, st);
      return;
    }
    OrderedJson tokens = OrderedJson::array();
    for (int k = 0; k < resp.token_ids_size(); ++k) {
      if (pieces) {
        tokens.push_back({{"id", resp.token_ids(k)}, {"piece", resp.pieces(k)}});
      } else {
        tokens.push_back(resp.token_ids(k));
      }
    }
    SendJson(r, 200, OrderedJson{{"tokens", std::move(tokens)}});
  }

  // llama-server's POST /detokenize: {"tokens": [ids]} -> {"content"}.
  void Detokenize(const httplib::Request& q, httplib::Response& r) {
    if (!Authorize(q, r)) return;
    const OrderedJson body = OrderedJson::parse(q.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      SendStatusError(r, absl::InvalidArgumentError("the body must be a JSON object"));
      return;
    }
    const auto tokens = body.find("tokens");
    if (tokens == body.end() || !tokens->is_array()) {
      SendStatusError(r, absl::InvalidArgumentError("tokens: must be an array of token ids"));
      return;
    }
    v1::DetokenizeRequest d;
    for (size_t k = 0; k < tokens->size(); ++k) {
      const OrderedJson& id = (*tokens)[k];
      if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        SendStatusError(
            r, absl::InvalidArgumentError(absl::StrCat("tokens[", k, "]: must be a token id")));
        return;
      }
      d.add_token_ids(id.get<int32_t>());
    }
    d.set_include_control_tokens(true);
    v1::DetokenizeResponse resp;
    grpc::ClientContext ctx;
    AddAuthorization(q, &ctx);
    if (absl::Status st = FromGrpcStatus(stub_->Detokenize(&ctx, d, &resp)); !st.ok()) {
      // gRPC names the field token_ids; here it is tokens.
      std::string message(st.message());
      if (absl::StartsWith(message, "token_ids")) message.replace(0, 9, "tokens");
      SendStatusError(r, absl::Status(st.code(), message));
      return;
    }
    SendJson(r, 200, OrderedJson{{"content", resp.text()}});
  }

  // A handler of an endpoint that generates: a request it answers without starting Generate
  // calls (Run not reached) is recorded as the refused Generate call it stands for, so that
  // every HTTP request counts in qwen_requests_total and the request log.
  httplib::Server::Handler Generating(void (Impl::*handler)(const httplib::Request&,
                                                            httplib::Response&)) {
    return [this, handler](const httplib::Request& q, httplib::Response& r) {
      const absl::Time arrival = absl::Now();
      t_calls_started = false;
      (this->*handler)(q, r);
      if (t_calls_started) return;
      RequestSummary s;
      s.method = "Generate";
      s.request_id = q.has_header("X-Request-Id")
                         ? q.get_header_value("X-Request-Id")
                         : absl::StrCat("http-", refused_.fetch_add(1) + 1);
      s.peer = HttpPeer(q);
      s.status = StatusOfHttp(r.status, r.body);
      s.duration = absl::Now() - arrival;
      s.protocol = "http";
      s.generate = true;
      LogRequest(s);
      if (options_.metrics != nullptr) options_.metrics->RecordRequest(s);
    };
  }

  // The gRPC code of an error the HTTP API answered itself (the inverse of ToHttpError for the
  // statuses it sends), with the error object's message.
  static absl::Status StatusOfHttp(int http_status, const std::string& body) {
    const OrderedJson j = OrderedJson::parse(body, nullptr, false);
    std::string message = "refused by the HTTP API";
    if (j.is_object() && j.contains("error") && j["error"].is_object() &&
        j["error"].contains("message") && j["error"]["message"].is_string()) {
      message = j["error"]["message"].get<std::string>();
    }
    switch (http_status) {
      case 200:
        return absl::OkStatus();
      case 400:
        return absl::InvalidArgumentError(message);
      case 401:
        return absl::UnauthenticatedError(message);
      case 403:
        return absl::PermissionDeniedError(message);
      case 404:
        return absl::NotFoundError(message);
      case 429:
        return absl::ResourceExhaustedError(message);
      case 503:
        return absl::UnavailableError(message);
      case 504:
        return absl::DeadlineExceededError(message);
      default:
        return absl::InternalError(message);
    }
  }

  // "http:ipv4:10.0.0.7:51234": the request log's peer of an HTTP client.
  static std::string HttpPeer(const httplib::Request& q) {
    const bool v6 = absl::StrContains(q.remote_addr, ':');
    return absl::StrCat("http:", v6 ? "ipv6:[" : "ipv4:", q.remote_addr, v6 ? "]:" : ":",
                        q.remote_port);
  }

  // The metadata of a unary call made for `q`: its token, and the protocol label of the
  // request counter.
  void AddAuthorization(const httplib::Request& q, grpc::ClientContext* ctx) {
    for (const std::string& v : AuthorizationValues(q)) ctx->AddMetadata("authorization", v);
    ctx->AddMetadata(kProtocolMetadata, "http");
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  }

  // Runs the Generate calls of one request and answers it: whole, or as Server-Sent Events.
  // `group`: consecutive calls that are choices of one prompt (see GenerateStreams::Start).
  void Run(const httplib::Request& q, httplib::Response& r, std::vector<v1::GenerateRequest> calls,
           bool stream, bool include_usage, std::shared_ptr<Shape> shape, int group = 1) {
    absl::Status header_error;
    const GenerateStreams::CallOptions call_options = CallOptionsOf(q, &header_error);
    if (!header_error.ok()) {
      shape->SendError(r, header_error);
      return;
    }
    const int fd = FindConnectionSocket(q);
    t_calls_started = true;  // the calls record themselves from here on
    auto streams = GenerateStreams::Start(stub_.get(), std::move(calls), call_options, group);
    shape->header().created = absl::ToUnixSeconds(absl::Now());
    shape->header().model = options_.model_id;

    // The first event decides the HTTP status: an error before anything was generated (a bad
    // field, a full queue) is the response's status; after it, errors travel in the stream.
    GenerateStreams::Event first;
    const GenerateStreams::Wait w = streams->Next(&first, fd);
    if (w != GenerateStreams::Wait::kEvent) {
      streams->CancelAll();
      shape->SendError(r, absl::CancelledError("the client closed the connection"));
      return;
    }
    if (first.end && !first.status.ok()) {
      streams->CancelAll();
      shape->SendError(r, first.status);
      return;
    }
    shape->SetId(first.end ? std::string("none") : first.message.request_id());
    if (!stream) {
      Complete(r, shape.get(), streams, std::move(first), fd);
      return;
    }
    auto pending = std::make_shared<std::optional<GenerateStreams::Event>>(std::move(first));
    r.status = 200;
    r.set_header("Cache-Control", "no-cache");
    r.set_header("X-Accel-Buffering", "no");  // proxies (nginx) pass events at once
    r.set_chunked_content_provider(
        "text/event-stream",
        [shape, streams, pending, fd, include_usage](size_t, httplib::DataSink& sink) {
          const bool ok = Stream(shape.get(), include_usage, streams, pending.get(), fd, sink);
          if (ok) sink.done();
          return ok;
        },
        [streams](bool) { streams->CancelAll(); });
  }

  // A whole response: waits for every choice.
  static void Complete(httplib::Response& r, Shape* shape,
                       const std::shared_ptr<GenerateStreams>& streams,
                       GenerateStreams::Event first, int fd) {
    std::optional<GenerateStreams::Event> next(std::move(first));
    absl::Status error;
    while (true) {
      if (!next) {
        GenerateStreams::Event e;
        const GenerateStreams::Wait w = streams->Next(&e, fd);
        if (w == GenerateStreams::Wait::kAllDone) break;
        if (w == GenerateStreams::Wait::kClientGone) {
          streams->CancelAll();
          shape->SendError(r, absl::CancelledError("the client closed the connection"));
          return;
        }
        next = std::move(e);
      }
      GenerateStreams::Event e = std::move(*next);
      next.reset();
      if (e.end) {
        if (!e.status.ok() && error.ok()) {
          error = e.status;
          streams->CancelAll();
        }
        continue;
      }
      shape->Events(e.choice, e.message);
    }
    if (!error.ok()) {
      shape->SendError(r, error);
      return;
    }
    SendJson(r, 200, shape->Whole());
  }

  // Writes the whole event stream; false when the client went away (the calls are cancelled).
  static bool Stream(Shape* shape, bool include_usage,
                     const std::shared_ptr<GenerateStreams>& streams,
                     std::optional<GenerateStreams::Event>* pending, int fd,
                     httplib::DataSink& sink) {
    auto send = [&](OrderedJson event) {
      const std::string frame = shape->Frame(std::move(event), include_usage);
      return sink.write(frame.data(), frame.size());
    };
    auto fail = [&] {
      streams->CancelAll();
      return false;
    };
    for (OrderedJson& event : shape->Opening()) {
      if (!send(std::move(event))) return fail();
    }
    absl::Status error;
    while (true) {
      GenerateStreams::Event e;
      if (pending->has_value()) {
        e = std::move(**pending);
        pending->reset();
      } else {
        const GenerateStreams::Wait w = streams->Next(&e, fd);
        if (w == GenerateStreams::Wait::kAllDone) break;
        if (w == GenerateStreams::Wait::kClientGone) return fail();
      }
      if (e.end) {
        if (!e.status.ok() && error.ok()) {
          error = e.status;
          streams->CancelAll();
        }
        continue;
      }
      for (OrderedJson& event : shape->Events(e.choice, e.message)) {
        if (!send(std::move(event))) return fail();
      }
      if (shape->Finished(e.choice)) {
        for (OrderedJson& event : shape->FinishEvents(e.choice)) {
          if (!send(std::move(event))) return fail();
        }
      }
    }
    if (!error.ok()) {
      // After the first event the status line is sent; the error is the stream's last event.
      const std::string frame = shape->ErrorFrame(error);
      if (!sink.write(frame.data(), frame.size())) return false;
    } else {
      for (OrderedJson& event : shape->Ending(include_usage)) {
        if (!send(std::move(event))) return fail();
      }
    }
    const std::string closing = shape->Closing();
    return closing.empty() || sink.write(closing.data(), closing.size());
  }

  // Whether the handler running on this thread started Generate calls (see Generating).
  static thread_local bool t_calls_started;

  const HttpFrontEndOptions options_;
  const std::unique_ptr<v1::Qwen::Stub> stub_;
  std::atomic<uint64_t> refused_{0};  // names refused requests without an X-Request-Id
  const std::function<bool()> serving_;
  const std::function<bool()> draining_;
  const int64_t created_;
};

thread_local bool HttpFrontEnd::Impl::t_calls_started = false;

absl::StatusOr<std::unique_ptr<HttpFrontEnd>> HttpFrontEnd::Start(
    const HttpFrontEndOptions& options, std::shared_ptr<grpc::Channel> channel,
    std::function<bool()> serving, std::function<bool()> draining) {
  std::unique_ptr<HttpFrontEnd> fe(new HttpFrontEnd());
  if (options.tls.enabled()) {
    const char* ca =
        options.tls.client_ca_file.empty() ? nullptr : options.tls.client_ca_file.c_str();
    auto ssl = std::make_unique<httplib::SSLServer>(options.tls.cert_file.c_str(),
                                                    options.tls.key_file.c_str(), ca);
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "--http_port: the HTTP server cannot use --tls_cert, --tls_key or --tls_client_ca");
    }
    fe->server_ = std::move(ssl);
  } else {
    fe->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& s = *fe->server_;
  const int threads = std::max(4, options.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  s.set_keep_alive_max_count(100000);
  s.set_tcp_nodelay(true);  // an event is sent as soon as it is written
  fe->impl_ =
      std::make_shared<Impl>(options, std::move(channel), std::move(serving), std::move(draining));
  fe->impl_->Register(s);
  // The listening socket, as the library makes it (with its own options: address reuse).
  int listen_fd = -1;
  s.set_socket_options([&listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;
  });
  if (options.port < 0) {
    fe->port_ = s.bind_to_any_port(options.host);
  } else if (s.bind_to_port(options.host, options.port)) {
    fe->port_ = options.port;
  }
  s.set_socket_options(httplib::default_socket_options);
  if (fe->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("--http_port: cannot listen on ", options.host, ":", options.port));
  }
  // The library listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's
  // library): the kernel dropped the handshake of a 7th client connecting at once, which the
  // client only retried a second later (8 streams opened together had 2 start a second late; a
  // gateway opening its connections to a new replica would see the same). Listening again only
  // raises the backlog; the kernel caps it at net.core.somaxconn.
  if (listen_fd < 0 || ::listen(listen_fd, SOMAXCONN) != 0) {
    LogWarning(kComponent, absl::StrCat("--http_port: cannot raise the listen backlog (",
                                        listen_fd < 0 ? "no socket" : strerror(errno),
                                        "); a burst of connections may wait a second"));
  }
  fe->finished_ = std::make_shared<std::atomic<bool>>(false);
  fe->thread_ = std::thread([server = fe->server_.get(), finished = fe->finished_] {
    server->listen_after_bind();
    finished->store(true);
  });
  return fe;
}

HttpFrontEnd::~HttpFrontEnd() { Stop(absl::Seconds(10)); }

void HttpFrontEnd::Stop(absl::Duration wait) {
  if (!thread_.joinable()) return;
  server_->stop();
  const absl::Time deadline = absl::Now() + wait;
  while (!finished_->load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  if (finished_->load()) {
    thread_.join();
    return;
  }
  // Connection threads in an idle keep-alive wait: the process is exiting; they may not outlive
  // the server object, so it is left to the exit.
  LogWarning(kComponent, "connections still open at exit; not waiting for them");
  thread_.detach();
  (void)server_.release();
  (void)new std::shared_ptr<Impl>(std::move(impl_));
}

}  // namespace qwen::service

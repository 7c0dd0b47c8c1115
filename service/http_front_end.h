// The OpenAI-compatible HTTP/1.1 API of qwen-serve, a second listener of the same front end.
//
// Every request is translated into a qwen.v1 call and run on the gRPC server's in-process
// channel: the Generate stream of an HTTP request is a GenerateCall like any other, so it goes
// through the same validation (PrepareGenerate), admission queue, worker slots, limits, request
// log, metrics and drain as a gRPC call, and a temperature-0 request gives the same tokens on
// both. Only what HTTP has of its own lives here: routing, the body limit (413), bearer tokens
// and TLS on this listener, the OpenAI JSON shapes, Server-Sent Events, and noticing a client
// that closed its connection (which cancels the call, freeing its slot within a decode step).
//
// The HTTP server is cpp-httplib (Debian's libcpp-httplib-dev): see docs/api.md, "Why
// cpp-httplib". It serves each connection on a thread of a fixed pool sized from the slots and
// the queue, so that a request the queue refuses is answered at once (429) even when every slot
// streams.
#ifndef QWEN_SERVICE_HTTP_FRONT_END_H_
#define QWEN_SERVICE_HTTP_FRONT_END_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "service/auth.h"
#include "service/tls.h"

namespace httplib {
class Server;
}

namespace qwen::service {

class Metrics;

struct HttpFrontEndOptions {
  std::string host = "0.0.0.0";
  int port = 8080;  // -1: any free port (the log says which)
  TlsOptions tls;   // the public port's certificate, key and client CA (read at start-up)
  // Requests larger than this are refused with 413 before they are parsed (--max_message_bytes).
  int64_t max_body_bytes = int64_t{8} << 20;
  int threads = 64;  // connections served at once; more wait for a thread
  // Null: no authentication. Otherwise every endpoint but GET /health (when
  // auth_exempt_probes) needs "Authorization: Bearer <token>".
  const Authenticator* authenticator = nullptr;
  bool auth_exempt_probes = true;
  // The model's id in /v1/models and in responses; `model` in a request must be it or one of
  // the aliases (404 otherwise).
  std::string model_id;
  std::vector<std::string> model_aliases;
  int64_t context_length = 0;  // tokens per sequence (--ctx_size)
  // Null: none. A chat, completion or messages request the HTTP API answers itself, before it
  // becomes a Generate call (a body it refuses, an unknown model, a refused token, draining),
  // is recorded here and in the request log as a Generate call of protocol "http" would be;
  // the ones that became calls are the calls' own records.
  Metrics* metrics = nullptr;
};

// Thread-safe: httplib calls the handlers from its pool; Stop() from the owner's thread.
class HttpFrontEnd {
 public:
  // Binds the port and starts serving. `channel` is the gRPC server's in-process channel;
  // `serving()` says whether GET /health answers 200 (the gRPC health is SERVING);
  // `draining()` whether the server is shutting down (new requests: 503). UNAVAILABLE when the
  // port cannot be bound; INVALID_ARGUMENT for TLS files the HTTP server cannot use.
  static absl::StatusOr<std::unique_ptr<HttpFrontEnd>> Start(const HttpFrontEndOptions& options,
                                                             std::shared_ptr<grpc::Channel> channel,
                                                             std::function<bool()> serving,
                                                             std::function<bool()> draining);

  ~HttpFrontEnd();

  int port() const { return port_; }

  // Stops listening and waits up to `wait` for the connection threads (idle keep-alive
  // connections hold theirs for up to 5 s); past it the server is left to the process's exit.
  void Stop(absl::Duration wait);

  class Impl;

 private:
  HttpFrontEnd() = default;
  std::shared_ptr<Impl> impl_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::shared_ptr<std::atomic<bool>> finished_;
  int port_ = 0;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_HTTP_FRONT_END_H_

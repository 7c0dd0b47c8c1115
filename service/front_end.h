// The qwen-serve front end: the public gRPC server over a pool of worker processes.
#ifndef QWEN_SERVICE_FRONT_END_H_
#define QWEN_SERVICE_FRONT_END_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "inference/video/video.h"
#include "inference/vision/image.h"
#include "service/limits.h"
#include "service/request.h"
#include "service/tls.h"
#include "service/worker_pool.h"

namespace qwen::service {

struct FrontEndOptions {
  std::string host = "0.0.0.0";
  int port = 50051;  // 0: any free port (the log says which)
  WorkerPoolOptions pool;
  // What --model named when it was not a path (e.g. "qwen3.5:4b" from Ollama's store): the model's
  // name in GetModelInfo when the file carries no general.name.
  std::string model_name;
  int queue_size = 64;  // requests that may wait for a slot
  // Video input: what a request gets and may ask for, and the limits on its files.
  video::VideoSettings video;
  RequestLimits limits;  // slot_context is taken from pool.ctx_size
  // On SIGTERM/SIGINT, running streams get this long to finish before they are cancelled.
  absl::Duration grace_period = absl::Seconds(30);
  int max_retries = 2;
  // Server-side connection age (GOAWAY after it, +-10% jitter) and the grace its calls then get;
  // zero: unlimited.
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::ZeroDuration();
  bool allow_forced_output = false;  // honour the testing metadata (see generate_call.h)
  int metrics_port = 9090;           // Prometheus /metrics over HTTP on host:port; 0: off
  // The OpenAI-compatible HTTP API (service/http_front_end.h) on host:http_port, with the same
  // TLS, tokens and limits as the gRPC port; 0: off, -1: any free port (the log says which).
  int http_port = 0;
  // The model's id in the HTTP API (/v1/models, `model` of requests). Empty: model_name when
  // set, else the file name without .gguf.
  std::string served_model_name;
  // Security and explicit limits of the public port (see docs/serving.md, "Security and limits").
  TlsOptions tls;
  std::string auth_tokens_file;    // empty: no authentication
  bool auth_exempt_probes = true;  // health and reflection need no token
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  int max_concurrent_streams = kDefaultMaxConcurrentStreams;  // per connection
  // An uploaded image's encoded bytes and decoded pixels at most (--max_image_bytes,
  // --max_image_megapixels), checked from its header before anything is decoded.
  vision::DecodeLimits image_limits;
  // How often the TLS files and the token file are looked at for changes, which then apply
  // without a restart (service/credentials_watcher.h); zero: read once at start-up.
  absl::Duration credentials_reload_interval = absl::Seconds(10);
  // A plaintext grpc.health.v1 server on 127.0.0.1:health_port for probes that cannot speak TLS
  // or send a token (service/health_port.h); -1: none, 0: any free port (the log says which).
  int health_port = -1;
};

// The checks of the options that need neither the model nor any file: INVALID_ARGUMENT naming the
// flag. RunFrontEnd runs them first; `qwen serve --check_config` reports them too.
absl::Status ValidateFrontEndOptions(const FrontEndOptions& options);

// After the grace period (or a second signal), the front end is gone within this: running
// streams are cancelled, unary calls get kUnaryDrain, the metrics endpoint stops, the workers get
// kWorkerStop to exit on SIGTERM before they are killed, and the rest (unmapping, logging) is
// quick. A deployment's termination grace can count on grace_period + kExitBound.
inline constexpr absl::Duration kUnaryDrain = absl::Milliseconds(250);
inline constexpr absl::Duration kWorkerStop = absl::Milliseconds(500);
inline constexpr absl::Duration kExitBound = absl::Seconds(1);

// Runs the front end until SIGTERM or SIGINT: loads the model's metadata, tokenizer and chat
// template, serves qwen.v1.Qwen, grpc.health.v1.Health and reflection on host:port (and the
// metrics on host:metrics_port), and runs the worker pool. On the signal: health NOT_SERVING, new
// calls UNAVAILABLE, running streams finish within the grace period (then are cancelled), workers
// are stopped, within kExitBound of the grace period's end; returns OK. Errors before serving
// (model, port) are returned.
//
// Call from main() before any other thread exists: it blocks SIGTERM and SIGINT so that every
// thread inherits the mask and the main thread takes them with sigwait.
absl::Status RunFrontEnd(const FrontEndOptions& options);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_FRONT_END_H_

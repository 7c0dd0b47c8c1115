#include "service/front_end.h"

#include <signal.h>

#include <atomic>
#include <limits>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "inference/model/state.h"
#include "qwen/v1/qwen.grpc.pb.h"
#include "service/auth.h"
#include "service/credentials_watcher.h"
#include "service/dispatcher.h"
#include "service/generate_call.h"
#include "service/grpc_status.h"
#include "service/health_port.h"
#include "service/http_front_end.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/model_info.h"
#include "service/prefix_cache_budget.h"
#include "service/reflection_v1.h"
#include "service/request.h"
#include "service/rpc_observer.h"
#include "service/text_model.h"
#include "service/worker_pool.h"

// Linking the descriptors of grpc.health.v1 lets reflection describe the health service that
// gRPC's built-in implementation serves.
#include "grpc/health/v1/health.pb.h"

namespace qwen::service {
namespace {

constexpr char kComponent[] = "front-end";
constexpr char kServiceName[] = "qwen.v1.Qwen";

std::string ListenAddress(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(status));
  return r;
}

// qwen.v1.Qwen on gRPC's callback API. The text RPCs are answered inline (they are cheap and
// touch only immutable state); Generate hands each call to a GenerateCall. Thread-safe: gRPC
// calls it from its own threads; SetPool() is called once before the workers can be reached.
class QwenService final : public v1::Qwen::CallbackService {
 public:
  QwenService(const TextModel* model, const FrontEndOptions* options, Dispatcher* dispatcher)
      : model_(model), options_(options), dispatcher_(dispatcher) {
    static_info_ = StaticModelInfo(*model, options->model_name);
    static_info_.set_slot_context_length(static_cast<uint32_t>(options->pool.ctx_size));
    env_.model = model;
    env_.dispatcher = dispatcher;
    env_.registry = &registry_;
    env_.limits = options->limits;
    env_.limits.slot_context = options->pool.ctx_size;
    env_.max_retries = options->max_retries;
    env_.allow_forced_output = options->allow_forced_output;
    env_.draining = &draining_;
    env_.max_message_bytes = options->max_message_bytes;
    env_.request_counter = &request_counter_;
  }

  // The server serves (health, NOT_SERVING) before the pool exists; calls read it atomically.
  void SetPool(WorkerPool* pool) {
    pool_.store(pool);
    env_.pool.store(pool);
  }
  void BeginDrain() { draining_.store(true); }
  void SetMetrics(Metrics* metrics) { env_.metrics = metrics; }
  std::atomic<uint64_t>* request_counter() { return &request_counter_; }

  // What every call must pass before any work: a valid token (when the server wants one), a
  // server that is not shutting down, and a message within --max_message_bytes.
  absl::Status Admit(const grpc::CallbackServerContext& ctx,
                     const google::protobuf::Message& req) const {
    if (absl::Status st = CheckAuthenticated(ctx); !st.ok()) return st;
    if (draining_.load()) return absl::UnavailableError("the server is shutting down");
    return CheckMessageSize(req, options_->max_message_bytes);
  }
  StreamRegistry& registry() { return registry_; }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) override {
    return GenerateCall::Create(&env_, ctx, req);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override {
    if (absl::Status st = Admit(*ctx, *req); !st.ok()) return Reply(ctx, st);
    const tokenizer::Tokenizer& tok = model_->tokenizer();
    std::vector<int32_t> ids = tok.Encode(req->text(), !req->special_as_text());
    if (!req->images().empty()) {
      std::vector<ImagePart> parts;
      for (int k = 0; k < req->images_size(); ++k) {
        parts.push_back({&req->images(k), absl::StrCat("images[", k, "]")});
      }
      absl::StatusOr<std::vector<PlacedImage>> placed = PlaceImages(parts, *model_, &ids, "text");
      if (!placed.ok()) return Reply(ctx, placed.status());
      DescribeImages(*placed, resp->mutable_images());
    }
    resp->mutable_token_ids()->Assign(ids.begin(), ids.end());
    if (req->return_pieces()) {
      for (int32_t id : ids) resp->add_pieces(tok.Decode({id}, /*show_control=*/true));
    }
    return Reply(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) override {
    if (absl::Status st = Admit(*ctx, *req); !st.ok()) return Reply(ctx, st);
    const int32_t vocab = model_->vocab_size();
    for (int k = 0; k < req->token_ids_size(); ++k) {
      const int32_t id = req->token_ids(k);
      if (id < 0 || id >= vocab) {
        return Reply(ctx, absl::InvalidArgumentError(
                              absl::StrCat("token_ids[", k, "]: token id ", id,
                                           " is outside the vocabulary [0, ", vocab, ")")));
      }
    }
    std::vector<int32_t> ids(req->token_ids().begin(), req->token_ids().end());
    resp->set_text(model_->tokenizer().Decode(ids, req->include_control_tokens()));
    return Reply(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* RenderChat(grpc::CallbackServerContext* ctx,
                                       const v1::RenderChatRequest* req,
                                       v1::RenderChatResponse* resp) override {
    if (absl::Status st = Admit(*ctx, *req); !st.ok()) return Reply(ctx, st);
    absl::StatusOr<RenderedChat> r =
        service::RenderChat(req->chat(), *model_, "chat", options_->limits.max_tools);
    if (!r.ok()) return Reply(ctx, r.status());
    resp->set_prompt(r->prompt);
    resp->mutable_token_ids()->Assign(r->token_ids.begin(), r->token_ids.end());
    resp->set_reasoning_open(r->reasoning_open);
    DescribeImages(r->images, resp->mutable_images());
    DescribeVideos(r->videos, resp->mutable_videos());
    return Reply(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* req,
                                         v1::GetModelInfoResponse* resp) override {
    if (absl::Status st = Admit(*ctx, *req); !st.ok()) return Reply(ctx, st);
    *resp = static_info_;
    const Dispatcher::Stats s = dispatcher_->GetStats();
    v1::ServingInfo* serving = resp->mutable_serving();
    serving->set_workers(static_cast<uint32_t>(options_->pool.workers));
    serving->set_live_workers(static_cast<uint32_t>(s.live_workers));
    serving->set_slots_per_worker(static_cast<uint32_t>(options_->pool.slots));
    serving->set_total_slots(static_cast<uint32_t>(s.total_slots));
    serving->set_busy_slots(static_cast<uint32_t>(s.busy_slots));
    serving->set_queued_requests(static_cast<uint32_t>(s.queued));
    serving->set_queue_size(static_cast<uint32_t>(s.queue_capacity));
    v1::PrefixCacheInfo* pc = resp->mutable_prefix_cache();
    pc->set_enabled(options_->pool.prefix_cache_mb > 0);
    pc->set_budget_bytes_per_worker(static_cast<uint64_t>(options_->pool.prefix_cache_mb) << 20);
    pc->set_snapshot_interval(static_cast<uint32_t>(options_->pool.snapshot_interval));
    const model::StateSize size = model::SequenceState::SizeFor(
        model_->config(), options_->pool.ctx_size, options_->pool.kv_type);
    pc->set_state_bytes_per_snapshot(size.recurrent_bytes + size.conv_bytes);
    pc->set_kv_bytes_per_token(size.kv_bytes_per_token);
    if (env_.metrics != nullptr) {
      const Metrics::PrefixCacheTotals t = env_.metrics->GetPrefixCacheTotals();
      pc->set_used_bytes(static_cast<uint64_t>(t.used_bytes));
      pc->set_entries(static_cast<uint64_t>(t.entries));
      pc->set_lookups(static_cast<uint64_t>(t.lookups));
      pc->set_hits(static_cast<uint64_t>(t.hits));
      pc->set_hit_rate(t.lookups > 0 ? static_cast<double>(t.hits) / t.lookups : 0.0);
      pc->set_cached_tokens(static_cast<uint64_t>(t.cached_tokens));
      pc->set_evictions(static_cast<uint64_t>(t.evictions));
    }
    if (WorkerPool* pool = pool_.load(); pool != nullptr) {
      for (const WorkerInfo& w : pool->Workers()) {
        v1::WorkerStatus* ws = serving->add_worker_status();
        ws->set_index(static_cast<uint32_t>(w.index));
        ws->set_state(w.state);
        ws->set_pid(w.pid);
        ws->set_restarts(static_cast<uint32_t>(w.restarts));
        if (w.index < static_cast<int>(s.workers.size()) && s.workers[w.index].live) {
          ws->set_busy_slots(static_cast<uint32_t>(s.workers[w.index].busy));
        }
      }
    }
    return Reply(ctx, absl::OkStatus());
  }

 private:
  const TextModel* model_;
  const FrontEndOptions* options_;
  Dispatcher* dispatcher_;
  std::atomic<WorkerPool*> pool_{nullptr};
  v1::GetModelInfoResponse static_info_;
  StreamRegistry registry_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> request_counter_{0};
  GenerateEnv env_;
};

}  // namespace

absl::Status ValidateFrontEndOptions(const FrontEndOptions& options) {
  if (options.queue_size < 0) return absl::InvalidArgumentError("--queue_size must be >= 0");
  if (options.pool.ctx_size < 2) return absl::InvalidArgumentError("--ctx_size must be >= 2");
  if (options.max_message_bytes < 1024) {
    return absl::InvalidArgumentError("--max_message_bytes must be at least 1024");
  }
  if (options.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError("--max_concurrent_streams must be at least 1");
  }
  if (options.limits.max_tools < 0 || options.limits.max_stop_strings < 0) {
    return absl::InvalidArgumentError("--max_tools and --max_stop_strings must be >= 0");
  }
  if (options.image_limits.max_bytes < 1024) {
    return absl::InvalidArgumentError("--max_image_bytes must be at least 1024");
  }
  if (options.image_limits.max_pixels < 16 * 16) {
    return absl::InvalidArgumentError("--max_image_megapixels must allow at least 16x16 pixels");
  }
  // gRPC takes the connection age in int milliseconds.
  constexpr absl::Duration kMaxAge = absl::Milliseconds(std::numeric_limits<int>::max());
  if (options.max_connection_age > kMaxAge || options.max_connection_age_grace > kMaxAge) {
    return absl::InvalidArgumentError(
        "--max_connection_age and --max_connection_age_grace must be at most 24 days");
  }
  if (options.health_port < -1 || options.health_port > 65535) {
    return absl::InvalidArgumentError("--health_port must be -1 (none) or in [0, 65535]");
  }
  if (options.health_port > 0 &&
      (options.health_port == options.port || options.health_port == options.metrics_port)) {
    return absl::InvalidArgumentError("--health_port must differ from --port and --metrics_port");
  }
  if (options.http_port < -1 || options.http_port > 65535) {
    return absl::InvalidArgumentError("--http_port must be 0 (off), -1 (any free port) or a port");
  }
  if (options.http_port > 0 &&
      (options.http_port == options.port || options.http_port == options.metrics_port ||
       options.http_port == options.health_port)) {
    return absl::InvalidArgumentError(
        "--http_port must differ from --port, --metrics_port and --health_port");
  }
  if (options.credentials_reload_interval < absl::ZeroDuration() ||
      options.credentials_reload_interval > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        "--credentials_reload_interval must be in [0, 24h] (0: read the files once)");
  }
  return ValidateTlsOptions(options.tls);
}

absl::Status RunFrontEnd(const FrontEndOptions& given) {
  FrontEndOptions options = given;  // with --prefix_cache_mb=auto resolved below
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A log reader that went away (`qwen serve | head`) must not kill the server.
  signal(SIGPIPE, SIG_IGN);
  SetLogProcessName("qwen-serve");
  // A reference so that the linker keeps the health descriptors for reflection.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();

  if (options.pool.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (absl::Status st = ValidateFrontEndOptions(options); !st.ok()) return st;
  TlsOptions tls = options.tls;
  // gRPC's file watcher counts whole seconds.
  tls.reload_interval_seconds = static_cast<int>(
      absl::ToInt64Seconds(absl::Ceil(options.credentials_reload_interval, absl::Seconds(1))));
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) return credentials.status();
  std::unique_ptr<Authenticator> authenticator;
  if (!options.auth_tokens_file.empty()) {
    absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(options.auth_tokens_file);
    if (!tokens.ok()) return tokens.status();
    LogInfo(kComponent, absl::StrCat("bearer-token authentication on (", tokens->size(), " tokens",
                                     options.auth_exempt_probes ? "; health and reflection open"
                                                                : "; every service",
                                     ")"));
    if (!options.tls.enabled()) {
      LogWarning(kComponent,
                 "bearer tokens over plaintext: anyone on the network path can read them; set "
                 "--tls_cert and --tls_key unless a TLS proxy or a private network carries it");
    }
    authenticator = std::make_unique<Authenticator>(std::move(*tokens), options.auth_exempt_probes);
  }
  std::unique_ptr<CredentialsWatcher> credentials_watcher;
  if (options.credentials_reload_interval > absl::ZeroDuration() &&
      (authenticator != nullptr || options.tls.enabled())) {
    std::vector<CredentialsWatcher::File> tls_files;
    if (options.tls.enabled()) {
      tls_files = {{"--tls_cert", options.tls.cert_file}, {"--tls_key", options.tls.key_file}};
      if (!options.tls.client_ca_file.empty()) {
        tls_files.push_back({"--tls_client_ca", options.tls.client_ca_file});
      }
    }
    credentials_watcher = std::make_unique<CredentialsWatcher>(
        options.auth_tokens_file, authenticator.get(), std::move(tls_files),
        options.credentials_reload_interval);
  }
  TextModel::VisionOptions vision_options;
  vision_options.mmproj_path = options.pool.mmproj_path;
  vision_options.preprocess.min_pixels = options.pool.image_min_pixels;
  vision_options.preprocess.max_pixels = options.pool.image_max_pixels;
  vision_options.decode = options.image_limits;
  vision_options.video = options.video;
  absl::StatusOr<std::unique_ptr<TextModel>> model =
      TextModel::Load(options.pool.model_path, vision_options);
  if (!model.ok()) return model.status();
  if (options.pool.prefix_cache_mb == kAutoPrefixCacheMb) {
    const PrefixCacheBudget budget =
        AutoPrefixCacheBudget((*model)->config(), options.pool.ctx_size, options.pool.kv_type,
                              options.pool.slots, options.pool.workers, AvailableMemoryBytes());
    options.pool.prefix_cache_mb = budget.mb;
    LogInfo(
        kComponent,
        absl::StrCat("prefix cache: ", budget.mb, " MiB per worker (auto: ", budget.reason, ")"),
        {{"event", "prefix_cache_budget"},
         {"prefix_cache_mb", budget.mb},
         {"reason", budget.reason}});
  }

  if (options.metrics_port < 0 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics_port must be in [0, 65535]");
  }
  Metrics metrics(ModelInfoLabels(**model, options.pool.model_path, options.model_name),
                  BuildInfoLabels());
  if (options.metrics_port > 0) {
    if (absl::Status st = metrics.Serve(options.host, options.metrics_port); !st.ok()) return st;
  }
  Dispatcher dispatcher(options.pool.workers, options.queue_size);
  metrics.SetSources(&dispatcher, nullptr);
  // Scrapes stop reading the dispatcher and the pool before they go away.
  absl::Cleanup forget_sources = [&metrics] { metrics.SetSources(nullptr, nullptr); };
  QwenService service(model->get(), &options, &dispatcher);
  service.SetMetrics(&metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = ListenAddress(options.host, options.port);
  builder.AddListeningPort(address, *credentials, &port);
  builder.RegisterService(&service);
  ReflectionV1Service reflection_v1;
  builder.RegisterService(&reflection_v1);
  // The transport refuses what is far too big before buffering it; Admit() refuses, with
  // INVALID_ARGUMENT, what is over --max_message_bytes.
  builder.SetMaxReceiveMessageSize(TransportMessageLimit(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  if (authenticator != nullptr) {
    interceptors.push_back(std::make_unique<AuthInterceptorFactory>(authenticator.get()));
  }
  interceptors.push_back(std::make_unique<ParseErrorInterceptorFactory>());
  // Last, so that it records the status the client sees, as the interceptors above rewrote it
  // (a server's interceptors see the sending hook points in this order).
  interceptors.push_back(std::make_unique<RpcObserverFactory>(&metrics, service.request_counter()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  if (options.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options.max_connection_age)));
  }
  if (options.max_connection_age_grace > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options.max_connection_age_grace)));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  // What v1alpha lists too: ours, the default health service, and both reflection versions.
  reflection_v1.SetServices({"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                             "grpc.reflection.v1alpha.ServerReflection", kServiceName});
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  std::unique_ptr<LocalHealthServer> local_health;
  if (options.health_port >= 0) {
    absl::StatusOr<std::unique_ptr<LocalHealthServer>> h =
        LocalHealthServer::Start(options.health_port, {kServiceName});
    if (!h.ok()) {
      server->Shutdown();
      return h.status();
    }
    local_health = std::move(*h);
    LogInfo(kComponent,
            absl::StrCat("health on 127.0.0.1:", local_health->port(),
                         " (plaintext grpc.health.v1, for probes)"),
            {{"event", "health_listening"}, {"health_port", local_health->port()}});
  }
  std::atomic<bool> draining{false};
  std::atomic<bool> serving_now{false};
  absl::Mutex health_mu;
  auto set_serving = [&](bool serving) {
    absl::MutexLock lock(&health_mu);
    if (draining.load()) serving = false;
    serving_now.store(serving);
    health->SetServingStatus("", serving);
    health->SetServingStatus(kServiceName, serving);
    if (local_health != nullptr) local_health->SetServing(serving);
  };
  set_serving(false);

  // The HTTP API runs its requests on the gRPC server's in-process channel: the same handlers,
  // interceptors (tokens, request log, metrics), queue and workers.
  std::unique_ptr<HttpFrontEnd> http;
  if (options.http_port != 0) {
    HttpFrontEndOptions h;
    h.host = options.host;
    h.port = options.http_port;
    h.tls = options.tls;
    h.max_body_bytes = options.max_message_bytes;
    // A thread per connection: every slot streaming and the queue full, and room to refuse more.
    h.threads = options.pool.workers * options.pool.slots + options.queue_size + 16;
    h.authenticator = authenticator.get();
    h.auth_exempt_probes = options.auth_exempt_probes;
    h.context_length = options.pool.ctx_size;
    h.metrics = &metrics;
    const std::string file = options.pool.model_path.substr(
        options.pool.model_path.find_last_of('/') == std::string::npos
            ? 0
            : options.pool.model_path.find_last_of('/') + 1);
    std::string stem = file;
    if (absl::EndsWith(stem, ".gguf")) stem.resize(stem.size() - 5);
    h.model_id = !options.served_model_name.empty() ? options.served_model_name
                 : !options.model_name.empty()      ? options.model_name
                                                    : stem;
    for (const std::string& alias :
         {stem, file, options.model_name, options.pool.model_path, (*model)->config().name}) {
      if (!alias.empty() && alias != h.model_id) h.model_aliases.push_back(alias);
    }
    // Responses the HTTP front end reads (a long generation's tokens with logprobs, a long
    // text's pieces) are bounded by the request limits, not by gRPC's 4 MiB client default.
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::unique_ptr<HttpFrontEnd>> started = HttpFrontEnd::Start(
        h, server->InProcessChannel(channel_args), [&serving_now] { return serving_now.load(); },
        [&draining] { return draining.load(); });
    if (!started.ok()) {
      server->Shutdown();
      return started.status();
    }
    http = std::move(*started);
    const std::string scheme = options.tls.enabled() ? "https" : "http";
    LogInfo(
        kComponent,
        absl::StrCat("OpenAI-compatible HTTP API on ", scheme, "://",
                     ListenAddress(options.host, http->port()), " (model id \"", h.model_id, "\")"),
        {{"event", "http_listening"}, {"http_port", http->port()}, {"model_id", h.model_id}});
  }

  WorkerPoolOptions pool_options = options.pool;
  pool_options.allow_forced_tokens = options.allow_forced_output;
  pool_options.on_health = [&metrics](int index, uint64_t epoch,
                                      const worker::v1::HealthResponse& health) {
    metrics.OnWorkerHealth(index, epoch, health, absl::Now());
  };
  absl::StatusOr<std::unique_ptr<WorkerPool>> pool =
      WorkerPool::Start(pool_options, &dispatcher, [&](int live) {
        LogInfo(kComponent, absl::StrCat(live, " of ", options.pool.workers, " workers up"),
                {{"event", "live_workers"}, {"live", live}, {"workers", options.pool.workers}});
        set_serving(live > 0);
      });
  if (!pool.ok()) {
    if (http != nullptr) http->Stop(kUnaryDrain);
    server->Shutdown();
    return pool.status();
  }
  service.SetPool(pool->get());
  metrics.SetSources(&dispatcher, pool->get());
  LogInfo(kComponent,
          absl::StrCat("listening on ", ListenAddress(options.host, port),
                       options.tls.enabled()
                           ? (options.tls.client_ca_file.empty() ? " with TLS" : " with mTLS")
                           : "",
                       " (model ",
                       options.model_name.empty() ? "" : absl::StrCat(options.model_name, " = "),
                       options.pool.model_path, ", ", options.pool.workers, " workers x ",
                       options.pool.slots, " slots, sockets in ", (*pool)->socket_dir(), ")"),
          {{"event", "listening"},
           {"address", ListenAddress(options.host, port)},
           {"port", port},
           {"tls", options.tls.enabled()},
           {"mtls", options.tls.enabled() && !options.tls.client_ca_file.empty()},
           {"metrics_port", metrics.port()},
           {"model", options.pool.model_path},
           {"workers", options.pool.workers},
           {"slots", options.pool.slots},
           {"ctx_size", options.pool.ctx_size},
           {"queue_size", options.queue_size}});
  if (metrics.port() > 0) {
    LogInfo(
        kComponent,
        absl::StrCat("metrics on http://", ListenAddress(options.host, metrics.port()), "/metrics"),
        {{"event", "metrics_listening"}, {"metrics_port", metrics.port()}});
  }

  int sig = 0;
  while (sig != SIGTERM && sig != SIGINT) sig = sigwaitinfo(&signals, nullptr);
  LogInfo(kComponent, absl::StrCat("signal ", sig, ": draining (grace period ",
                                   absl::FormatDuration(options.grace_period), ")"));
  draining.store(true);
  set_serving(false);
  service.BeginDrain();

  // Running streams finish, up to the grace period; a second signal cuts it short.
  const absl::Time deadline = absl::Now() + options.grace_period;
  while (service.registry().size() > 0 && absl::Now() < deadline) {
    const absl::Duration left = std::min(deadline - absl::Now(), absl::Milliseconds(50));
    timespec ts = absl::ToTimespec(std::max(left, absl::ZeroDuration()));
    const int again = sigtimedwait(&signals, nullptr, &ts);
    if (again == SIGTERM || again == SIGINT) {
      LogWarning(kComponent, "second signal: cancelling running streams now");
      break;
    }
  }
  // From here the server exits within kExitBound (front_end.h): nothing left is worth waiting
  // for, and each step below is bounded.
  const absl::Time grace_end = absl::Now();
  std::vector<std::shared_ptr<GenerateCall>> left = service.registry().Snapshot();
  if (!left.empty()) {
    LogWarning(kComponent, absl::StrCat("cancelling ", left.size(), " streams still running"));
    for (auto& call : left) call->Abort(absl::UnavailableError("the server is shutting down"));
  }
  left.clear();
  // What is left are unary calls (quick: a tokenization, a render) and health Watch streams
  // (endless); they get kUnaryDrain, then are cancelled. gRPC also waits out the whole deadline
  // for clients that keep idle connections open, so the deadline is short.
  health->Shutdown();
  // The probes' plaintext health port has nothing worth a wait either (a probe retries).
  if (local_health != nullptr) local_health->Shutdown(absl::ZeroDuration());
  // HTTP requests are gRPC calls (ended above); its threads finish their last writes, and idle
  // keep-alive connections are not waited for.
  if (http != nullptr) http->Stop(kUnaryDrain);
  server->Shutdown(absl::ToChronoTime(absl::Now() + kUnaryDrain));
  server->Wait();
  // The metrics endpoint stops in milliseconds (Metrics::StopServing); the workers, whose
  // streams were all cancelled, exit at once on SIGTERM and are killed after kWorkerStop.
  metrics.StopServing();
  (*pool)->Stop(kWorkerStop);
  metrics.SetSources(&dispatcher, nullptr);
  LogInfo(kComponent,
          absl::StrCat(
              "stopped ",
              absl::FormatDuration(absl::Trunc(absl::Now() - grace_end, absl::Milliseconds(1))),
              " after the grace period"),
          {{"event", "stopped"},
           {"after_grace_ms", absl::ToDoubleMilliseconds(absl::Now() - grace_end)}});
  return absl::OkStatus();
}

}  // namespace qwen::service

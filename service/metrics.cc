#include "service/metrics.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "inference/common/cpu_features.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"
#include "service/dispatcher.h"
#include "service/model_info.h"
#include "service/worker_pool.h"

#ifndef QWEN_VERSION
#define QWEN_VERSION "unknown"
#endif
#ifndef QWEN_BUILD_TYPE
#define QWEN_BUILD_TYPE "unknown"
#endif

namespace qwen::service {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160};
const prometheus::Histogram::BucketBoundaries kItlBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5};
const prometheus::Histogram::BucketBoundaries kDurationBuckets = {
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640};
const prometheus::Histogram::BucketBoundaries kQueueBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

void Add(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
}

}  // namespace

// The metrics read at scrape time: the queue, the pool and the workers' latest heartbeats.
// Thread-safe (Collect takes the Metrics' locks).
class Metrics::PoolCollector : public prometheus::Collectable {
 public:
  explicit PoolCollector(const Metrics* m) : m_(m) {}

  std::vector<MetricFamily> Collect() const override {
    // The families live on the heap: this runs on the HTTP server's threads, whose stacks are
    // small (an ASan build overflowed one when they were locals).
    std::vector<MetricFamily> all;
    all.reserve(32);  // more than the families below: references to them must stay valid
    auto family = [&all](const char* name, const char* help, MetricType type) -> MetricFamily& {
      MetricFamily& f = all.emplace_back();
      f.name = name;
      f.help = help;
      f.type = type;
      return f;
    };
    MetricFamily& queue =
        family("qwen_queue_depth", "Generate requests waiting for a slot.", MetricType::Gauge);
    MetricFamily& queue_cap =
        family("qwen_queue_capacity", "Generate requests that may wait (--queue_size).",
               MetricType::Gauge);
    MetricFamily& running =
        family("qwen_running_sequences", "Generate requests holding a slot of the worker.",
               MetricType::Gauge);
    // One series each, for the Gateway API Inference Extension's endpoint picker
    // (docs/observability.md, "For the inference gateway").
    MetricFamily& running_total =
        family("qwen_requests_running", "Generate requests holding a slot, over all workers.",
               MetricType::Gauge);
    MetricFamily& slot_use = family(
        "qwen_slot_utilization",
        "Busy slots over the live workers' slots, 0..1 (1: new requests wait).", MetricType::Gauge);
    MetricFamily& kv_use = family(
        "qwen_kv_cache_utilization",
        "KV cache held by the tokens in the slots over the KV cache reserved for them, 0..1, "
        "over the live workers (as of their last heartbeats).",
        MetricType::Gauge);
    MetricFamily& slots = family("qwen_worker_slots", "Slots (sequences at once) of a live worker.",
                                 MetricType::Gauge);
    MetricFamily& up = family("qwen_worker_up", "1 while the worker is up and taking requests.",
                              MetricType::Gauge);
    MetricFamily& state =
        family("qwen_worker_state",
               "The worker's supervision state: 1 for the current one of starting, up, restarting, "
               "stopped.",
               MetricType::Gauge);
    MetricFamily& restarts =
        family("qwen_worker_restarts_total",
               "Times the worker process died or was killed and restarted.", MetricType::Counter);
    MetricFamily& queued = family(
        "qwen_worker_queued_sequences",
        "Sequences submitted to the worker's engine and waiting for a slot (last heartbeat).",
        MetricType::Gauge);
    MetricFamily& bytes = family("qwen_worker_state_bytes",
                                 "Sequence state memory of the worker's engine (last heartbeat): "
                                 "recurrent (delta-net and conv states), kv_resident (KV cache of "
                                 "the tokens held), kv_reserved (KV cache address space).",
                                 MetricType::Gauge);
    MetricFamily& prefilled =
        family("qwen_worker_prefill_tokens_total",
               "Prompt tokens the worker's engine computed (all incarnations, as of the last "
               "heartbeat).",
               MetricType::Counter);
    MetricFamily& decoded =
        family("qwen_worker_decode_tokens_total",
               "Tokens the worker's engine generated (all incarnations, as of the last heartbeat).",
               MetricType::Counter);
    MetricFamily& cache_bytes = family(
        "qwen_prefix_cache_bytes",
        "The worker's prefix cache (last heartbeat): budget (--prefix_cache_mb) and used bytes.",
        MetricType::Gauge);
    MetricFamily& cache_entries =
        family("qwen_prefix_cache_entries", "State snapshots in the worker's prefix cache.",
               MetricType::Gauge);
    MetricFamily& cache_lookups = family(
        "qwen_prefix_cache_lookups_total",
        "Requests that could resume from cached state (all incarnations).", MetricType::Counter);
    MetricFamily& cache_hits = family(
        "qwen_prefix_cache_hits_total",
        "Requests that resumed from cached state, a prefix cache snapshot or the slot's previous "
        "sequence (all incarnations); hit rate = hits / lookups.",
        MetricType::Counter);
    MetricFamily& cache_tokens =
        family("qwen_prefix_cache_cached_tokens_total",
               "Prompt tokens not computed thanks to cached state (all incarnations).",
               MetricType::Counter);
    MetricFamily& cache_evictions = family(
        "qwen_prefix_cache_evictions_total",
        "Snapshots dropped to keep the prefix cache within its budget.", MetricType::Counter);
    MetricFamily& prefill_rate =
        family("qwen_prefill_tokens_per_second",
               "Prompt tokens the worker computed per second over the last rate window (~5 s).",
               MetricType::Gauge);
    MetricFamily& decode_rate =
        family("qwen_decode_tokens_per_second",
               "Tokens the worker generated per second over the last rate window (~5 s).",
               MetricType::Gauge);

    std::vector<WorkerInfo> workers;
    Dispatcher::Stats stats;
    bool have_dispatcher = false;
    {
      absl::MutexLock lock(&m_->sources_mu_);
      if (m_->dispatcher_ != nullptr) {
        stats = m_->dispatcher_->GetStats();
        have_dispatcher = true;
      }
      if (m_->pool_ != nullptr) workers = m_->pool_->Workers();
    }
    if (have_dispatcher) {
      Add(queue, {}, stats.queued);
      Add(queue_cap, {}, stats.queue_capacity);
    }
    absl::MutexLock lock(&m_->samples_mu_);
    double kv_resident = 0, kv_reserved = 0;
    for (const WorkerInfo& w : workers) {
      const std::string k = absl::StrCat(w.index);
      const ClientMetric::Label worker{"worker", k};
      const bool is_up = w.state == "up";
      int busy = 0, n_slots = 0;
      if (have_dispatcher && w.index < static_cast<int>(stats.workers.size()) &&
          stats.workers[w.index].live) {
        busy = stats.workers[w.index].busy;
        n_slots = stats.workers[w.index].slots;
      }
      Add(running, {worker}, busy);
      Add(slots, {worker}, n_slots);
      Add(up, {worker}, is_up ? 1 : 0);
      for (const char* s : {"starting", "up", "restarting", "stopped"}) {
        Add(state, {worker, {"state", s}}, w.state == s ? 1 : 0);
      }
      Add(restarts, {worker}, w.restarts);
      const WorkerSamples* ws =
          w.index < static_cast<int>(m_->samples_.size()) && m_->samples_[w.index].seen
              ? &m_->samples_[w.index]
              : nullptr;
      const worker::v1::HealthResponse empty;
      const worker::v1::HealthResponse& h = ws != nullptr && is_up ? ws->last : empty;
      Add(queued, {worker}, h.queued());
      Add(bytes, {worker, {"kind", "recurrent"}}, static_cast<double>(h.state_bytes()));
      Add(bytes, {worker, {"kind", "kv_resident"}}, static_cast<double>(h.kv_bytes_resident()));
      Add(bytes, {worker, {"kind", "kv_reserved"}}, static_cast<double>(h.kv_bytes_reserved()));
      kv_resident += static_cast<double>(h.kv_bytes_resident());
      kv_reserved += static_cast<double>(h.kv_bytes_reserved());
      int64_t prefill_total = 0, decode_total = 0;
      double prate = 0, drate = 0;
      if (ws != nullptr) {
        prefill_total = ws->prefill_base + ws->last.tokens_prefilled();
        decode_total = ws->decode_base + ws->last.tokens_generated();
        if (is_up) {
          prate = ws->prefill_rate;
          drate = ws->decode_rate;
        }
      }
      Add(cache_bytes, {worker, {"kind", "budget"}},
          static_cast<double>(h.prefix_cache_budget_bytes()));
      Add(cache_bytes, {worker, {"kind", "used"}},
          static_cast<double>(h.prefix_cache_used_bytes()));
      Add(cache_entries, {worker}, static_cast<double>(h.prefix_cache_entries()));
      if (ws != nullptr) {
        Add(cache_lookups, {worker},
            static_cast<double>(ws->lookups_base + ws->last.prefix_lookups()));
        Add(cache_hits, {worker}, static_cast<double>(ws->hits_base + ws->last.prefix_hits()));
        Add(cache_tokens, {worker},
            static_cast<double>(ws->cached_base + ws->last.prefix_cached_tokens()));
        Add(cache_evictions, {worker},
            static_cast<double>(ws->evictions_base + ws->last.prefix_cache_evictions()));
      } else {
        for (MetricFamily* f : {&cache_lookups, &cache_hits, &cache_tokens, &cache_evictions}) {
          Add(*f, {worker}, 0);
        }
      }
      Add(prefilled, {worker}, static_cast<double>(prefill_total));
      Add(decoded, {worker}, static_cast<double>(decode_total));
      Add(prefill_rate, {worker}, prate);
      Add(decode_rate, {worker}, drate);
    }
    if (have_dispatcher) {
      Add(running_total, {}, stats.busy_slots);
      Add(slot_use, {},
          stats.total_slots > 0 ? static_cast<double>(stats.busy_slots) / stats.total_slots : 0.0);
      Add(kv_use, {}, kv_reserved > 0 ? std::min(1.0, kv_resident / kv_reserved) : 0.0);
    }
    std::vector<MetricFamily> out;
    for (MetricFamily* f :
         {&queue,         &queue_cap,  &running,      &running_total,  &slot_use,    &kv_use,
          &slots,         &up,         &state,        &restarts,       &queued,      &bytes,
          &prefilled,     &decoded,    &prefill_rate, &decode_rate,    &cache_bytes, &cache_entries,
          &cache_lookups, &cache_hits, &cache_tokens, &cache_evictions}) {
      if (!f->metric.empty()) out.push_back(std::move(*f));
    }
    return out;
  }

 private:
  const Metrics* m_;
};

Metrics::Metrics(const Labels& model_info, const Labels& build_info)
    : registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<PoolCollector>(this)) {
  prometheus::Registry& r = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("qwen_requests_total")
                   .Help(
                       "Finished qwen.v1.Qwen calls by method, gRPC status code and protocol "
                       "(grpc, or http for the HTTP API's).")
                   .Register(r);
  finish_ = &prometheus::BuildCounter()
                 .Name("qwen_generate_finish_total")
                 .Help("Generate streams that completed, by finish reason and protocol.")
                 .Register(r);
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("qwen_prompt_tokens_total")
                        .Help("Prompt tokens of Generate requests that reached a worker.")
                        .Register(r)
                        .Add({});
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("qwen_generated_tokens_total")
                           .Help("Tokens generated for Generate requests (whatever their end).")
                           .Register(r)
                           .Add({});
  cached_tokens_ = &prometheus::BuildCounter()
                        .Name("qwen_cached_tokens_total")
                        .Help("Prompt tokens reused from a worker's previous sequence.")
                        .Register(r)
                        .Add({});
  drafted_tokens_ = &prometheus::BuildCounter()
                         .Name("qwen_speculative_drafted_tokens_total")
                         .Help("Draft tokens verified by speculative decoding (Generate).")
                         .Register(r)
                         .Add({});
  accepted_tokens_ = &prometheus::BuildCounter()
                          .Name("qwen_speculative_accepted_tokens_total")
                          .Help("Draft tokens the model accepted (each saved a forward pass).")
                          .Register(r)
                          .Add({});
  auto& retries = prometheus::BuildCounter()
                      .Name("qwen_request_retries_total")
                      .Help(
                          "Generate requests sent to another worker after theirs failed before "
                          "the first token, by protocol.")
                      .Register(r);
  auto& ttft = prometheus::BuildHistogram()
                   .Name("qwen_time_to_first_token_seconds")
                   .Help("Generate: from the request's arrival to its first generated token.")
                   .Register(r);
  auto& itl = prometheus::BuildHistogram()
                  .Name("qwen_inter_token_latency_seconds")
                  .Help(
                      "Generate: time between consecutive tokens of a stream as the front end "
                      "receives them (tokens arriving together share the interval).")
                  .Register(r);
  auto& duration =
      prometheus::BuildHistogram()
          .Name("qwen_request_duration_seconds")
          .Help("Generate: from arrival to the final status, every call whatever its end.")
          .Register(r);
  auto& queue_wait = prometheus::BuildHistogram()
                         .Name("qwen_queue_wait_seconds")
                         .Help(
                             "Generate: from arrival to the start of its computation (the front "
                             "end's queue and the worker's), for streams that completed.")
                         .Register(r);
  // Both protocols' series exist from the start (zero until used), so that dashboards and
  // rates see them without gaps.
  for (auto [protocol, h] : {std::pair<const char*, Histograms*>{"grpc", &grpc_},
                             std::pair<const char*, Histograms*>{"http", &http_}}) {
    const prometheus::Labels labels = {{"protocol", protocol}};
    h->ttft = &ttft.Add(labels, kTtftBuckets);
    h->itl = &itl.Add(labels, kItlBuckets);
    h->duration = &duration.Add(labels, kDurationBuckets);
    h->queue_wait = &queue_wait.Add(labels, kQueueBuckets);
    h->retries = &retries.Add(labels);
  }
  prometheus::BuildGauge()
      .Name("qwen_model_info")
      .Help("The served model file (value 1).")
      .Register(r)
      .Add(model_info)
      .Set(1);
  prometheus::BuildGauge()
      .Name("qwen_build_info")
      .Help("The qwen-serve build (value 1).")
      .Register(r)
      .Add(build_info)
      .Set(1);
  prometheus::BuildGauge()
      .Name("qwen_start_time_seconds")
      .Help("When the front end started, in seconds since the Unix epoch.")
      .Register(r)
      .Add({})
      .Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
}

Metrics::~Metrics() {
  // Stop serving before the metrics go away.
  StopServing();
}

void Metrics::StopServing() {
  if (exposer_ == nullptr) return;
  // civetweb's listener thread polls its sockets in 2-second quanta and reads its stop flag only
  // between them, so destroying the exposer alone takes up to 2 s; a connection ends the poll at
  // once. The exposer is destroyed on a helper thread while this one knocks on the port.
  std::atomic<bool> done{false};
  std::thread stopper([this, &done] {
    exposer_.reset();
    done.store(true);
  });
  const std::string target = host_.empty() || host_ == "0.0.0.0" ? "127.0.0.1"
                             : host_ == "::" || host_ == "[::]"  ? "::1"
                                                                 : host_;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* addr = nullptr;
  const bool resolved =
      getaddrinfo(target.c_str(), std::to_string(port_).c_str(), &hints, &addr) == 0;
  while (!done.load()) {
    if (resolved) {
      const int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        (void)connect(fd, addr->ai_addr, addr->ai_addrlen);
        close(fd);
      }
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (addr != nullptr) freeaddrinfo(addr);
  stopper.join();
  port_ = 0;
}

absl::Status Metrics::Serve(const std::string& host, int port) {
  std::string address = host.find(':') != std::string::npos && host.front() != '['
                            ? absl::StrCat("[", host, "]:", port)
                            : absl::StrCat(host, ":", port);
  host_ = host;
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_port: cannot serve metrics on ", address, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(collector_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? port : ports.front();
  return absl::OkStatus();
}

int Metrics::port() const { return port_; }

void Metrics::SetSources(const Dispatcher* dispatcher, const WorkerPool* pool) {
  absl::MutexLock lock(&sources_mu_);
  dispatcher_ = dispatcher;
  pool_ = pool;
}

void Metrics::RecordRequest(const RequestSummary& r) {
  const std::string protocol = ProtocolLabel(r.protocol);
  requests_
      ->Add(
          {{"method", r.method}, {"code", StatusCodeName(r.status.code())}, {"protocol", protocol}})
      .Increment();
  if (!r.generate) return;
  const Histograms& h = HistogramsOf(protocol);
  h.duration->Observe(absl::ToDoubleSeconds(r.duration));
  if (r.attempts > 0) prompt_tokens_->Increment(r.prompt_tokens);
  generated_tokens_->Increment(r.generated_tokens);
  cached_tokens_->Increment(r.cached_tokens);
  drafted_tokens_->Increment(r.drafted_tokens);
  accepted_tokens_->Increment(r.accepted_tokens);
  if (r.attempts > 1) h.retries->Increment(r.attempts - 1);
  if (!r.finish_reason.empty()) {
    finish_->Add({{"reason", r.finish_reason}, {"protocol", protocol}}).Increment();
    if (r.queue_wait) h.queue_wait->Observe(absl::ToDoubleSeconds(*r.queue_wait));
  }
}

void Metrics::ObserveTimeToFirstToken(absl::Duration ttft, const std::string& protocol) {
  HistogramsOf(protocol).ttft->Observe(absl::ToDoubleSeconds(ttft));
}

void Metrics::ObserveInterTokenLatency(absl::Duration interval, int n,
                                       const std::string& protocol) {
  if (n <= 0) return;
  prometheus::Histogram* itl = HistogramsOf(protocol).itl;
  const double each = absl::ToDoubleSeconds(interval) / n;
  if (n == 1) {
    itl->Observe(each);
    return;
  }
  std::vector<double> increments(kItlBuckets.size() + 1, 0.0);
  size_t b = 0;
  while (b < kItlBuckets.size() && each > kItlBuckets[b]) ++b;
  increments[b] = n;
  itl->ObserveMultiple(increments, each * n);
}

Metrics::PrefixCacheTotals Metrics::GetPrefixCacheTotals() const {
  absl::MutexLock lock(&samples_mu_);
  PrefixCacheTotals t;
  for (const WorkerSamples& w : samples_) {
    if (!w.seen) continue;
    t.used_bytes += w.last.prefix_cache_used_bytes();
    t.entries += w.last.prefix_cache_entries();
    t.lookups += w.lookups_base + w.last.prefix_lookups();
    t.hits += w.hits_base + w.last.prefix_hits();
    t.cached_tokens += w.cached_base + w.last.prefix_cached_tokens();
    t.evictions += w.evictions_base + w.last.prefix_cache_evictions();
  }
  return t;
}

void Metrics::OnWorkerHealth(int index, uint64_t epoch, const worker::v1::HealthResponse& health,
                             absl::Time now) {
  if (index < 0) return;
  absl::MutexLock lock(&samples_mu_);
  if (index >= static_cast<int>(samples_.size())) samples_.resize(index + 1);
  WorkerSamples& w = samples_[index];
  if (w.seen && epoch < w.epoch) return;  // a late answer of a previous incarnation
  if (!w.seen || epoch > w.epoch) {
    if (w.seen) {
      // A new process: its counters start from zero; keep what the last one had done.
      w.prefill_base += w.last.tokens_prefilled();
      w.decode_base += w.last.tokens_generated();
      w.lookups_base += w.last.prefix_lookups();
      w.hits_base += w.last.prefix_hits();
      w.cached_base += w.last.prefix_cached_tokens();
      w.evictions_base += w.last.prefix_cache_evictions();
    }
    w.seen = true;
    w.epoch = epoch;
    w.last = health;
    w.window_start = now;
    w.window_prefill = w.prefill_base + health.tokens_prefilled();
    w.window_decode = w.decode_base + health.tokens_generated();
    w.prefill_rate = w.decode_rate = 0;
    return;
  }
  w.last = health;
  const int64_t prefill = w.prefill_base + health.tokens_prefilled();
  const int64_t decode = w.decode_base + health.tokens_generated();
  const absl::Duration elapsed = now - w.window_start;
  if (elapsed >= kRateWindow) {
    const double secs = absl::ToDoubleSeconds(elapsed);
    w.prefill_rate = static_cast<double>(prefill - w.window_prefill) / secs;
    w.decode_rate = static_cast<double>(decode - w.window_decode) / secs;
    w.window_start = now;
    w.window_prefill = prefill;
    w.window_decode = decode;
  }
}

Metrics::WorkerTotals Metrics::GetWorkerTotals(int index) const {
  absl::MutexLock lock(&samples_mu_);
  WorkerTotals t;
  if (index < 0 || index >= static_cast<int>(samples_.size()) || !samples_[index].seen) return t;
  const WorkerSamples& w = samples_[index];
  t.prefill_tokens = w.prefill_base + w.last.tokens_prefilled();
  t.decode_tokens = w.decode_base + w.last.tokens_generated();
  t.prefill_per_second = w.prefill_rate;
  t.decode_per_second = w.decode_rate;
  return t;
}

std::string Metrics::Render() const {
  std::vector<MetricFamily> families = registry_->Collect();
  for (MetricFamily& f : collector_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

Metrics::Labels BuildInfoLabels() {
  Metrics::Labels l;
  l["version"] = QWEN_VERSION;
  l["isa"] = std::string(IsaName(ActiveIsa()));
#if defined(__clang__)
  l["compiler"] = absl::StrCat("clang-", __clang_major__, ".", __clang_minor__);
#elif defined(__GNUC__)
  l["compiler"] = absl::StrCat("gcc-", __GNUC__, ".", __GNUC_MINOR__);
#else
  l["compiler"] = "unknown";
#endif
  l["build_type"] = QWEN_BUILD_TYPE;
  l["grpc"] = grpc::Version();
  return l;
}

Metrics::Labels ModelInfoLabels(const TextModel& model, const std::string& path,
                                const std::string& fallback_name) {
  const v1::GetModelInfoResponse info = StaticModelInfo(model, fallback_name);
  Metrics::Labels l;
  l["name"] = info.name();
  l["architecture"] = info.architecture();
  l["file_type"] = info.file_type();
  l["file_layout"] = info.file_layout();
  l["parameters"] = absl::StrCat(info.parameter_count());
  l["context_length"] = absl::StrCat(info.context_length());
  l["vocab_size"] = absl::StrCat(info.vocab_size());
  const size_t slash = path.find_last_of('/');
  l["file"] = slash == std::string::npos ? path : path.substr(slash + 1);
  return l;
}

}  // namespace qwen::service

// Prometheus metrics of the front end, served over HTTP on their own port.
#ifndef QWEN_SERVICE_METRICS_H_
#define QWEN_SERVICE_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "qwen/worker/v1/worker.pb.h"
#include "service/request_log.h"
#include "service/text_model.h"

namespace prometheus {
class Exposer;
}

namespace qwen::service {

class Dispatcher;
class WorkerPool;

// Every metric is named qwen_*; docs/observability.md lists them all. Three kinds of source:
// - events the front end reports as they happen (RecordRequest at the end of every RPC,
//   ObserveTimeToFirstToken / ObserveInterTokenLatency while a stream runs): counters and
//   histograms kept here, so they never go backwards when a worker restarts;
// - the workers' own measurements, which arrive with each heartbeat (OnWorkerHealth): engine
//   counters are accumulated across a worker's incarnations, throughput is derived from them;
// - the state of the queue and the pool, read from the Dispatcher and WorkerPool at each scrape.
//
// Thread-safe. The sources given to SetSources() must stay valid until SetSources(nullptr,
// nullptr) returns (it waits for a scrape that is reading them).
class Metrics {
 public:
  // Static labels of qwen_model_info and qwen_build_info.
  using Labels = std::map<std::string, std::string>;

  Metrics(const Labels& model_info, const Labels& build_info);
  ~Metrics();

  // Serves GET /metrics over HTTP on host:port (port > 0). UNAVAILABLE when it cannot listen.
  absl::Status Serve(const std::string& host, int port);
  // The port served on; 0 when not serving.
  int port() const;
  // Stops serving, in a few milliseconds (the HTTP library's listener otherwise notices a stop
  // only at its next 2-second poll). Called on shutdown; the destructor does it too.
  void StopServing();

  void SetSources(const Dispatcher* dispatcher, const WorkerPool* pool);

  // One finished RPC: qwen_requests_total, and for Generate the duration, queue wait, token
  // and finish-reason counters; the per-request series carry r.protocol as their `protocol`
  // label.
  void RecordRequest(const RequestSummary& r);
  // A stream's first token arrived `ttft` after the request did. `protocol`: the `protocol`
  // label of the histograms, "grpc" or "http" (the HTTP API's requests).
  void ObserveTimeToFirstToken(absl::Duration ttft, const std::string& protocol = "grpc");
  // `n` tokens arrived together, `interval` after the previous one(s): n observations of
  // interval / n.
  void ObserveInterTokenLatency(absl::Duration interval, int n,
                                const std::string& protocol = "grpc");
  // A heartbeat answer of worker `index`, incarnation `epoch`.
  void OnWorkerHealth(int index, uint64_t epoch, const worker::v1::HealthResponse& health,
                      absl::Time now);

  // Everything in the Prometheus text format, as /metrics serves it.
  std::string Render() const;

  // A worker's engine counters over all its incarnations and the latest throughput.
  struct WorkerTotals {
    int64_t prefill_tokens = 0;
    int64_t decode_tokens = 0;
    double prefill_per_second = 0;
    double decode_per_second = 0;
  };
  WorkerTotals GetWorkerTotals(int index) const;

  // The workers' prefix caches as of their last heartbeats: bytes and entries now held, and
  // counters over all incarnations.
  struct PrefixCacheTotals {
    int64_t used_bytes = 0;
    int64_t entries = 0;
    int64_t lookups = 0;
    int64_t hits = 0;
    int64_t cached_tokens = 0;
    int64_t evictions = 0;
  };
  PrefixCacheTotals GetPrefixCacheTotals() const;

  // How long a window the throughput gauges average over (at least; it ends at a heartbeat).
  static constexpr absl::Duration kRateWindow = absl::Seconds(5);

 private:
  class PoolCollector;
  struct WorkerSamples {
    uint64_t epoch = 0;
    bool seen = false;
    worker::v1::HealthResponse last;
    // Engine counters of earlier incarnations, so that the totals only grow.
    int64_t prefill_base = 0;
    int64_t decode_base = 0;
    int64_t lookups_base = 0;
    int64_t hits_base = 0;
    int64_t cached_base = 0;
    int64_t evictions_base = 0;
    absl::Time window_start;
    int64_t window_prefill = 0;
    int64_t window_decode = 0;
    double prefill_rate = 0;
    double decode_rate = 0;
  };

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<PoolCollector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string host_;  // as given to Serve

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* finish_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Counter* cached_tokens_;
  prometheus::Counter* drafted_tokens_;
  prometheus::Counter* accepted_tokens_;
  // The request series of one protocol (label `protocol`).
  struct Histograms {
    prometheus::Histogram* ttft;
    prometheus::Histogram* itl;
    prometheus::Histogram* duration;
    prometheus::Histogram* queue_wait;
    prometheus::Counter* retries;
  };
  // The label of RequestSummary::protocol: "http", or "grpc" for anything else, so that a
  // stray value cannot add series.
  static const char* ProtocolLabel(const std::string& protocol) {
    return protocol == "http" ? "http" : "grpc";
  }
  const Histograms& HistogramsOf(const std::string& protocol) const {
    return protocol == "http" ? http_ : grpc_;
  }
  Histograms grpc_;
  Histograms http_;

  mutable absl::Mutex sources_mu_;  // held while a scrape reads the sources
  const Dispatcher* dispatcher_ ABSL_GUARDED_BY(sources_mu_) = nullptr;
  const WorkerPool* pool_ ABSL_GUARDED_BY(sources_mu_) = nullptr;

  mutable absl::Mutex samples_mu_;
  std::vector<WorkerSamples> samples_ ABSL_GUARDED_BY(samples_mu_);
};

// The labels of qwen_build_info: version, isa (the kernels' instruction set), compiler,
// build_type, grpc.
Metrics::Labels BuildInfoLabels();

// The labels of qwen_model_info: name, architecture, file_type, parameters, context_length,
// vocab_size and file (the path's last component).
Metrics::Labels ModelInfoLabels(const TextModel& model, const std::string& path,
                                const std::string& fallback_name = "");

}  // namespace qwen::service

#endif  // QWEN_SERVICE_METRICS_H_

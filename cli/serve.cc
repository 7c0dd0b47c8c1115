// `qwen serve`: the gRPC front end and its pool of worker processes.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/engine_flags.h"
#include "cli/flags_util.h"
#include "cli/log_flags.h"
#include "cli/metrics_flags.h"
#include "cli/serve_config.h"
#include "cli/serve_limits.h"
#include "cli/serving_flags.h"
#include "cli/video_flags.h"
#include "inference/common/thread_pool.h"
#include "service/front_end.h"

ABSL_FLAG(int32_t, workers, 2,
          "Worker processes. Each maps the model file read-only (the weights exist once in "
          "memory however many run) and runs --slots sequences.");
ABSL_FLAG(std::string, host, "0.0.0.0",
          "Address to listen on (\"127.0.0.1\" for local only, "
          "\"::\" for IPv6).");
ABSL_FLAG(int32_t, port, 50051,
          "TCP port of the gRPC server (0: any free port; the log says "
          "which).");
ABSL_FLAG(int32_t, queue_size, 64,
          "Requests that may wait for a free slot; beyond it Generate answers RESOURCE_EXHAUSTED "
          "at once.");
ABSL_FLAG(int32_t, default_max_tokens, 256,
          "max_tokens of a request that sets none (capped by the room its prompt leaves in the "
          "context).");
ABSL_FLAG(std::string, socket_dir, "",
          "Directory in which the private (mode 0700) directory of the workers' Unix sockets is "
          "made (default: $TMPDIR, else /tmp).");
ABSL_FLAG(absl::Duration, grace_period, absl::Seconds(30),
          "On SIGTERM or SIGINT, how long running streams may take to finish before they are "
          "cancelled (a second signal cancels at once).");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "How often each worker is sent a health check.");
ABSL_FLAG(absl::Duration, heartbeat_timeout, absl::Seconds(10),
          "A worker that does not answer a health check within this is wedged: it is killed and "
          "restarted.");
ABSL_FLAG(absl::Duration, worker_startup_timeout, absl::Seconds(120),
          "A worker that is not serving this long after its start is killed and restarted.");
ABSL_FLAG(absl::Duration, restart_backoff_min, absl::Milliseconds(250),
          "Delay before restarting a worker that died; doubles with each further failure.");
ABSL_FLAG(absl::Duration, restart_backoff_max, absl::Seconds(30),
          "Longest delay before restarting a worker.");
ABSL_FLAG(int32_t, max_retries, 2,
          "Times a request whose worker died before producing its first token is sent to "
          "another worker.");
ABSL_FLAG(absl::Duration, max_connection_age, absl::ZeroDuration(),
          "Close each client connection (HTTP/2 GOAWAY) after about this long, so that clients "
          "reconnect and a load balancer spreads them over new replicas (0: never).");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::ZeroDuration(),
          "After --max_connection_age, how long the calls of a closing connection may still run "
          "before they are cancelled (0: as long as they take).");
ABSL_FLAG(bool, testing_allow_forced_output, false,
          "Testing only: honour the x-qwen-testing-forced-output-bin request metadata, whose text "
          "the workers emit instead of sampled tokens. Never enable in production.");

namespace qwen::cli {

int RunServe(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "serve",
      "qwen serve --model M.gguf [--workers N] [--port P] [--slots S] ...\n\n"
      "Serves the model over gRPC (qwen.v1.Qwen, grpc.health.v1.Health, reflection) with a pool\n"
      "of worker processes. Stops on SIGTERM or SIGINT after the running streams finish.",
      argc, argv, ServeFlagFiles());
  if (!args.empty()) {
    std::fprintf(stderr, "qwen serve: unexpected argument \"%s\"\n", args[0].c_str());
    return 2;
  }
  const absl::Status log_flags = ApplyLogFlags();
  if (!log_flags.ok() && !absl::GetFlag(FLAGS_check_config)) {
    std::fprintf(stderr, "qwen serve: %s\n", std::string(log_flags.message()).c_str());
    return 2;
  }
  service::FrontEndOptions o;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.queue_size = absl::GetFlag(FLAGS_queue_size);
  o.limits.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  o.grace_period = absl::GetFlag(FLAGS_grace_period);
  o.max_retries = absl::GetFlag(FLAGS_max_retries);
  o.allow_forced_output = absl::GetFlag(FLAGS_testing_allow_forced_output);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  o.max_connection_age_grace = absl::GetFlag(FLAGS_max_connection_age_grace);
  service::WorkerPoolOptions& p = o.pool;
  absl::Status model_status;
  ModelFiles model_files;
  if (const std::string model = absl::GetFlag(FLAGS_model); !model.empty()) {
    // Workers get the resolved file: they need not know about Ollama's store.
    absl::StatusOr<ModelFiles> files = ResolveModel(model);
    if (files.ok()) {
      model_files = *files;
      p.model_path = files->model_path;
      o.model_name = files->display_name;
    } else {
      model_status =
          absl::Status(files.status().code(), absl::StrCat("--model: ", files.status().message()));
    }
  }
  p.workers = absl::GetFlag(FLAGS_workers);
  p.slots = absl::GetFlag(FLAGS_slots);
  p.ctx_size = absl::GetFlag(FLAGS_ctx_size);
  absl::Status parse_status;
  if (absl::StatusOr<model::KvType> kv = KvTypeFlag(); kv.ok()) {
    p.kv_type = *kv;
  } else {
    parse_status = kv.status();
  }
  p.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  p.max_draft = absl::GetFlag(FLAGS_max_draft);
  p.mtp_draft_vocab = absl::GetFlag(FLAGS_mtp_draft_vocab);
  p.mmproj_path = VisionTowerPath(model_files);
  p.image_min_pixels = absl::GetFlag(FLAGS_image_min_pixels);
  p.image_max_pixels = absl::GetFlag(FLAGS_image_max_pixels);
  if (absl::StatusOr<int64_t> mb = PrefixCacheMbFlag(); mb.ok()) {
    p.prefix_cache_mb = *mb;
  } else {
    parse_status = mb.status();
  }
  p.vision_cache_mb = absl::GetFlag(FLAGS_vision_cache_mb);
  p.testing_video_pair_delay = absl::GetFlag(FLAGS_testing_video_pair_delay);
  o.video = VideoSettingsFromFlags();
  p.snapshot_interval = absl::GetFlag(FLAGS_snapshot_interval);
  p.packed_dir = absl::GetFlag(FLAGS_packed_dir);
  p.socket_dir = absl::GetFlag(FLAGS_socket_dir);
  p.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  p.heartbeat_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  p.startup_timeout = absl::GetFlag(FLAGS_worker_startup_timeout);
  p.restart_backoff_min = absl::GetFlag(FLAGS_restart_backoff_min);
  p.restart_backoff_max = absl::GetFlag(FLAGS_restart_backoff_max);
  // The cores are shared among the workers unless told otherwise.
  p.threads = absl::GetFlag(FLAGS_threads);
  if (p.threads == 0) p.threads = std::max(1, AvailableCores() / std::max(1, p.workers));
  absl::Status limits = ApplyServeLimitFlags(&o);
  if (!parse_status.ok()) limits = parse_status;
  ApplyServeProbeFlags(&o);
  ApplyServeHttpFlags(&o);
  if (!log_flags.ok()) limits = log_flags;
  if (!model_status.ok()) limits = model_status;
  // --check_config reports every problem itself; a real start stops at the first.
  if (absl::GetFlag(FLAGS_check_config)) {
    return CheckServeConfig(o, absl::GetFlag(FLAGS_json), limits);
  }
  if (absl::Status v = limits.ok() ? ValidateServeOptions(o) : limits; !v.ok()) {
    std::fprintf(stderr, "qwen serve: %s\n", std::string(v.message()).c_str());
    return 2;
  }
  absl::Status s = service::RunFrontEnd(o);
  if (!s.ok()) {
    std::fprintf(stderr, "qwen serve: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace qwen::cli

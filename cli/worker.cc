// `qwen worker`: one worker process of `qwen serve` (started by it; not meant to be run by hand
// except for debugging).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/engine_flags.h"
#include "cli/flags_util.h"
#include "cli/log_flags.h"
#include "cli/serving_flags.h"
#include "service/worker_server.h"

ABSL_FLAG(std::string, socket, "", "Path of the Unix domain socket to serve qwen.worker.v1 on.");
ABSL_FLAG(int32_t, index, 0, "The worker's index in the pool (for log lines).");
ABSL_FLAG(int32_t, parent_pid, 0,
          "Process id of the front end: the worker exits when it is not (or no longer) its "
          "parent. 0: no check.");
ABSL_FLAG(bool, testing_allow_forced_tokens, false,
          "Testing only: honour forced_tokens in requests (teacher forcing).");

namespace qwen::cli {

int RunWorker(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "worker",
      "qwen worker --model M.gguf --socket PATH [--slots S] [--threads T] ...\n\n"
      "One worker process of `qwen serve`: runs the model's engine and serves the internal\n"
      "qwen.worker.v1.Worker protocol on a Unix domain socket until SIGTERM.",
      argc, argv,
      {"model_flag", "threads_flag", "engine_flags", "mmproj_flag", "packed_dir_flag",
       "serving_flags", "log_flags"});
  if (!args.empty()) {
    std::fprintf(stderr, "qwen worker: unexpected argument \"%s\"\n", args[0].c_str());
    return 2;
  }
  if (absl::Status st = ApplyLogFlags(); !st.ok()) {
    std::fprintf(stderr, "qwen worker: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  service::WorkerOptions o;
  const absl::StatusOr<ModelFiles> model = ResolveModelFlag();
  if (!model.ok()) {
    std::fprintf(stderr, "qwen worker: %s\n", std::string(model.status().message()).c_str());
    return 2;
  }
  o.model_path = model->model_path;
  o.socket_path = absl::GetFlag(FLAGS_socket);
  o.index = absl::GetFlag(FLAGS_index);
  o.slots = absl::GetFlag(FLAGS_slots);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.ctx_size = absl::GetFlag(FLAGS_ctx_size);
  absl::StatusOr<model::KvType> kv = KvTypeFlag();
  absl::StatusOr<int64_t> prefix_cache_mb = PrefixCacheMbFlag();
  for (const absl::Status& st : {kv.status(), prefix_cache_mb.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "qwen worker: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  o.kv_type = *kv;
  o.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  o.max_draft = absl::GetFlag(FLAGS_max_draft);
  o.mtp_draft_vocab = absl::GetFlag(FLAGS_mtp_draft_vocab);
  o.mmproj_path = VisionTowerPath(*model);
  o.packed_dir = absl::GetFlag(FLAGS_packed_dir);
  o.prefix_cache_mb = *prefix_cache_mb;
  o.vision_cache_mb = absl::GetFlag(FLAGS_vision_cache_mb);
  o.testing_video_pair_delay = absl::GetFlag(FLAGS_testing_video_pair_delay);
  o.snapshot_interval = absl::GetFlag(FLAGS_snapshot_interval);
  o.parent_pid = absl::GetFlag(FLAGS_parent_pid);
  o.allow_forced_tokens = absl::GetFlag(FLAGS_testing_allow_forced_tokens);
  o.allow_fault_injection = absl::GetFlag(FLAGS_testing_allow_fault_injection);
  absl::Status s = service::RunWorker(o);
  if (!s.ok()) {
    std::fprintf(stderr, "qwen worker: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace qwen::cli

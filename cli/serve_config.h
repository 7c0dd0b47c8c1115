// `qwen serve` configuration checks: the validation every start runs, and `--check_config`,
// which validates a command line and prints the effective configuration and the memory it
// needs without starting the server (what deployment tests and operators run).
#ifndef QWEN_CLI_SERVE_CONFIG_H_
#define QWEN_CLI_SERVE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "inference/model/config.h"
#include "service/front_end.h"

ABSL_DECLARE_FLAG(bool, check_config);

namespace qwen::cli {

// Memory a worker needs on top of its slots (compute scratch for a prefill chunk, logits, gRPC,
// heap) and the front end's own (tokenizer, chat template, gRPC buffers). Deliberately generous
// round numbers: the deployment's memory request adds them to the exact terms below.
inline constexpr int64_t kWorkerOverheadBytes = int64_t{256} << 20;
inline constexpr int64_t kFrontEndOverheadBytes = int64_t{256} << 20;

// What a configuration needs at most, in bytes:
//   weights (the file, mapped once and shared by every process)
//   + packed copy (of the weight matrices in --packed_dir, shared likewise; at most the file)
//   + workers x slots x (state_per_slot + kv_per_token x ctx_size)
//   + workers x (prefix_cache + worker_overhead) + front_end_overhead.
// A slot's KV cache is address space reserved for the whole context and committed as tokens
// arrive, so this is the worst case: every slot holding a full context.
struct MemoryEstimate {
  int64_t weights_bytes = 0;
  // The packed copy of the weights (--packed_dir, a tmpfs: memory that is not reclaimable),
  // counted as the file's size, which bounds it; 0 when --packed_dir is empty.
  int64_t packed_bytes = 0;
  // Delta-net recurrent + conv states of one sequence, and what speculative decoding keeps
  // with them (StateSize::speculative_bytes at --max_draft).
  int64_t state_bytes_per_slot = 0;
  int64_t kv_bytes_per_token = 0;  // K and V of every attention layer, at --kv_type
  int64_t ctx_size = 0;
  int workers = 0;
  int slots = 0;
  int64_t prefix_cache_bytes = 0;  // each worker's prefix cache budget (--prefix_cache_mb)
  int64_t worker_overhead_bytes = kWorkerOverheadBytes;
  int64_t front_end_overhead_bytes = kFrontEndOverheadBytes;

  int64_t slot_bytes() const { return state_bytes_per_slot + kv_bytes_per_token * ctx_size; }
  int64_t total_bytes() const {
    return weights_bytes + packed_bytes + int64_t{workers} * slots * slot_bytes() +
           int64_t{workers} * (prefix_cache_bytes + worker_overhead_bytes) +
           front_end_overhead_bytes;
  }
};

MemoryEstimate EstimateMemory(const model::ModelConfig& config, int64_t file_bytes,
                              const service::FrontEndOptions& options);

// Checks the options that need no model: ranges, durations, the KV type. Errors name the flag.
absl::Status ValidateServeOptions(const service::FrontEndOptions& options);

// The files of flags `qwen serve` takes besides cli/serve*.cc (ParseFlags' `flag_files`): the
// flags --check_config lists, and the only ones `qwen serve` accepts.
inline const std::vector<std::string>& ServeFlagFiles() {
  static const std::vector<std::string> files = {
      "model_flag",      "json_flag",     "threads_flag", "engine_flags", "mmproj_flag",
      "packed_dir_flag", "serving_flags", "video_flags",  "log_flags",    "metrics_flags"};
  return files;
}

// `qwen serve --check_config`: validates the options (and, when --model names a file that exists
// here, that it is a readable GGUF of architecture qwen35 with a tokenizer), checks that the
// socket directory is writable when it exists here, prints the effective configuration and the
// memory estimate (text, or JSON with --json) and returns the exit status: 0 valid, 2 not.
// `flag_status` is what copying the security and limit flags into `options` reported.
int CheckServeConfig(const service::FrontEndOptions& options, bool json,
                     const absl::Status& flag_status);

}  // namespace qwen::cli

#endif  // QWEN_CLI_SERVE_CONFIG_H_

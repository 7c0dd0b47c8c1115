#include "cli/serving_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "service/prefix_cache_budget.h"

ABSL_FLAG(int32_t, slots, 4,
          "Sequences each worker runs at once (continuously batched); each slot holds a context "
          "of --ctx_size tokens.");
ABSL_FLAG(int32_t, prefill_chunk, 256,
          "Prompt tokens a worker's engine step prefills on top of one token per decoding "
          "sequence: smaller keeps running streams' inter-token latency low while a long prompt "
          "is prefilled, larger prefills faster.");
ABSL_FLAG(std::string, prefix_cache_mb, "auto",
          "Memory (MiB) each worker may use for its prefix cache: snapshots of sequence states "
          "(about 50 MiB of delta-net state each for the 4B model, plus 32 KiB of KV cache per "
          "token at f16) from which later prompts with the same start resume. 0 disables it. "
          "auto: room for 8 full-context snapshots per slot, at most 1024 MiB and a quarter of "
          "the memory available (MemAvailable, or the container's limit) shared by the workers, "
          "at least 16 MiB (1024 MiB for the 4B model on a machine with room; the start-up log "
          "and --check_config say what it chose and why).");
ABSL_FLAG(int32_t, snapshot_interval, 512,
          "The prefix cache snapshots long prompts every this many tokens (and each prompt at "
          "its end and after its generation): a prompt that diverges from a cached one resumes "
          "at the last snapshot before the divergence. Smaller reuses more but costs a state "
          "snapshot per interval.");
ABSL_FLAG(int64_t, vision_cache_mb, 256,
          "Memory (MiB) each worker may keep image and video-frame embeddings in, by content: a "
          "second request about the same image or video (another question, a new conversation) "
          "runs the vision tower on nothing it has seen. 0 disables it.");
ABSL_FLAG(absl::Duration, testing_video_pair_delay, absl::ZeroDuration(),
          "Testing only: each video frame pair's encode starts with this pause, so that tests "
          "can cancel a video encode under way. Never set in production.");
ABSL_FLAG(bool, testing_allow_fault_injection, false,
          "Testing only: workers take SIGUSR1 (wedge the engine thread at its next token) and "
          "SIGUSR2 (allocate memory until the worker's memory limit is hit). Never enable in "
          "production.");

namespace qwen::cli {

absl::StatusOr<int64_t> PrefixCacheMbFlag() {
  const std::string v = absl::GetFlag(FLAGS_prefix_cache_mb);
  if (v == "auto") return service::kAutoPrefixCacheMb;
  int64_t mb = 0;
  if (!absl::SimpleAtoi(v, &mb) || mb < 0 || mb > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prefix_cache_mb must be auto or a number of MiB in [0, 2^30], not \"", v, "\""));
  }
  return mb;
}

}  // namespace qwen::cli

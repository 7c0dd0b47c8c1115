// Flags that `qwen serve` passes on to its workers (`qwen worker`), defined once.
#ifndef QWEN_CLI_SERVING_FLAGS_H_
#define QWEN_CLI_SERVING_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

ABSL_DECLARE_FLAG(int32_t, slots);
ABSL_DECLARE_FLAG(int32_t, prefill_chunk);
ABSL_DECLARE_FLAG(std::string, prefix_cache_mb);
ABSL_DECLARE_FLAG(int32_t, snapshot_interval);
ABSL_DECLARE_FLAG(int64_t, vision_cache_mb);
ABSL_DECLARE_FLAG(absl::Duration, testing_video_pair_delay);
ABSL_DECLARE_FLAG(bool, testing_allow_fault_injection);

namespace qwen::cli {

// --prefix_cache_mb: a number of MiB (0: off), or "auto" (service::kAutoPrefixCacheMb, sized
// by service::AutoPrefixCacheBudget once the model is known). INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> PrefixCacheMbFlag();

}  // namespace qwen::cli

#endif  // QWEN_CLI_SERVING_FLAGS_H_

// Flags that `qwen serve` passes on to its workers (`qwen worker`), defined once.
#ifndef QWEN_CLI_SERVING_FLAGS_H_
#define QWEN_CLI_SERVING_FLAGS_H_

#include <cstdint>

#include "absl/flags/declare.h"
#include "absl/time/time.h"

ABSL_DECLARE_FLAG(int32_t, slots);
ABSL_DECLARE_FLAG(int32_t, prefill_chunk);
ABSL_DECLARE_FLAG(int64_t, prefix_cache_mb);
ABSL_DECLARE_FLAG(int32_t, snapshot_interval);
ABSL_DECLARE_FLAG(int64_t, vision_cache_mb);
ABSL_DECLARE_FLAG(absl::Duration, testing_video_pair_delay);
ABSL_DECLARE_FLAG(bool, testing_allow_fault_injection);

#endif  // QWEN_CLI_SERVING_FLAGS_H_

// The prefix cache's budget per worker when --prefix_cache_mb is "auto" (the default): sized from
// the model's sequence state and the memory this machine (or container) has, so that a small
// model on a laptop does not reserve a GiB per worker for snapshots of a few KiB.
#ifndef QWEN_SERVICE_PREFIX_CACHE_BUDGET_H_
#define QWEN_SERVICE_PREFIX_CACHE_BUDGET_H_

#include <cstdint>
#include <string>

#include "inference/model/config.h"
#include "inference/model/state.h"

namespace qwen::service {

// --prefix_cache_mb's value for "choose for me".
inline constexpr int64_t kAutoPrefixCacheMb = -1;

// Room for this many full-context snapshots (delta-net state plus the KV cache of --ctx_size
// tokens) per slot: a few conversations per slot whose next turns resume.
inline constexpr int kAutoSnapshotsPerSlot = 8;
// Never more than this per worker (what the 4B model gets: 20 snapshots of short prompts)...
inline constexpr int64_t kAutoMaxMb = 1024;
// ...nor more than this share of the memory available, split among the workers...
inline constexpr double kAutoMemoryShare = 0.25;
// ...and at least this much, so that the cache works at all.
inline constexpr int64_t kAutoMinMb = 16;

struct PrefixCacheBudget {
  int64_t mb = 0;
  std::string reason;  // which bound chose it, for the log and --check_config
};

// The auto budget: min(kAutoSnapshotsPerSlot x slots x (state + KV x ctx_size), kAutoMaxMb,
// kAutoMemoryShare x available_bytes / workers), at least kAutoMinMb, in whole MiB.
// `available_bytes` < 0: unknown (the memory bound is left out).
PrefixCacheBudget AutoPrefixCacheBudget(const model::ModelConfig& config, int64_t ctx_size,
                                        model::KvType kv_type, int slots, int workers,
                                        int64_t available_bytes);

// Memory this process could still use: /proc/meminfo's MemAvailable, lowered to what the cgroup's
// limit leaves (v2 memory.max - memory.current, or v1's limit - usage) in a container. -1 when
// none can be read.
int64_t AvailableMemoryBytes();

}  // namespace qwen::service

#endif  // QWEN_SERVICE_PREFIX_CACHE_BUDGET_H_

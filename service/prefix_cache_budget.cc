#include "service/prefix_cache_budget.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace qwen::service {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// The first line of `path` as an integer; -1 when absent or not a number ("max").
int64_t ReadNumber(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return -1;
  int64_t v = 0;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &v) ? v : -1;
}

}  // namespace

PrefixCacheBudget AutoPrefixCacheBudget(const model::ModelConfig& config, int64_t ctx_size,
                                        model::KvType kv_type, int slots, int workers,
                                        int64_t available_bytes) {
  const model::StateSize s = model::SequenceState::SizeFor(config, ctx_size, kv_type);
  const int64_t snapshot =
      static_cast<int64_t>(s.recurrent_bytes + s.conv_bytes + s.kv_bytes_per_token * ctx_size);
  const int64_t by_state = int64_t{kAutoSnapshotsPerSlot} * std::max(1, slots) * snapshot;
  PrefixCacheBudget b;
  int64_t bytes = by_state;
  b.reason =
      absl::StrFormat("%d snapshots per slot x %d slots x %.2f MiB (state + KV of %d tokens)",
                      kAutoSnapshotsPerSlot, slots, static_cast<double>(snapshot) / kMiB, ctx_size);
  if (bytes > kAutoMaxMb * kMiB) {
    bytes = kAutoMaxMb * kMiB;
    b.reason = absl::StrCat("the auto cap of ", kAutoMaxMb, " MiB");
  }
  if (available_bytes >= 0) {
    const int64_t share =
        static_cast<int64_t>(kAutoMemoryShare * static_cast<double>(available_bytes)) /
        std::max(1, workers);
    if (share < bytes) {
      bytes = share;
      b.reason = absl::StrFormat("%.0f%% of the %.0f MiB available, shared by %d workers",
                                 kAutoMemoryShare * 100,
                                 static_cast<double>(available_bytes) / kMiB, workers);
    }
  }
  b.mb = std::max(kAutoMinMb, (bytes + kMiB - 1) / kMiB);
  if (b.mb == kAutoMinMb && bytes < kAutoMinMb * kMiB) {
    b.reason = absl::StrCat("the auto floor of ", kAutoMinMb, " MiB");
  }
  return b;
}

int64_t AvailableMemoryBytes() {
  int64_t available = -1;
  {
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    while (std::getline(meminfo, line)) {
      absl::string_view v = line;
      if (absl::ConsumePrefix(&v, "MemAvailable:")) {
        v = absl::StripAsciiWhitespace(v);
        absl::ConsumeSuffix(&v, "kB");
        int64_t kb = 0;
        if (absl::SimpleAtoi(absl::StripAsciiWhitespace(v), &kb)) available = kb * 1024;
        break;
      }
    }
  }
  // A container's limit: cgroup v2, else v1.
  int64_t limit = ReadNumber("/sys/fs/cgroup/memory.max");
  int64_t used = ReadNumber("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = ReadNumber("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = ReadNumber("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  // v1 reports "no limit" as a huge number.
  if (limit > 0 && limit < (int64_t{1} << 60) && used >= 0) {
    const int64_t left = std::max<int64_t>(0, limit - used);
    available = available < 0 ? left : std::min(available, left);
  }
  return available;
}

}  // namespace qwen::service

// Vision embeddings kept by content: a second request with the same image or video (another
// question about it, in a new conversation) reuses them instead of running the tower again.
#ifndef QWEN_INFERENCE_MULTIMODAL_EMBEDDING_CACHE_H_
#define QWEN_INFERENCE_MULTIMODAL_EMBEDDING_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace qwen::multimodal {

struct EmbeddingCacheStats {
  size_t budget_bytes = 0;
  size_t used_bytes = 0;
  int64_t entries = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;
};

// A least-recently-used map from a content key (a hash of the encoded file, the grid and, for a
// video frame pair, which pair) to embedding rows, within a byte budget. An entry larger than
// the budget is not kept. Budget 0: nothing is kept.
//
// Thread-safe.
class EmbeddingCache {
 public:
  explicit EmbeddingCache(size_t budget_bytes) : budget_(budget_bytes) {}

  // The rows stored under `key`, or null (counted as a hit or a miss).
  std::shared_ptr<const std::vector<float>> Find(const std::string& key);
  // Stores `rows` under `key` (replacing what was there), evicting the least recently used
  // entries to stay within the budget.
  void Insert(const std::string& key, std::vector<float> rows);

  EmbeddingCacheStats stats() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const std::vector<float>>>;
  void Remove(std::list<Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t budget_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  EmbeddingCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qwen::multimodal

#endif  // QWEN_INFERENCE_MULTIMODAL_EMBEDDING_CACHE_H_

#include "inference/multimodal/embedding_cache.h"

namespace qwen::multimodal {
namespace {

size_t Bytes(const std::vector<float>& rows) { return rows.size() * sizeof(float); }

}  // namespace

std::shared_ptr<const std::vector<float>> EmbeddingCache::Find(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void EmbeddingCache::Insert(const std::string& key, std::vector<float> rows) {
  const size_t bytes = Bytes(rows);
  absl::MutexLock lock(&mu_);
  if (auto it = index_.find(key); it != index_.end()) Remove(it->second);
  if (bytes == 0 || bytes > budget_) return;
  while (stats_.used_bytes + bytes > budget_ && !lru_.empty()) {
    Remove(std::prev(lru_.end()));
    ++stats_.evictions;
  }
  lru_.emplace_front(key, std::make_shared<const std::vector<float>>(std::move(rows)));
  index_[key] = lru_.begin();
  stats_.used_bytes += bytes;
  ++stats_.entries;
}

void EmbeddingCache::Remove(std::list<Entry>::iterator it) {
  stats_.used_bytes -= Bytes(*it->second);
  --stats_.entries;
  index_.erase(it->first);
  lru_.erase(it);
}

EmbeddingCacheStats EmbeddingCache::stats() const {
  absl::MutexLock lock(&mu_);
  EmbeddingCacheStats s = stats_;
  s.budget_bytes = budget_;
  return s;
}

}  // namespace qwen::multimodal

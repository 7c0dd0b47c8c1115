#include "inference/multimodal/embedding_cache.h"

#include <thread>

#include "gtest/gtest.h"

namespace qwen::multimodal {
namespace {

std::vector<float> Rows(size_t n, float v) { return std::vector<float>(n, v); }

TEST(EmbeddingCache, KeepsTheMostRecentlyUsedWithinTheBudget) {
  EmbeddingCache cache(3 * 100 * sizeof(float));
  cache.Insert("a", Rows(100, 1));
  cache.Insert("b", Rows(100, 2));
  cache.Insert("c", Rows(100, 3));
  ASSERT_NE(cache.Find("a"), nullptr);  // a is now the most recent
  cache.Insert("d", Rows(100, 4));      // b, the least recent, goes
  EXPECT_EQ(cache.Find("b"), nullptr);
  ASSERT_NE(cache.Find("a"), nullptr);
  EXPECT_EQ((*cache.Find("c"))[0], 3.0f);
  EXPECT_EQ((*cache.Find("d"))[0], 4.0f);
  const EmbeddingCacheStats s = cache.stats();
  EXPECT_EQ(s.entries, 3);
  EXPECT_EQ(s.used_bytes, 300 * sizeof(float));
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.hits, 4);
}

TEST(EmbeddingCache, ReplacesAKeyAndKeepsNothingLargerThanTheBudget) {
  EmbeddingCache cache(100 * sizeof(float));
  cache.Insert("a", Rows(50, 1));
  cache.Insert("a", Rows(60, 2));
  EXPECT_EQ(cache.Find("a")->size(), 60u);
  EXPECT_EQ(cache.stats().used_bytes, 60 * sizeof(float));
  cache.Insert("huge", Rows(101, 3));
  EXPECT_EQ(cache.Find("huge"), nullptr);
  EXPECT_NE(cache.Find("a"), nullptr);
  EmbeddingCache off(0);
  off.Insert("a", Rows(1, 1));
  EXPECT_EQ(off.Find("a"), nullptr);
}

// A row handed out stays valid after its entry is evicted (readers hold a reference).
TEST(EmbeddingCache, HandedOutRowsOutliveEviction) {
  EmbeddingCache cache(100 * sizeof(float));
  cache.Insert("a", Rows(100, 7));
  std::shared_ptr<const std::vector<float>> held = cache.Find("a");
  cache.Insert("b", Rows(100, 8));
  EXPECT_EQ(cache.Find("a"), nullptr);
  EXPECT_EQ((*held)[99], 7.0f);
}

TEST(EmbeddingCache, ThreadSafe) {
  EmbeddingCache cache(64 * 10 * sizeof(float));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = std::to_string((i * 7 + t) % 97);
        if (auto hit = cache.Find(key)) {
          EXPECT_EQ(hit->size(), 10u);
        } else {
          cache.Insert(key, Rows(10, static_cast<float>(i)));
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(cache.stats().used_bytes, 64 * 10 * sizeof(float));
}

}  // namespace
}  // namespace qwen::multimodal

// The prefix cache's auto budget: from the model's state size, bounded by a cap and by the
// memory available, with a floor.
#include "service/prefix_cache_budget.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/gguf/gguf_file.h"
#include "tests/common/test_util.h"

namespace qwen::service {
namespace {

using ::testing::HasSubstr;

model::ModelConfig TinyConfig() {
  auto file = gguf::GgufFile::Open(testing::DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  EXPECT_TRUE(file.ok()) << file.status();
  auto config = model::ModelConfig::FromGguf(**file);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(AutoPrefixCacheBudget, EightFullContextSnapshotsPerSlot) {
  const model::ModelConfig c = TinyConfig();
  const model::StateSize s = model::SequenceState::SizeFor(c, 4096, model::KvType::kF16);
  const int64_t snapshot =
      static_cast<int64_t>(s.recurrent_bytes + s.conv_bytes + s.kv_bytes_per_token * 4096);
  const PrefixCacheBudget b = AutoPrefixCacheBudget(c, 4096, model::KvType::kF16, 4, 2, -1);
  EXPECT_EQ(b.mb, (8 * 4 * snapshot + kMiB - 1) / kMiB);
  EXPECT_EQ(b.mb, 307);  // the tiny model: 1.57 MiB of state + 2 KiB of KV a token
  EXPECT_THAT(b.reason, HasSubstr("8 snapshots per slot x 4 slots"));
  // F32 keys and values double the KV part.
  EXPECT_GT(AutoPrefixCacheBudget(c, 4096, model::KvType::kF32, 4, 2, -1).mb, b.mb);
}

TEST(AutoPrefixCacheBudget, CappedAtAGiB) {
  const PrefixCacheBudget b =
      AutoPrefixCacheBudget(TinyConfig(), 65536, model::KvType::kF16, 16, 1, -1);
  EXPECT_EQ(b.mb, kAutoMaxMb);
  EXPECT_THAT(b.reason, HasSubstr("cap of 1024 MiB"));
}

TEST(AutoPrefixCacheBudget, AQuarterOfTheAvailableMemorySharedByTheWorkers) {
  // 1 GiB available, 2 workers: 128 MiB each, below the 307 the state would ask.
  const PrefixCacheBudget b =
      AutoPrefixCacheBudget(TinyConfig(), 4096, model::KvType::kF16, 4, 2, 1024 * kMiB);
  EXPECT_EQ(b.mb, 128);
  EXPECT_THAT(b.reason, HasSubstr("25% of the 1024 MiB available, shared by 2 workers"));
}

TEST(AutoPrefixCacheBudget, NeverBelowTheFloor) {
  const PrefixCacheBudget b =
      AutoPrefixCacheBudget(TinyConfig(), 4096, model::KvType::kF16, 4, 8, 64 * kMiB);
  EXPECT_EQ(b.mb, kAutoMinMb);
  EXPECT_THAT(b.reason, HasSubstr("floor"));
}

TEST(AvailableMemoryBytes, IsKnownOnLinux) {
  const int64_t bytes = AvailableMemoryBytes();
  EXPECT_GT(bytes, 0);
}

}  // namespace
}  // namespace qwen::service

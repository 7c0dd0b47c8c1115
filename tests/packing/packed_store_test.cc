// The packed copy of the weights: written once, mapped by later openers, replaced when the model
// file or the copy changes, never left half-written; and a model computing from it gives the same
// bits as from the file's rows.
#include "inference/packing/packed_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/model.h"
#include "inference/quant/kernels.h"
#include "tests/common/test_util.h"
#include "tests/model/model_runner.h"

namespace qwen::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kQ3[] = "models/tiny-qwen35-q3_k_m.gguf";
constexpr char kQ4[] = "models/tiny-qwen35-q4_k_m.gguf";

// A fresh directory removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "qwen-packed-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool HavePackedKernels() { return quant::Kernels().packed_format != nullptr; }

// The packable matrices of a model file, as the model asks for them.
std::vector<packing::PackRequest> Requests(const gguf::GgufFile& file) {
  std::vector<packing::PackRequest> out;
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (t.n_dims != 2 || !packing::Packable(t.type, t.ne[1])) continue;
    out.push_back({std::string(t.name), t.type, t.data, t.ne[0], t.ne[1],
                   static_cast<size_t>(quant::RowBytes(t.type, t.ne[0])),
                   static_cast<uint64_t>(t.data - file.base())});
  }
  return out;
}

class PackedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HavePackedKernels()) GTEST_SKIP() << "these kernels have no packed layout (the scalar level)";
    // A private copy of the model, so its identity (path, mtime) is the test's to change.
    model_path_ = dir_.path() + "/model.gguf";
    fs::copy_file(DataPath(kQ3), model_path_);
    store_dir_ = dir_.path() + "/shm";
    fs::create_directory(store_dir_);
    Reopen();
  }
  void Reopen() {
    auto f = gguf::GgufFile::Open(model_path_);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::move(*f);
    requests_ = Requests(*file_);
    ASSERT_GT(requests_.size(), 10u);
  }
  absl::StatusOr<std::unique_ptr<packing::PackedStore>> Open(ThreadPool* pool = nullptr) {
    return packing::PackedStore::Open(model_path_, requests_, store_dir_, pool);
  }
  std::vector<std::string> StoreFiles() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(store_dir_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  TempDir dir_;
  std::string model_path_, store_dir_;
  std::unique_ptr<gguf::GgufFile> file_;
  std::vector<packing::PackRequest> requests_;
};

TEST_F(PackedStoreTest, WritesOnceThenMapsWhatPack16Makes) {
  ThreadPool pool(2);
  auto first = Open(&pool);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE((*first)->info().written);
  EXPECT_EQ(fs::file_size((*first)->info().path), (*first)->info().bytes);
  for (const packing::PackRequest& r : requests_) {
    const uint8_t* p = (*first)->Find(r.name);
    ASSERT_NE(p, nullptr) << r.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << r.name;
    std::vector<uint8_t> expect(16 * r.row_bytes);
    for (int64_t g = 0; g < r.n_out / 16; ++g) {
      quant::Kernels().pack16[static_cast<int>(r.type)](r.rows + g * expect.size(), r.row_bytes,
                                                        r.n_in, expect.data());
      ASSERT_EQ(std::memcmp(expect.data(), p + g * expect.size(), expect.size()), 0)
          << r.name << " group " << g;
    }
  }
  EXPECT_EQ((*first)->Find("no.such.tensor"), nullptr);

  auto second = Open();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE((*second)->info().written);
  EXPECT_EQ((*second)->info().path, (*first)->info().path);
  // The data file and the lock, nothing else (no temporary left behind).
  const std::vector<std::string> files = StoreFiles();
  ASSERT_EQ(files.size(), 2u) << ::testing::PrintToString(files);
  EXPECT_TRUE(absl::EndsWith(files[0], ".bin"));
  EXPECT_TRUE(absl::EndsWith(files[1], "lock"));
}

// Workers started together: one writes, the others wait for it and map its file.
TEST_F(PackedStoreTest, ConcurrentOpenersWriteOnce) {
  constexpr int kOpeners = 4;
  std::vector<std::unique_ptr<packing::PackedStore>> stores(kOpeners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      auto s = Open();
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) stores[i] = std::move(*s);
    });
  }
  for (std::thread& t : threads) t.join();
  int written = 0;
  for (const auto& s : stores) {
    ASSERT_NE(s, nullptr);
    written += s->info().written;
    EXPECT_EQ(s->info().path, stores[0]->info().path);
  }
  EXPECT_EQ(written, 1);
}

// A new version of the model file (same path) gets a new copy; the old one is removed.
TEST_F(PackedStoreTest, ChangedModelFileGetsANewCopy) {
  auto first = Open();
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string old_path = (*first)->info().path;
  first->reset();
  // Same bytes, new modification time: another file as far as the key knows.
  struct timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, model_path_.c_str(), times, 0), 0);
  Reopen();
  auto second = Open();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE((*second)->info().written);
  EXPECT_NE((*second)->info().path, old_path);
  EXPECT_FALSE(fs::exists(old_path));
  EXPECT_EQ(StoreFiles().size(), 2u);
}

// Writing a copy removes this user's copies of model files that were deleted or changed since
// (no process can map them again), and keeps those of model files that are still there as well
// as files that are not copies.
TEST_F(PackedStoreTest, WritingACopyRemovesCopiesOfDeletedOrChangedModels) {
  // Copies of three other model files (other paths).
  std::map<std::string, std::string> copy_of;
  for (const char* name : {"deleted.gguf", "changed.gguf", "kept.gguf"}) {
    const std::string path = dir_.path() + "/" + name;
    fs::copy_file(DataPath(kQ3), path);
    auto f = gguf::GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    const auto requests = Requests(**f);
    auto s = packing::PackedStore::Open(path, requests, store_dir_, nullptr);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->info().written);
    copy_of[name] = (*s)->info().path;
  }
  {
    std::ofstream(store_dir_ + "/qwen-packed-0000000000000000-0000000000000000.bin")
        << "not a copy";
    std::ofstream(store_dir_ + "/notes.bin") << "not ours";
  }
  fs::remove(dir_.path() + "/deleted.gguf");
  struct timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, (dir_.path() + "/changed.gguf").c_str(), times, 0), 0);
  for (const auto& [name, copy] : copy_of) ASSERT_TRUE(fs::exists(copy)) << name;

  auto mine = Open();  // the fixture's model: a new copy is written
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_TRUE((*mine)->info().written);
  EXPECT_FALSE(fs::exists(copy_of["deleted.gguf"]));
  EXPECT_FALSE(fs::exists(copy_of["changed.gguf"]));
  EXPECT_TRUE(fs::exists(copy_of["kept.gguf"]));
  EXPECT_TRUE(fs::exists(store_dir_ + "/qwen-packed-0000000000000000-0000000000000000.bin"));
  EXPECT_TRUE(fs::exists(store_dir_ + "/notes.bin"));

  // Mapping an existing copy removes nothing.
  mine->reset();
  fs::remove(dir_.path() + "/kept.gguf");
  auto again = Open();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE((*again)->info().written);
  EXPECT_TRUE(fs::exists(copy_of["kept.gguf"]));
}

// A damaged copy (a bit flipped in a checked group) is detected and written again.
TEST_F(PackedStoreTest, DamagedCopyIsReplaced) {
  std::string path;
  size_t offset = 0;
  {
    auto first = Open();
    ASSERT_TRUE(first.ok()) << first.status();
    path = (*first)->info().path;
    const uint8_t* base = (*first)->Find(requests_[0].name);
    // The first group of the first tensor: its distance from the file's start.
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string head(reinterpret_cast<const char*>(base), 64);
    offset = bytes.find(head);
    ASSERT_NE(offset, std::string::npos);
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset + 5));
    const char x = 0x5A;
    f.write(&x, 1);
  }
  auto again = Open();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->info().written);
}

// Too little space (here a file size limit): an error naming the file, nothing left behind.
TEST_F(PackedStoreTest, NoSpaceIsAnErrorAndLeavesNothing) {
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit small = saved;
  small.rlim_cur = 64 << 10;
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto s = Open();
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), store_dir_)) << s.status();
  for (const std::string& f : StoreFiles()) EXPECT_TRUE(absl::EndsWith(f, "lock")) << f;
}

TEST_F(PackedStoreTest, MissingDirectoryIsAnError) {
  auto s = packing::PackedStore::Open(model_path_, requests_, store_dir_ + "/nope", nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), store_dir_ + "/nope")) << s.status();
}

// The model on the packed copy gives the same logits, bit for bit, as on the file's rows: for a
// prompt (many columns per product) and for decode steps (one column), on two type mixes.
TEST(PackedModelTest, LogitsAreBitIdentical) {
  if (!HavePackedKernels()) GTEST_SKIP() << "these kernels have no packed layout (the scalar level)";
  TempDir dir;
  ThreadPool pool(2);
  ops::ComputeContext ctx(&pool, ops::MathMode::kFast);
  for (const char* rel : {kQ3, kQ4}) {
    SCOPED_TRACE(rel);
    auto f = gguf::GgufFile::Open(DataPath(rel));
    ASSERT_TRUE(f.ok());
    std::shared_ptr<const gguf::GgufFile> file = std::move(*f);
    auto plain = model::Model::Load(file);
    ASSERT_TRUE(plain.ok()) << plain.status();
    model::LoadOptions lo;
    lo.packed_dir = dir.path();
    lo.pool = &pool;
    auto packed = model::Model::Load(file, lo);
    ASSERT_TRUE(packed.ok()) << packed.status();
    const model::PackingReport& report = (*packed)->packing();
    ASSERT_TRUE(report.status.ok()) << report.status;
    EXPECT_GT(report.packed_tensors, 10);
    EXPECT_FALSE((*plain)->packing().requested);

    std::vector<int32_t> tokens;
    for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 11) % 1000);
    for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{9}}) {
      const std::vector<float> a = TeacherForce(**plain, ctx, tokens, chunk);
      const std::vector<float> b = TeacherForce(**packed, ctx, tokens, chunk);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "chunk " << chunk;
    }
  }
}

// Without a directory nothing is packed; with one that cannot be used, the model still loads,
// computes from the file's rows, and says why.
TEST(PackedModelTest, UnusableDirectoryFallsBack) {
  auto f = gguf::GgufFile::Open(DataPath(kQ3));
  ASSERT_TRUE(f.ok());
  std::shared_ptr<const gguf::GgufFile> file = std::move(*f);
  model::LoadOptions lo;
  lo.packed_dir = "/nonexistent/qwen-packed-dir";
  auto m = model::Model::Load(file, lo);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->packing().requested);
  // With packed kernels (AVX2, AVX-512) the copy cannot be made: an error the worker logs. At
  // the scalar level there is nothing to pack, which is no error.
  EXPECT_EQ((*m)->packing().status.ok(), !HavePackedKernels()) << (*m)->packing().status;
  EXPECT_EQ((*m)->packing().packed_tensors, 0);
  for (const model::LayerWeights& L : (*m)->layers()) EXPECT_EQ(L.ffn_up.packed, nullptr);
}

}  // namespace
}  // namespace qwen::testing

#include "inference/packing/packed_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/common/status_macros.h"
#include "inference/common/thread_pool.h"
#include "inference/quant/kernels.h"

namespace qwen::packing {
namespace {

constexpr char kMagic[8] = {'Q', 'W', 'E', 'N', 'P', 'A', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kAlign = 4096;  // tensors start on pages (the kernels want 64-byte alignment)
constexpr size_t kRows = 16;     // rows per packed group

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint64_t Fnv1a(absl::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  const int e = errno;
  return absl::Status(e == ENOSPC || e == EDQUOT ? absl::StatusCode::kResourceExhausted
                                                 : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(what, " ", path, ": ", std::strerror(e)));
}

// Closes a descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// The model file's identity as the key records it: its resolved path on the first line, what
// changes with its contents on the second.
std::string Identity(const char* real, const struct stat& st) {
  return absl::StrCat("file=", real, "\ndev=", st.st_dev, " ino=", st.st_ino, " size=", st.st_size,
                      " mtime=", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, "\n");
}

// Where each tensor goes in the file: offsets after the header, page-aligned.
struct Plan {
  std::string key;  // everything the contents depend on, stored in the header
  size_t header_bytes = 0;
  std::vector<size_t> offsets;  // per request
  size_t total = 0;
};

size_t TensorBytes(const PackRequest& r) { return static_cast<size_t>(r.n_out) * r.row_bytes; }

// Header: magic, version, key length, key, then per tensor (offset, bytes), all little-endian
// as the machine writes them (the file never leaves the machine).
size_t HeaderBytes(const std::string& key, size_t n) {
  return AlignUp(sizeof(kMagic) + 4 + 8 + key.size() + n * 16);
}

Plan MakePlan(const std::string& identity, absl::Span<const PackRequest> requests) {
  Plan p;
  p.key = absl::StrCat(
      "layout=",
      quant::Kernels().packed_format != nullptr ? quant::Kernels().packed_format : "none", "\n",
      identity);
  for (const PackRequest& r : requests) {
    absl::StrAppend(&p.key, r.name, " ", static_cast<int>(r.type), " ", r.n_in, " ", r.n_out, " ",
                    r.file_offset, "\n");
  }
  p.header_bytes = HeaderBytes(p.key, requests.size());
  size_t at = p.header_bytes;
  for (const PackRequest& r : requests) {
    p.offsets.push_back(at);
    at += AlignUp(TensorBytes(r));
  }
  p.total = at;
  return p;
}

void WriteHeader(const Plan& p, absl::Span<const PackRequest> requests, uint8_t* base) {
  uint8_t* at = base;
  std::memcpy(at, kMagic, sizeof(kMagic));
  at += sizeof(kMagic);
  std::memcpy(at, &kVersion, 4);
  at += 4;
  const uint64_t key_len = p.key.size();
  std::memcpy(at, &key_len, 8);
  at += 8;
  std::memcpy(at, p.key.data(), p.key.size());
  at += p.key.size();
  for (size_t i = 0; i < requests.size(); ++i) {
    const uint64_t entry[2] = {p.offsets[i], TensorBytes(requests[i])};
    std::memcpy(at, entry, 16);
    at += 16;
  }
}

// Packs groups [g0, g1) of request r into dst (the tensor's start in the file).
void PackGroups(const PackRequest& r, int64_t g0, int64_t g1, uint8_t* dst) {
  const auto pack = quant::Kernels().pack16[static_cast<int>(r.type)];
  const size_t group_bytes = kRows * r.row_bytes;
  for (int64_t g = g0; g < g1; ++g) {
    pack(r.rows + g * group_bytes, r.row_bytes, r.n_in, dst + g * group_bytes);
  }
}

// Checks a mapped file against the plan: header, sizes, and two groups of every tensor packed
// again and compared (a file from a different layout or a damaged one fails here).
absl::Status Check(const Plan& p, absl::Span<const PackRequest> requests, const uint8_t* base,
                   size_t size, const std::string& path) {
  const auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  if (size != p.total) {
    return bad(absl::StrCat("is ", size, " bytes, expected ", p.total));
  }
  if (std::memcmp(base, kMagic, sizeof(kMagic)) != 0) return bad("not a packed-weights file");
  uint32_t version;
  std::memcpy(&version, base + 8, 4);
  if (version != kVersion) return bad(absl::StrCat("version ", version, ", expected ", kVersion));
  uint64_t key_len;
  std::memcpy(&key_len, base + 12, 8);
  if (key_len != p.key.size() || std::memcmp(base + 20, p.key.data(), key_len) != 0) {
    return bad("made for another model file, layout or tensor list");
  }
  const uint8_t* entries = base + 20 + key_len;
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < requests.size(); ++i) {
    const PackRequest& r = requests[i];
    uint64_t entry[2];
    std::memcpy(entry, entries + 16 * i, 16);
    if (entry[0] != p.offsets[i] || entry[1] != TensorBytes(r)) {
      return bad(absl::StrCat("wrong table entry for ", r.name));
    }
    const int64_t groups = r.n_out / static_cast<int64_t>(kRows);
    const size_t group_bytes = kRows * r.row_bytes;
    scratch.resize(group_bytes);
    for (int64_t g : {int64_t{0}, groups - 1}) {
      quant::Kernels().pack16[static_cast<int>(r.type)](r.rows + g * group_bytes, r.row_bytes,
                                                        r.n_in, scratch.data());
      if (std::memcmp(scratch.data(), base + p.offsets[i] + g * group_bytes, group_bytes) != 0) {
        return bad(absl::StrCat("group ", g, " of ", r.name, " differs from the model file's"));
      }
    }
  }
  return absl::OkStatus();
}

// Maps `path` read-only and checks it. NotFound if it does not exist.
absl::StatusOr<std::pair<void*, size_t>> MapAndCheck(const Plan& p,
                                                     absl::Span<const PackRequest> requests,
                                                     const std::string& path) {
  Fd fd{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(path);
    return Errno("cannot open", path);
  }
  struct stat st;
  if (fstat(fd.fd, &st) != 0) return Errno("cannot stat", path);
  if (st.st_uid != geteuid()) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": belongs to user ", st.st_uid, ", not to this process's user"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < p.header_bytes) {
    return absl::DataLossError(absl::StrCat(path, ": is ", size, " bytes, expected ", p.total));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.fd, 0);
  if (map == MAP_FAILED) return Errno("cannot map", path);
  if (absl::Status s = Check(p, requests, static_cast<const uint8_t*>(map), size, path); !s.ok()) {
    munmap(map, size);
    return s;
  }
  return std::make_pair(map, size);
}

// Removes files of this model path made for other keys (an older file or layout) and temporary
// files of crashed writers. Called under the lock; processes still mapping them keep them.
void RemoveStale(const std::string& dir, const std::string& prefix, const std::string& keep,
                 const std::string& lock) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (!absl::StartsWith(name, prefix) || name == keep || name == lock) continue;
    unlink(absl::StrCat(dir, "/", name).c_str());
  }
  closedir(d);
}

// The key in the header of the copy at `path`, or "" when it is not a readable copy of ours.
std::string ReadKey(const std::string& path) {
  Fd fd{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) return "";
  char head[sizeof(kMagic) + 4 + 8];
  if (pread(fd.fd, head, sizeof(head), 0) != static_cast<ssize_t>(sizeof(head))) return "";
  uint32_t version;
  uint64_t key_len;
  std::memcpy(&version, head + sizeof(kMagic), 4);
  std::memcpy(&key_len, head + sizeof(kMagic) + 4, 8);
  if (std::memcmp(head, kMagic, sizeof(kMagic)) != 0 || version != kVersion ||
      key_len > (1u << 24)) {
    return "";
  }
  std::string key(key_len, '\0');
  if (pread(fd.fd, key.data(), key_len, sizeof(head)) != static_cast<ssize_t>(key_len)) return "";
  return key;
}

// Removes this user's copies of other model paths whose model file is gone or has changed: no
// process can map them again (a new file at that path gets a new key), and in a tmpfs their
// memory is never reclaimed. Such copies are left by model files that were deleted or moved,
// which a load of the same path (RemoveStale) never sees. Called before writing a new copy;
// processes still mapping a removed copy keep it. Files that are not readable copies of this
// version are left alone.
void RemoveOrphans(const std::string& dir, const std::string& own_prefix) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (!absl::StartsWith(name, "qwen-packed-") || !absl::EndsWith(name, ".bin") ||
        absl::StartsWith(name, own_prefix)) {
      continue;
    }
    const std::string path = absl::StrCat(dir, "/", name);
    struct stat own;
    if (lstat(path.c_str(), &own) != 0 || !S_ISREG(own.st_mode) || own.st_uid != geteuid()) {
      continue;
    }
    const std::string key = ReadKey(path);
    const size_t at = key.find("\nfile=");
    if (at == std::string::npos) continue;
    const size_t start = at + 1, end = key.find('\n', start);
    if (end == std::string::npos) continue;
    const std::string model = key.substr(start + 5, end - start - 5);
    const size_t ident_end = key.find('\n', end + 1);
    if (ident_end == std::string::npos || key.compare(end + 1, 4, "dev=") != 0) continue;
    struct stat st;
    bool orphan;
    if (stat(model.c_str(), &st) == 0) {
      orphan = Identity(model.c_str(), st) != key.substr(start, ident_end + 1 - start);  // changed
    } else {
      orphan = errno == ENOENT || errno == ENOTDIR;  // gone (on other errors: keep it)
    }
    if (orphan) unlink(path.c_str());
  }
  closedir(d);
}

absl::Status Write(const Plan& p, absl::Span<const PackRequest> requests, const std::string& dir,
                   const std::string& path, ThreadPool* pool) {
  struct statvfs vfs;
  if (statvfs(dir.c_str(), &vfs) == 0) {
    const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (free_bytes < p.total) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s has %d MiB free; the packed weights need %d MiB", dir,
                          free_bytes >> 20, (p.total + (1 << 20) - 1) >> 20));
    }
  }
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  Fd fd{open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
  if (fd.fd < 0) return Errno("cannot create", tmp);
  // Reserve every block now: a tmpfs that fills up while the mapping is written would kill the
  // process with SIGBUS instead of returning an error.
  if (int e = posix_fallocate(fd.fd, 0, static_cast<off_t>(p.total)); e != 0) {
    unlink(tmp.c_str());
    errno = e;
    return Errno("cannot reserve space for", tmp);
  }
  void* map = mmap(nullptr, p.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (map == MAP_FAILED) {
    absl::Status s = Errno("cannot map", tmp);
    unlink(tmp.c_str());
    return s;
  }
  uint8_t* base = static_cast<uint8_t*>(map);
  WriteHeader(p, requests, base);
  // Work items of up to 64 groups over all tensors, so both threads stay busy to the end.
  struct Item {
    size_t r;
    int64_t g0, g1;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t groups = requests[i].n_out / static_cast<int64_t>(kRows);
    for (int64_t g = 0; g < groups; g += 64) items.push_back({i, g, std::min(groups, g + 64)});
  }
  const auto run = [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; ++k) {
      const Item& it = items[k];
      PackGroups(requests[it.r], it.g0, it.g1, base + p.offsets[it.r]);
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(static_cast<int64_t>(items.size()), 1, run);
  } else {
    run(0, static_cast<int64_t>(items.size()), 0);
  }
  munmap(map, p.total);
  if (fsync(fd.fd) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot finish", path);
    unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

// The model file's pages of the packed tensors are no longer read by this process: drop them
// from its mapping (they stay in the page cache as reclaimable cache, not in its RSS or PSS).
void DropSourcePages(absl::Span<const PackRequest> requests) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (const PackRequest& r : requests) {
    const uintptr_t b = (reinterpret_cast<uintptr_t>(r.rows) + page - 1) / page * page;
    const uintptr_t e = (reinterpret_cast<uintptr_t>(r.rows) + TensorBytes(r)) / page * page;
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
  }
}

}  // namespace

bool Packable(quant::GgmlType type, int64_t n_out) {
  const quant::KernelTable& k = quant::Kernels();
  const int t = static_cast<int>(type);
  return k.packed_format != nullptr && k.pack16[t] != nullptr && k.dot_tile_packed[t] != nullptr &&
         n_out > 0 && n_out % static_cast<int64_t>(kRows) == 0;
}

absl::StatusOr<std::unique_ptr<PackedStore>> PackedStore::Open(
    const std::string& model_path, absl::Span<const PackRequest> requests, const std::string& dir,
    ThreadPool* pool) {
  const absl::Time t0 = absl::Now();
  if (requests.empty()) return absl::InvalidArgumentError("no tensors to pack");
  for (const PackRequest& r : requests) {
    if (!Packable(r.type, r.n_out)) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor ", r.name, " (", quant::TypeName(r.type), ", ", r.n_out,
                       " rows) has no packed layout in these kernels"));
    }
  }
  char real[PATH_MAX];
  if (realpath(model_path.c_str(), real) == nullptr) return Errno("cannot resolve", model_path);
  struct stat st;
  if (stat(real, &st) != 0) return Errno("cannot stat", real);
  const Plan plan = MakePlan(Identity(real, st), requests);

  const std::string prefix = absl::StrFormat("qwen-packed-%016x-", Fnv1a(real));
  const std::string name = absl::StrFormat("%s%016x.bin", prefix, Fnv1a(plan.key));
  const std::string path = absl::StrCat(dir, "/", name);

  // One writer at a time per model path; readers of a complete file need no lock, but taking
  // it makes a reader that arrives during the write wait for the result instead of writing too.
  const std::string lock_name = absl::StrCat(prefix, "lock");
  const std::string lock_path = absl::StrCat(dir, "/", lock_name);
  Fd lock{open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
  if (lock.fd < 0) lock.fd = open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (lock.fd < 0) return Errno("cannot open", lock_path);
  while (flock(lock.fd, LOCK_EX) != 0) {
    if (errno != EINTR) return Errno("cannot lock", lock_path);
  }

  std::unique_ptr<PackedStore> store(new PackedStore());
  absl::StatusOr<std::pair<void*, size_t>> mapped = MapAndCheck(plan, requests, path);
  if (!mapped.ok() && !absl::IsNotFound(mapped.status())) {
    // A damaged or foreign file under our name: replace it.
    unlink(path.c_str());
  }
  if (!mapped.ok()) {
    RemoveStale(dir, prefix, name, lock_name);
    RemoveOrphans(dir, prefix);
    RETURN_IF_ERROR(Write(plan, requests, dir, path, pool));
    store->info_.written = true;
    mapped = MapAndCheck(plan, requests, path);
  }
  flock(lock.fd, LOCK_UN);
  if (!mapped.ok()) return mapped.status();

  store->map_ = mapped->first;
  store->map_bytes_ = mapped->second;
  const uint8_t* base = static_cast<const uint8_t*>(store->map_);
  for (size_t i = 0; i < requests.size(); ++i) {
    store->tensors_[requests[i].name] = base + plan.offsets[i];
  }
  DropSourcePages(requests);
  store->info_.path = path;
  store->info_.bytes = plan.total;
  store->info_.elapsed = absl::Now() - t0;
  return store;
}

PackedStore::~PackedStore() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

const uint8_t* PackedStore::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

}  // namespace qwen::packing

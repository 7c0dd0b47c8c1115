// A copy of a model's weight matrices in the tile kernels' packed layout, kept in one file that
// every process serving the same model file maps: the first writes it, the others map it.
//
// Why a file: the packed layout (quant::KernelTable::pack16) lets the AVX-512 k-quant tiles load
// their vectors instead of transposing 16 scattered rows per block, but a private copy per
// worker would multiply the weights' memory by the number of workers. A file under a tmpfs such
// as /dev/shm is one copy in memory, shared like the model file's own mapping; the model file's
// pages of the packed tensors are then no longer read (and are dropped from the writer's
// mapping), so the page cache keeps them only as reclaimable cache.
//
// The file's name is derived from everything its contents depend on (the model file's identity:
// path, device, inode, size and modification time; the packed layout's name; the list of
// tensors with their types, shapes and offsets), so a changed model file or a new layout gets a
// new file and never a stale one. Writers take an exclusive lock on a lock file next to it; a
// file is only ever renamed into place complete. Before writing, a writer removes the copies
// that no process can map again: those of its model path made for other keys, and this user's
// copies whose model file (the path recorded in their header) is gone or has changed, which a
// tmpfs would otherwise keep until reboot. Processes that map a removed copy keep their mapping.
// (A directory shared by processes that see different files at the same path, such as
// containers with other mounts, would see each other's copies as orphans: give each its own.)
// Reading checks its owner (this process's user: another user's file in a shared directory is
// never trusted), its header, its size, and re-packs two groups of every tensor to compare them
// with what is stored.
#ifndef QWEN_INFERENCE_PACKING_PACKED_STORE_H_
#define QWEN_INFERENCE_PACKING_PACKED_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "inference/quant/types.h"

namespace qwen {
class ThreadPool;
}

namespace qwen::packing {

// One weight matrix to pack: n_out rows of row_bytes bytes at `rows` (a view into the model
// file's mapping), n_out a multiple of 16.
struct PackRequest {
  std::string name;
  quant::GgmlType type;
  const uint8_t* rows;
  int64_t n_in;
  int64_t n_out;
  size_t row_bytes;
  uint64_t file_offset;  // where the rows are in the model file (part of the key)
};

// True if the active kernels have a packed layout for `type` and a matrix of n_out rows can use
// it (whole 16-row groups).
bool Packable(quant::GgmlType type, int64_t n_out);

// How a store came to be, for the worker's start-up log and the memory formula.
struct PackedStoreInfo {
  std::string path;        // the mapped file
  size_t bytes = 0;        // its size
  bool written = false;    // this process wrote it (else it mapped an existing one)
  absl::Duration elapsed;  // time to write or to open and check it
};

// The mapped packed copy of a set of matrices. Immutable after Open(): thread-safe.
class PackedStore {
 public:
  // Maps (or first writes) the packed copy of `requests` of the model file at `model_path`
  // under directory `dir`. `pool`, if not null, packs in parallel. Errors (no layout, no space
  // in `dir`, a file that fails its checks, I/O) leave nothing half-written behind; a caller
  // can then compute from the model file's own rows.
  static absl::StatusOr<std::unique_ptr<PackedStore>> Open(const std::string& model_path,
                                                           absl::Span<const PackRequest> requests,
                                                           const std::string& dir,
                                                           ThreadPool* pool);
  ~PackedStore();
  PackedStore(const PackedStore&) = delete;
  PackedStore& operator=(const PackedStore&) = delete;

  // The packed groups of matrix `name` (group g at Find(name) + 16 g row_bytes), or null.
  const uint8_t* Find(absl::string_view name) const;

  const PackedStoreInfo& info() const { return info_; }

 private:
  PackedStore() = default;

  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  absl::flat_hash_map<std::string, const uint8_t*> tensors_;
  PackedStoreInfo info_;
};

}  // namespace qwen::packing

#endif  // QWEN_INFERENCE_PACKING_PACKED_STORE_H_

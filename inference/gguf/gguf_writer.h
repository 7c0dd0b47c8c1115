// Writes GGUF v3 files: used by `qwen synth` for full-size benchmark models and by tests.
#ifndef QWEN_INFERENCE_GGUF_GGUF_WRITER_H_
#define QWEN_INFERENCE_GGUF_GGUF_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inference/quant/types.h"

namespace qwen::gguf {

// Collects metadata and tensors, then writes them in one pass. Tensor bytes come from a fill
// callback called while writing, so a multi-gigabyte file never sits in memory.
//
// Not thread-safe.
class GgufWriter {
 public:
  // Fills `n` bytes of a tensor's data at `dst`; `offset` is where this piece starts inside the
  // tensor (large tensors are filled in pieces).
  using Fill = std::function<void(uint8_t* dst, uint64_t offset, uint64_t n)>;

  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

  void AddU8(absl::string_view key, uint8_t v);
  void AddU32(absl::string_view key, uint32_t v);
  void AddI32(absl::string_view key, int32_t v);
  void AddU64(absl::string_view key, uint64_t v);
  void AddF32(absl::string_view key, float v);
  void AddBool(absl::string_view key, bool v);
  void AddString(absl::string_view key, absl::string_view v);
  void AddStringArray(absl::string_view key, const std::vector<std::string>& v);
  void AddI32Array(absl::string_view key, const std::vector<int32_t>& v);
  void AddU32Array(absl::string_view key, const std::vector<uint32_t>& v);
  void AddF32Array(absl::string_view key, const std::vector<float>& v);

  // Adds a tensor of `type` and shape `ne` (ne[0] contiguous) whose bytes `fill` produces.
  void AddTensor(absl::string_view name, quant::GgmlType type, const std::vector<int64_t>& ne,
                 Fill fill);
  // Adds a tensor from bytes held by the caller (copied).
  void AddTensorBytes(absl::string_view name, quant::GgmlType type, const std::vector<int64_t>& ne,
                      std::string bytes);

  // The whole file as bytes (for tests and small files).
  std::string ToBytes() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    quant::GgmlType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes;
    uint64_t offset;
    Fill fill;
  };
  std::string Header() const;
  void Key(absl::string_view key, uint32_t type);

  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::string kv_bytes_;
  std::vector<Tensor> tensors_;
  uint64_t data_size_ = 0;
};

}  // namespace qwen::gguf

#endif  // QWEN_INFERENCE_GGUF_GGUF_WRITER_H_

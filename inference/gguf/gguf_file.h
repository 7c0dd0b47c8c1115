// Reader for GGUF model files (versions 2 and 3).
#ifndef QWEN_INFERENCE_GGUF_GGUF_FILE_H_
#define QWEN_INFERENCE_GGUF_GGUF_FILE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/quant/types.h"

namespace qwen::gguf {

// Metadata value types, numbered as in the GGUF specification.
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

absl::string_view ValueTypeName(ValueType type);
// Bytes of one value of a fixed-size type; 0 for strings, arrays and values outside the enum.
int64_t ScalarSize(ValueType type);

// One metadata value. Strings and numeric array elements are views into the file's bytes, so a
// Value must not outlive the GgufFile it came from.
struct Value {
  ValueType type = ValueType::kU8;
  // Scalars: integers widened to 64 bits (signedness kept by `type`), floats to double.
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  absl::string_view str;  // kString

  // kArray.
  ValueType elem_type = ValueType::kU8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;            // numeric and bool elements, little-endian, unaligned
  std::vector<absl::string_view> strings;  // string elements
  std::vector<Value> arrays;               // nested array elements

  bool IsInteger() const;
  bool IsFloat() const { return type == ValueType::kF32 || type == ValueType::kF64; }
  // Numeric array element `k` (k < count) as int64 / double; valid for numeric element types.
  int64_t IntAt(uint64_t k) const;
  double FloatAt(uint64_t k) const;
};

// A tensor's description and its bytes inside the mapping.
struct TensorInfo {
  absl::string_view name;
  quant::GgmlType type = quant::GgmlType::kF32;
  int n_dims = 0;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};  // ne[0] is the contiguous dimension
  uint64_t offset = 0;                       // relative to the data section, as stored
  uint64_t file_offset = 0;                  // absolute
  uint64_t n_bytes = 0;
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;

  int64_t rows() const { return n_elements / ne[0]; }
  std::string ShapeString() const;  // "[256, 1024]"
};

// A GGUF file mapped read-only and shared (MAP_SHARED, PROT_READ): every process that opens the
// same file shares one copy of its pages in the page cache. Nothing is copied; tensors and string
// metadata are views into the mapping.
//
// Open() validates the whole header before returning (magic, version, counts, lengths, types,
// shapes, alignment, that tensors lie inside the file and do not overlap), so a truncated or
// hostile file gives an error naming the problem and its byte offset, never a crash or a huge
// allocation.
//
// Thread-safe after construction: all accessors are const.
class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses a file image held in memory (for tests and fuzzing). `data` must outlive the result.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(const uint8_t* data, size_t size);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* base() const { return data_; }

  // Metadata in file order.
  const std::vector<std::pair<absl::string_view, Value>>& metadata() const { return metadata_; }
  const Value* Find(absl::string_view key) const;
  bool Has(absl::string_view key) const { return Find(key) != nullptr; }

  // Typed access. Errors name the key: NOT_FOUND when absent, INVALID_ARGUMENT for a value of
  // the wrong type or out of range. Integer getters accept any integer type whose value fits.
  absl::StatusOr<uint32_t> GetU32(absl::string_view key) const;
  absl::StatusOr<uint64_t> GetU64(absl::string_view key) const;
  absl::StatusOr<int64_t> GetI64(absl::string_view key) const;
  absl::StatusOr<float> GetF32(absl::string_view key) const;  // f32 or f64
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<absl::string_view> GetString(absl::string_view key) const;
  absl::StatusOr<std::vector<absl::string_view>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetF32Array(absl::string_view key) const;
  // Defaults when the key is absent; errors still reported for a wrong type.
  absl::StatusOr<uint32_t> GetU32Or(absl::string_view key, uint32_t fallback) const;
  absl::StatusOr<float> GetF32Or(absl::string_view key, float fallback) const;
  absl::StatusOr<bool> GetBoolOr(absl::string_view key, bool fallback) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(absl::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  int fd_ = -1;
  void* mapping_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<absl::string_view, Value>> metadata_;
  absl::flat_hash_map<absl::string_view, size_t> metadata_index_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<absl::string_view, size_t> tensor_index_;
};

}  // namespace qwen::gguf

#endif  // QWEN_INFERENCE_GGUF_GGUF_FILE_H_

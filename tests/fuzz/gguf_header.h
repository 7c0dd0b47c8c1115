// A GGUF file as editable parts, for the structure-aware GGUF fuzz target and for making its
// seeds: metadata entries and tensor infos as raw records that a mutator can change one field at
// a time (including into inconsistent states) and serialize back to bytes.
#ifndef QWEN_TESTS_FUZZ_GGUF_HEADER_H_
#define QWEN_TESTS_FUZZ_GGUF_HEADER_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwen::fuzz {

struct RawKv {
  std::string key;
  uint32_t type = 0;  // gguf::ValueType, or anything
  std::string value;  // the serialized value that follows the type tag
};

struct RawTensor {
  std::string name;
  uint32_t n_dims = 1;  // as written; ne[] holds up to 4 dimensions, more are written as 1
  std::array<uint64_t, 4> ne = {1, 1, 1, 1};
  uint32_t type = 0;  // quant::GgmlType id, or anything
  uint64_t offset = 0;
};

struct RawGguf {
  uint32_t version = 3;
  std::vector<RawKv> kv;
  std::vector<RawTensor> tensors;
  uint64_t pad_to = 32;  // the header is zero-padded to a multiple of this before the data
  std::string data;      // the data section
  // Counts written in the header instead of kv.size() / tensors.size().
  std::optional<uint64_t> n_kv_written, n_tensors_written;

  std::string Serialize() const;
};

// Splits a file that GgufFile accepts into its records (the data section is copied as is).
absl::StatusOr<RawGguf> SplitGguf(const std::string& bytes);

// Shrinks every tensor to one block of its type (n_dims kept, ne = {block, 1, 1, 1}) and lays
// the data out again, filled with a fixed pattern; the result is a small valid file with the
// original metadata and tensor names and types.
void ShrinkTensors(RawGguf& g);

// A small valid file with one metadata entry of every value type (including nested arrays and
// general.alignment) and tensors of several types.
RawGguf SyntheticGguf();

// Serialized scalars and strings, little-endian as GGUF stores them.
std::string U32(uint32_t v);
std::string U64(uint64_t v);
std::string Str(const std::string& s);

}  // namespace qwen::fuzz

#endif  // QWEN_TESTS_FUZZ_GGUF_HEADER_H_

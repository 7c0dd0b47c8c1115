// The ggml tensor types a GGUF file may name, with their block geometry.
#ifndef QWEN_INFERENCE_QUANT_TYPES_H_
#define QWEN_INFERENCE_QUANT_TYPES_H_

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"

namespace qwen::quant {

// Type ids as written in GGUF tensor infos (ggml's numbering; gaps are retired types).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct TypeTraits {
  absl::string_view name;  // as ggml prints it: "q3_K", "f16", ...
  int64_t block_size;     // elements per block
  int64_t type_size;      // bytes per block
  bool computable;        // this engine can dequantize it and take dot products with it
};

// Traits of a known type id, or nullopt for an id no ggml version has defined.
std::optional<TypeTraits> GetTypeTraits(uint32_t type_id);

// Traits of a known type (CHECK-free: GgmlType values are always known).
const TypeTraits& Traits(GgmlType type);

inline absl::string_view TypeName(GgmlType type) { return Traits(type).name; }

// Bytes of a row of `n` elements; `n` must be a multiple of the block size.
inline int64_t RowBytes(GgmlType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  return n / t.block_size * t.type_size;
}

}  // namespace qwen::quant

#endif  // QWEN_INFERENCE_QUANT_TYPES_H_

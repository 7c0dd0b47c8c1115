#include "inference/quant/types.h"

#include <array>

namespace qwen::quant {
namespace {

struct Entry {
  bool known;
  TypeTraits traits;
};

constexpr std::array<Entry, 40> kTable = [] {
  std::array<Entry, 40> t{};
  auto set = [&t](GgmlType id, absl::string_view name, int64_t block, int64_t size, bool comp) {
    t[static_cast<uint32_t>(id)] = Entry{true, TypeTraits{name, block, size, comp}};
  };
  set(GgmlType::kF32, "f32", 1, 4, true);
  set(GgmlType::kF16, "f16", 1, 2, true);
  set(GgmlType::kQ4_0, "q4_0", 32, 18, true);
  set(GgmlType::kQ4_1, "q4_1", 32, 20, true);
  set(GgmlType::kQ5_0, "q5_0", 32, 22, true);
  set(GgmlType::kQ5_1, "q5_1", 32, 24, true);
  set(GgmlType::kQ8_0, "q8_0", 32, 34, true);
  set(GgmlType::kQ8_1, "q8_1", 32, 36, false);
  set(GgmlType::kQ2_K, "q2_K", 256, 84, true);
  set(GgmlType::kQ3_K, "q3_K", 256, 110, true);
  set(GgmlType::kQ4_K, "q4_K", 256, 144, true);
  set(GgmlType::kQ5_K, "q5_K", 256, 176, true);
  set(GgmlType::kQ6_K, "q6_K", 256, 210, true);
  set(GgmlType::kQ8_K, "q8_K", 256, 292, false);
  set(GgmlType::kIQ2_XXS, "iq2_xxs", 256, 66, false);
  set(GgmlType::kIQ2_XS, "iq2_xs", 256, 74, false);
  set(GgmlType::kIQ3_XXS, "iq3_xxs", 256, 98, false);
  set(GgmlType::kIQ1_S, "iq1_s", 256, 50, false);
  set(GgmlType::kIQ4_NL, "iq4_nl", 32, 18, false);
  set(GgmlType::kIQ3_S, "iq3_s", 256, 110, false);
  set(GgmlType::kIQ2_S, "iq2_s", 256, 82, false);
  set(GgmlType::kIQ4_XS, "iq4_xs", 256, 136, false);
  set(GgmlType::kI8, "i8", 1, 1, false);
  set(GgmlType::kI16, "i16", 1, 2, false);
  set(GgmlType::kI32, "i32", 1, 4, false);
  set(GgmlType::kI64, "i64", 1, 8, false);
  set(GgmlType::kF64, "f64", 1, 8, false);
  set(GgmlType::kIQ1_M, "iq1_m", 256, 56, false);
  set(GgmlType::kBF16, "bf16", 1, 2, true);
  set(GgmlType::kTQ1_0, "tq1_0", 256, 54, false);
  set(GgmlType::kTQ2_0, "tq2_0", 256, 66, false);
  set(GgmlType::kMXFP4, "mxfp4", 32, 17, false);
  return t;
}();

}  // namespace

std::optional<TypeTraits> GetTypeTraits(uint32_t type_id) {
  if (type_id >= kTable.size() || !kTable[type_id].known) return std::nullopt;
  return kTable[type_id].traits;
}

const TypeTraits& Traits(GgmlType type) { return kTable[static_cast<uint32_t>(type)].traits; }

}  // namespace qwen::quant

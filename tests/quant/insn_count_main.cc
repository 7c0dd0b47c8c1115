// One dot_tile call of a chosen type, level and shape, for counting the instructions a kernel
// executes under an emulator (scripts/arm64-insn-count): run it as is and with --no-call (the
// same data made, no call), and the difference is the call's work. Not a test and not a
// benchmark: it measures no time.
//
//   quant_insn_count TYPE LEVEL ROWS COLS N [--no-call]   e.g. quant_insn_count q4_K neondot 16 1 2560
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "inference/common/cpu_features.h"
#include "inference/quant/kernels.h"
#include "inference/quant/types.h"
#include "tests/quant/quant_test_util.h"

int main(int argc, char** argv) {
  using namespace qwen;
  using namespace qwen::quant;
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s TYPE LEVEL ROWS COLS N [--no-call]\n", argv[0]);
    return 2;
  }
  GgmlType type = GgmlType::kF32;
  bool found = false;
  for (GgmlType t : testing::ComputableTypes()) {
    if (TypeName(t) == argv[1]) {
      type = t;
      found = true;
    }
  }
  Isa isa = Isa::kScalar;
  if (!found || !ParseIsa(argv[2], &isa)) {
    std::fprintf(stderr, "unknown type or level: %s %s\n", argv[1], argv[2]);
    return 2;
  }
  const int64_t rows = std::atoll(argv[3]), cols = std::atoll(argv[4]);
  const int64_t n = std::atoll(argv[5]);
  const bool call = !(argc > 6 && std::string(argv[6]) == "--no-call");
  const KernelTable& k = KernelsFor(isa);
  if (k.isa != isa) {
    std::fprintf(stderr, "this CPU lacks %s\n", argv[2]);
    return 1;
  }
  std::mt19937 rng(1);
  const size_t w_row = RowBytes(type, n), a_row = ActivationRowBytes(type, n);
  std::vector<uint8_t> w(w_row * (rows > 0 ? rows : 1)), a(a_row * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = testing::RandomWeights(type, n, testing::Fill::kRealistic, rng);
    std::copy(row.begin(), row.end(), w.begin() + r * w_row);
  }
  for (int64_t c = 0; c < cols; ++c) {
    const auto x = testing::RandomActivations(n, testing::Fill::kRealistic, rng);
    KernelsFor(Isa::kScalar).quantize_activation[static_cast<uint32_t>(type)](
        x.data(), a.data() + c * a_row, n);
  }
  std::vector<float> y(rows * cols + 1);
  if (call && rows > 0) {
    k.dot_tile[static_cast<uint32_t>(type)](w.data(), w_row, rows, a.data(), a_row, cols, y.data(),
                                            rows, n);
  }
  std::printf("%g\n", call && rows > 0 ? y[0] : 0.0);
  return 0;
}

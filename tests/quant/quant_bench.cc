// Throughput of the weight kernels, single thread, per type and instruction-set level:
//   dequant/<type>/<isa>            dequantize every row of a matrix (into one reused row)
//   dot_tile/<type>/<isa>/cols:<c>  the whole matrix against c activation rows (decode: 1-8)
//   dot_tile_cached/...             rows that stay in cache (32, or 256 for 64+ columns): the
//                                   compute ceiling, up to prefill-sized column counts
//   dot_tile_packed/..., dot_tile_packed_cached/...
//                                   the same with the weights packed (pack16, once, untimed) and
//                                   multiplied by dot_tile_packed, where the level has it
//   quantize/<type>/<isa>           activation quantization of 16 rows
// Rates are per second of the benchmark thread's CPU time (the machine may be shared: wall
// time would count other processes' time slices); MAC/s counts multiply-adds (rows x weights x
// columns).
// Matrices are 9216 rows of 2560 weights (Qwen3.5-4B's FFN up/gate shape); several copies are
// cycled so the working set (>= 96 MB) is far beyond the 32 MB L3 and weights stream from
// memory as in decode. Counters: wGB/s = gigabytes of weights read per second (decimal),
// wElem/s = weights per second (per column: multiply by cols for multiply-adds).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "inference/common/cpu_features.h"
#include "inference/quant/kernels.h"
#include "tests/quant/quant_test_util.h"

namespace qwen::quant {
namespace {

constexpr int64_t kK = 2560;               // weights per row
constexpr int64_t kRows = 9216;            // rows per matrix
constexpr int64_t kWorkingSet = 96 << 20;  // bytes of weights cycled through

// The weights of the type being benchmarked: enough copies of one matrix to exceed the caches.
// Benchmarks run type by type, so one type's matrices are kept at a time.
struct Matrices {
  GgmlType type = GgmlType::kF32;
  bool ready = false;
  size_t matrix_bytes = 0;
  int copies = 0;
  std::vector<uint8_t> data;
  size_t offset = 0;  // of the first copy in data

  const uint8_t* Copy(int i) const { return data.data() + offset + (i % copies) * matrix_bytes; }
};

const Matrices& MatricesFor(GgmlType type) {
  static Matrices m;
  if (m.ready && m.type == type) return m;
  m.type = type;
  m.matrix_bytes = RowBytes(type, kK) * kRows;
  m.copies = static_cast<int>((kWorkingSet + m.matrix_bytes - 1) / m.matrix_bytes);
  if (m.copies < 2) m.copies = 2;
  m.data.assign(m.matrix_bytes * m.copies, 0);
  // 64 distinct random rows, tiled: the content does not change the speed.
  std::mt19937 rng(11);
  const size_t row_bytes = RowBytes(type, kK);
  std::vector<std::vector<uint8_t>> rows;
  for (int i = 0; i < 64; ++i)
    rows.push_back(testing::RandomWeights(type, kK, testing::Fill::kRealistic, rng));
  for (int64_t r = 0; r < kRows * m.copies; ++r) {
    std::memcpy(m.data.data() + r * row_bytes, rows[r % 64].data(), row_bytes);
  }
  m.ready = true;
  return m;
}

// MatricesFor(type)'s copies, each packed 16 rows at a time by `k`.
const Matrices& PackedMatricesFor(const KernelTable& k, GgmlType type) {
  static Matrices p;
  if (p.ready && p.type == type) return p;
  const Matrices& m = MatricesFor(type);
  p.type = type;
  p.matrix_bytes = m.matrix_bytes;
  p.copies = m.copies;
  // 64-byte aligned, as the engine places packed tensors (page-aligned).
  p.data.assign(m.data.size() + 64, 0);
  p.offset = (64 - reinterpret_cast<uintptr_t>(p.data.data()) % 64) % 64;
  const size_t row_bytes = RowBytes(type, kK);
  for (int64_t g = 0; g < kRows * m.copies / 16; ++g) {
    k.pack16[static_cast<uint32_t>(type)](m.data.data() + g * 16 * row_bytes, row_bytes, kK,
                                          p.data.data() + p.offset + g * 16 * row_bytes);
  }
  p.ready = true;
  return p;
}

void SetRates(benchmark::State& state, double bytes_per_iter, double elems_per_iter) {
  state.counters["wGB/s"] =
      benchmark::Counter(bytes_per_iter / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["wElem/s"] =
      benchmark::Counter(elems_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Dequant(benchmark::State& state, GgmlType type, Isa isa) {
  const KernelTable& k = KernelsFor(isa);
  const Matrices& m = MatricesFor(type);
  const size_t row_bytes = RowBytes(type, kK);
  std::vector<float> out(kK);
  int i = 0;
  for (auto _ : state) {
    const uint8_t* w = m.Copy(i++);
    for (int64_t r = 0; r < kRows; ++r) {
      k.dequantize[static_cast<uint32_t>(type)](w + r * row_bytes, out.data(), kK);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetRates(state, static_cast<double>(m.matrix_bytes), static_cast<double>(kRows * kK));
}

// rows == kRows: the matrix streams from memory. rows < kRows: the first `rows` rows of one copy,
// again and again, from cache: the kernel's compute ceiling.
void BM_DotTile(benchmark::State& state, GgmlType type, Isa isa, int n_cols, int64_t rows,
                bool packed) {
  const KernelTable& k = KernelsFor(isa);
  const Matrices& m = packed ? PackedMatricesFor(k, type) : MatricesFor(type);
  const size_t row_bytes = RowBytes(type, kK);
  const size_t a_bytes = ActivationRowBytes(type, kK);
  std::mt19937 rng(12);
  std::vector<uint8_t> a(a_bytes * n_cols);
  for (int c = 0; c < n_cols; ++c) {
    const auto x = testing::RandomActivations(kK, testing::Fill::kRealistic, rng);
    k.quantize_activation[static_cast<uint32_t>(type)](x.data(), a.data() + c * a_bytes, kK);
  }
  std::vector<float> y(rows * n_cols);
  int i = 0;
  for (auto _ : state) {
    const uint8_t* w = m.Copy(rows == kRows ? i++ : 0);
    if (packed) {
      k.dot_tile_packed[static_cast<uint32_t>(type)](w, rows / 16, a.data(), a_bytes, n_cols,
                                                     y.data(), rows, kK);
    } else {
      k.dot_tile[static_cast<uint32_t>(type)](w, row_bytes, rows, a.data(), a_bytes, n_cols,
                                              y.data(), rows, kK);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetRates(state, static_cast<double>(row_bytes * rows), static_cast<double>(rows * kK));
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(rows * kK) * n_cols,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Quantize(benchmark::State& state, GgmlType type, Isa isa) {
  const KernelTable& k = KernelsFor(isa);
  std::mt19937 rng(13);
  const int64_t n = kK * 16;
  const auto x = testing::RandomActivations(n, testing::Fill::kRealistic, rng);
  std::vector<uint8_t> a(ActivationRowBytes(type, n));
  for (auto _ : state) {
    k.quantize_activation[static_cast<uint32_t>(type)](x.data(), a.data(), n);
    benchmark::DoNotOptimize(a.data());
  }
  state.counters["elem/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace
}  // namespace qwen::quant

int main(int argc, char** argv) {
  using namespace qwen::quant;
  std::vector<qwen::Isa> levels;
  for (qwen::Isa isa : qwen::AllIsas()) {
    if (static_cast<int>(isa) <= static_cast<int>(qwen::BestIsa())) levels.push_back(isa);
  }
  for (GgmlType type : testing::ComputableTypes()) {
    const std::string tn(TypeName(type));
    for (qwen::Isa isa : levels) {
      const std::string in(qwen::IsaName(isa));
      benchmark::RegisterBenchmark(("dequant/" + tn + "/" + in).c_str(), BM_Dequant, type, isa)
          ->Unit(benchmark::kMillisecond);
      const bool has_packed = KernelsFor(isa).dot_tile_packed[static_cast<uint32_t>(type)];
      for (bool packed : {false, true}) {
        if (packed && !has_packed) continue;
        const std::string kind = packed ? "dot_tile_packed" : "dot_tile";
        for (int cols : {1, 2, 4, 8}) {
          benchmark::RegisterBenchmark(
              (kind + "/" + tn + "/" + in + "/cols:" + std::to_string(cols)).c_str(), BM_DotTile,
              type, isa, cols, kRows, packed)
              ->Unit(benchmark::kMillisecond);
        }
        for (int cols : {1, 2, 3, 4, 8, 16, 64, 256, 512}) {
          if (cols >= 64 && isa == qwen::Isa::kScalar) continue;
          // 32 rows of K = 2560 stay in L1/L2; 256 rows for wide tiles (several row tiles).
          benchmark::RegisterBenchmark(
              (kind + "_cached/" + tn + "/" + in + "/cols:" + std::to_string(cols)).c_str(),
              BM_DotTile, type, isa, cols, int64_t{cols >= 64 ? 256 : 32}, packed)
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_1, GgmlType::kQ4_K}) {
    for (qwen::Isa isa : levels) {
      benchmark::RegisterBenchmark(("quantize/" + std::string(TypeName(ActivationType(type))) +
                                    "/" + std::string(qwen::IsaName(isa)))
                                       .c_str(),
                                   BM_Quantize, type, isa);
    }
  }
  std::printf("CPU: %s; active ISA %s\n", qwen::CpuFeatureString().c_str(),
              std::string(qwen::IsaName(qwen::ActiveIsa())).c_str());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

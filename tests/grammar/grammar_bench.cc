// Cost of structured output per token, apart from the model: random walks through a JSON schema
// on the full-size vocabulary (248,320 tokens of /work/models/synth-q3_k_m.gguf, or the tiny
// fixture's 1,024 when that file is absent). Each step computes the mask, picks an allowed
// token at random and advances the matcher.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>

#include "benchmark/benchmark.h"
#include "cli/bench_schema.h"
#include "inference/gguf/gguf_file.h"
#include "inference/grammar/spec.h"
#include "inference/tokenizer/tokenizer.h"

namespace qwen::grammar {
namespace {

std::shared_ptr<const TokenTable> Vocab() {
  static std::shared_ptr<const TokenTable> table = [] {
    std::string path = "/work/models/synth-q3_k_m.gguf";
    if (!std::ifstream(path)) path = "tests/data/models/tiny-qwen35-q3_k_m.gguf";
    auto file = gguf::GgufFile::Open(path);
    if (!file.ok()) std::abort();
    auto tok = tokenizer::Tokenizer::FromGguf(**file);
    if (!tok.ok()) std::abort();
    return TokenTableFromTokenizer(**tok, (*tok)->vocab_size());
  }();
  return table;
}

// One step = mask + random allowed token + advance. `cold`: a fresh compile per walk.
void Walk(benchmark::State& state, bool cold) {
  auto vocab = Vocab();
  ConstraintSpec spec;
  spec.text = kBenchSchema;
  std::mt19937 rng(1);
  GrammarCache warm_cache(vocab);
  std::vector<uint64_t> mask;
  int64_t steps = 0;
  double seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    GrammarCache fresh(vocab);
    GrammarCache& cache = cold ? fresh : warm_cache;
    state.ResumeTiming();
    const auto t0 = std::chrono::steady_clock::now();
    auto g = cache.Get(spec);
    if (!g.ok()) std::abort();
    Matcher m(*g);
    mask.resize((*g)->mask_words());
    std::vector<int32_t> allowed;
    while (true) {
      m.FillNextTokenMask(mask.data());
      allowed.clear();
      for (size_t w = 0; w < mask.size(); ++w) {
        for (uint64_t bits = mask[w]; bits; bits &= bits - 1) {
          allowed.push_back(static_cast<int32_t>(w * 64 + __builtin_ctzll(bits)));
        }
      }
      ++steps;
      if (allowed.empty() || (m.CanEnd() && rng() % 4 == 0)) break;
      int32_t t = allowed[rng() % allowed.size()];
      m.AcceptToken(t);
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  state.counters["steps"] = static_cast<double>(steps);
  // Wall time per step (compile included in the cold case).
  state.counters["ms_per_step"] = steps > 0 ? 1e3 * seconds / steps : 0;
}

void BM_JsonSchemaWalkWarm(benchmark::State& s) { Walk(s, false); }
void BM_JsonSchemaWalkCold(benchmark::State& s) { Walk(s, true); }
BENCHMARK(BM_JsonSchemaWalkWarm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_JsonSchemaWalkCold)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace qwen::grammar

BENCHMARK_MAIN();

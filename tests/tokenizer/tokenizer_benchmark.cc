// Tokenizer throughput on a generated mixed corpus: English prose, code, CJK, Cyrillic, Arabic,
// emoji, numbers and whitespace runs. Reports bytes per second (MB/s) of input text.
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "tests/common/test_util.h"

namespace qwen::tokenizer {
namespace {

std::string MixedCorpus(size_t target_bytes) {
  static const std::vector<std::string> english = {
      "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "runs",
      "through", "a", "field", "of", "barley", "while", "model", "inference", "throughput",
      "matters", "tokenizer", "prefill", "latency", "isn't", "they'll", "we've", "I'm",
      "Hello,", "world!", "(parenthesised)", "\"quoted\"", "e-mail", "state-of-the-art"};
  static const std::vector<std::string> code = {
      "for (int i = 0; i < n; ++i) {\n", "  sum += x[i] * w[i];\n", "}\n",
      "def forward(self, x):\n    return self.proj(x) + 1e-6\n",
      "#include <vector>\n", "std::vector<int32_t> ids;\n", "if (!ok) return absl::InternalError(\"x\");\n",
      "\t\tconst auto& [key, value] = *it;\n", "    \n", "{\"name\": \"get_weather\", \"arguments\": {}}\n"};
  static const std::vector<std::string> other = {
      "你好，世界！", "我想在苹果公司工作。", "日本語の文章です。", "한국어 문장입니다.",
      "Съешь же ещё этих мягких французских булок.", "مرحبا بكم في", "Ελληνικά κείμενα",
      "🚀🦙✅ ", "👩‍👩‍👧‍👦 ", "café naïve résumé ", "3.14159 2026-11-27 1,000,000 ",
      "     ", "\n\n\n", "\t \t", "  \r\n"};
  std::mt19937 rng(7);
  std::string out;
  out.reserve(target_bytes + 1024);
  while (out.size() < target_bytes) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 5) {
      const int words = 5 + static_cast<int>(rng() % 20);
      for (int w = 0; w < words; ++w) {
        out += english[rng() % english.size()];
        out += ' ';
      }
      out += rng() % 3 == 0 ? "\n\n" : ". ";
    } else if (kind < 8) {
      out += code[rng() % code.size()];
    } else {
      out += other[rng() % other.size()];
    }
  }
  return out;
}

struct Fixture {
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string corpus;
};

Fixture& Get() {
  static Fixture* f = [] {
    auto* f = new Fixture();
    f->file = std::move(gguf::GgufFile::Open(
                            qwen::testing::DataPath("tokenizer/qwen3-vocab-qwen35pre.gguf"))
                            .value());
    f->tokenizer = std::move(Tokenizer::FromGguf(*f->file).value());
    f->corpus = MixedCorpus(4 << 20);
    return f;
  }();
  return *f;
}

void BM_EncodeMixedCorpus(benchmark::State& state) {
  Fixture& f = Get();
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = f.tokenizer->Encode(f.corpus, /*parse_special=*/true);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.corpus.size()));
  state.counters["corpus_MB"] = f.corpus.size() / 1e6;
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_EncodeMixedCorpus)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_DecodeMixedCorpus(benchmark::State& state) {
  Fixture& f = Get();
  const auto ids = f.tokenizer->Encode(f.corpus, true);
  for (auto _ : state) {
    std::string text = f.tokenizer->Decode(ids);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.corpus.size()));
}
BENCHMARK(BM_DecodeMixedCorpus)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace qwen::tokenizer

BENCHMARK_MAIN();

// Writes the seed corpora of the two GGUF targets from the fixtures:
//   gguf_seeds OUT_DIR
// OUT_DIR/gguf_fuzzer/: small valid files — the fixtures' real metadata with every tensor shrunk
// to one block (gguf_header.h), a synthetic file with every value type, a version-2 file, and
// header-only files. OUT_DIR/gguf_structured_fuzzer/: short edit lists, one per base.
// The committed corpora in tests/fuzz/corpus/ started from this output (then grew by fuzzing and
// were minimized with scripts/fuzz --update-corpus).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/gguf_header.h"

namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qwen::fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_seeds OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path raw = std::filesystem::path(argv[1]) / "gguf_fuzzer";
  const std::filesystem::path edits = std::filesystem::path(argv[1]) / "gguf_structured_fuzzer";
  std::filesystem::create_directories(raw);
  std::filesystem::create_directories(edits);

  const std::pair<const char*, const char*> fixtures[] = {
      {"tiny-q3_k_m", "models/tiny-qwen35-q3_k_m.gguf"},
      {"tiny-mtp-q3_k_m", "models/tiny-qwen35-mtp-q3_k_m.gguf"},
      {"tiny-ollama", "models/tiny-qwen35-ollama-q3_k_m.gguf"},
      {"mmproj", "models/mmproj-tiny-qwen35-f16.gguf"}};
  for (const auto& [name, path] : fixtures) {
    auto g = SplitGguf(ReadFileOrDie(DataPath(path)));
    if (!g.ok()) Fail(std::string(path) + ": " + g.status().ToString());
    ShrinkTensors(*g);
    Write(raw / (std::string(name) + ".gguf"), g->Serialize());
  }
  RawGguf synthetic = SyntheticGguf();
  Write(raw / "synthetic.gguf", synthetic.Serialize());
  synthetic.version = 2;
  Write(raw / "synthetic-v2.gguf", synthetic.Serialize());
  synthetic.tensors.clear();
  synthetic.data.clear();
  Write(raw / "metadata-only.gguf", synthetic.Serialize());
  Write(raw / "empty.gguf", RawGguf{}.Serialize());

  // FuzzedDataProvider reads integers from the end of the input: the last byte picks the base
  // and the one before it the number of edits.
  for (int base = 0; base < 3; ++base) {
    Write(edits / ("base" + std::to_string(base)), std::string(1, static_cast<char>(base)));
    Write(
        edits / ("base" + std::to_string(base) + "-edits"),
        std::string("\x05\x11\x07\x03\x01\x08\x0a\x0c\x0d\x0e\x03", 11) + static_cast<char>(base));
  }
  return 0;
}

// Tokenizer round trip on arbitrary bytes (tokenizer::CheckRoundTrip): ids inside the vocabulary,
// Decode(Encode(x)) == NormalizeForEncoding(x) with and without special-token parsing, and the
// streaming decoder agreeing with Decode. Built twice: with the tiny model's 1,024-token
// vocabulary and with the real Qwen3 vocabulary (QWEN_FUZZ_VOCAB names the file under
// tests/data); the vocabulary is loaded once per process.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/strings/string_view.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/tokenizer_fuzz_entry.h"

namespace {

const qwen::tokenizer::Tokenizer* tokenizer;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  auto file = qwen::gguf::GgufFile::Open(qwen::fuzz::DataPath(QWEN_FUZZ_VOCAB));
  if (!file.ok()) qwen::fuzz::Fail(file.status().ToString());
  auto t = qwen::tokenizer::Tokenizer::FromGguf(**file);
  if (!t.ok()) qwen::fuzz::Fail(t.status().ToString());
  tokenizer = t->release();  // lives for the whole process; the file is not needed any more
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // long inputs only slow the fuzzer down; the tokenizer is per word
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  qwen::fuzz::FailOnInternal(qwen::tokenizer::CheckRoundTrip(*tokenizer, text));
  return 0;
}

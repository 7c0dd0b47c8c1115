// Entry points for fuzzing the tokenizer: pure functions of their input bytes that report a
// broken property as an error instead of crashing, so a libFuzzer target only has to abort when
// one returns an error.
#ifndef QWEN_TESTS_FUZZ_TOKENIZER_FUZZ_ENTRY_H_
#define QWEN_TESTS_FUZZ_TOKENIZER_FUZZ_ENTRY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inference/tokenizer/tokenizer.h"

namespace qwen::tokenizer {

// Encodes `data` (any bytes) with and without special parsing and checks that
//  - every id is inside the vocabulary,
//  - Decode(Encode(x)) equals NormalizeForEncoding(x) (valid UTF-8, NFC between added tokens),
//  - a StreamingDecoder fed the ids one at a time produces the same text.
// Returns INTERNAL naming the first property that does not hold.
absl::Status CheckRoundTrip(const Tokenizer& tokenizer, absl::string_view data);

}  // namespace qwen::tokenizer

#endif  // QWEN_TESTS_FUZZ_TOKENIZER_FUZZ_ENTRY_H_

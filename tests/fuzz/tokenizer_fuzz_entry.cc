#include "tests/fuzz/tokenizer_fuzz_entry.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qwen::tokenizer {

absl::Status CheckRoundTrip(const Tokenizer& tokenizer, absl::string_view data) {
  for (bool parse_special : {true, false}) {
    const std::vector<int32_t> ids = tokenizer.Encode(data, parse_special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) {
        return absl::InternalError(
            absl::StrCat("Encode produced id ", id, " outside the vocabulary"));
      }
    }
    const std::string expected = tokenizer.NormalizeForEncoding(data, parse_special);
    const std::string decoded = tokenizer.Decode(ids, /*show_control=*/true);
    if (decoded != expected) {
      return absl::InternalError(
          absl::StrCat("Decode(Encode(x)) != normalized x (parse_special=", parse_special, ")"));
    }
    StreamingDecoder stream(tokenizer, /*show_control=*/true);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.Add(id);
    streamed += stream.Flush();
    if (streamed != decoded) {
      return absl::InternalError("StreamingDecoder output differs from Decode");
    }
  }
  return absl::OkStatus();
}

}  // namespace qwen::tokenizer

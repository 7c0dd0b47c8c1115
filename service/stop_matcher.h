// Finding stop strings in text that arrives in pieces.
#ifndef QWEN_SERVICE_STOP_MATCHER_H_
#define QWEN_SERVICE_STOP_MATCHER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace qwen::service {

// Watches streamed text for the first occurrence of any of a set of stop strings, wherever the
// piece boundaries fall. Text is released as soon as no stop string can begin inside it: only a
// tail that is a proper prefix of some stop string is held back. When a stop string is found,
// the text before it is released and everything from it on is dropped.
//
// Pieces should be whole UTF-8 characters (as tokenizer::StreamingDecoder produces); stop
// strings start at a character boundary, so the released text is always whole characters too.
//
// One per stream; thread-compatible.
class StopMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // releasable now
    bool stopped = false;  // a stop string matched; nothing further will be released
    std::string matched;   // which one (the earliest in the text; on a tie, the first listed)
  };

  // Adds a piece. After a match, further pieces are ignored.
  Result Add(absl::string_view piece);

  // Releases what was held back (the stream ended without a match).
  std::string Flush();

  bool stopped() const { return stopped_; }
  size_t held_bytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_STOP_MATCHER_H_

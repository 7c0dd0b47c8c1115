// Prompt lookup: drafts for speculative decoding from the sequence's own tokens, no model
// needed. Works where the output repeats its input (editing code, answering from a document,
// quoting): the last few tokens are found earlier in the prompt or output, and what followed
// them there is proposed.
#ifndef QWEN_INFERENCE_ENGINE_PROMPT_LOOKUP_H_
#define QWEN_INFERENCE_ENGINE_PROMPT_LOOKUP_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace qwen::engine {

// Up to `max_draft` tokens that followed the most recent earlier occurrence of the longest
// suffix of `context` of between `min_ngram` and `max_ngram` tokens (longer suffixes first;
// among equal lengths the latest occurrence). Empty when no suffix of min_ngram tokens occurs
// earlier. `context` is the prompt and the output so far, the last token included. A pure
// function: thread-safe.
std::vector<int32_t> PromptLookupDraft(absl::Span<const int32_t> context, int max_draft,
                                       int min_ngram = 2, int max_ngram = 4);

}  // namespace qwen::engine

#endif  // QWEN_INFERENCE_ENGINE_PROMPT_LOOKUP_H_

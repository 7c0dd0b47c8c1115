#include "inference/engine/prompt_lookup.h"

#include <algorithm>

namespace qwen::engine {

std::vector<int32_t> PromptLookupDraft(absl::Span<const int32_t> context, int max_draft,
                                       int min_ngram, int max_ngram) {
  const int64_t n = static_cast<int64_t>(context.size());
  if (max_draft <= 0 || min_ngram < 1) return {};
  for (int64_t g = std::min<int64_t>(max_ngram, n - 1); g >= min_ngram; --g) {
    const int32_t* suffix = context.data() + n - g;
    // Latest occurrence first: it is the likeliest to go on the same way. An occurrence ends
    // before the suffix itself starts being compared with itself (start + g < n).
    for (int64_t start = n - g - 1; start >= 0; --start) {
      if (!std::equal(suffix, suffix + g, context.data() + start)) continue;
      const int64_t from = start + g;
      const int64_t count = std::min<int64_t>(max_draft, n - from);
      if (count <= 0) continue;
      return std::vector<int32_t>(context.begin() + from, context.begin() + from + count);
    }
  }
  return {};
}

}  // namespace qwen::engine

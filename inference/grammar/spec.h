// What a request asks the output to be, in a form the front end sends to the worker, and the
// worker's cache of compiled grammars.
#ifndef QWEN_INFERENCE_GRAMMAR_SPEC_H_
#define QWEN_INFERENCE_GRAMMAR_SPEC_H_

#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "inference/grammar/compile.h"
#include "inference/grammar/matcher.h"
#include "inference/tokenizer/tokenizer.h"

namespace qwen::grammar {

struct ConstraintSpec {
  enum class Kind { kJsonSchema, kRegex, kChoices, kGrammar, kToolCalls };
  Kind kind = Kind::kJsonSchema;
  std::string text;                  // the JSON schema (JSON text), regex or GBNF grammar
  std::vector<std::string> choices;  // kChoices
  std::string tools_json;            // kToolCalls: [{"type":"function","function":{...}}]
  bool tool_calls_required = false;  // kToolCalls: calls only, no free text
  bool after_reasoning = false;      // the constraint starts after "</think>"

  // Identifies the spec (for caches).
  std::string CacheKey() const;
  // "json_schema", "regex", "choices", "grammar" or "tool_calls".
  const char* KindName() const;
};

// The grammar of a spec. INVALID_ARGUMENT naming the construct that cannot be compiled (the
// message does not repeat the field name; callers prefix it).
absl::StatusOr<Grammar> BuildGrammar(const ConstraintSpec& spec);

// The vocabulary of a tokenizer as a TokenTable with `n_vocab` entries (the model's logits;
// ids past the tokenizer's are empty). Control tokens (<|im_end|>, ...) are not usable as text.
std::shared_ptr<const TokenTable> TokenTableFromTokenizer(const tokenizer::Tokenizer& tok,
                                                          int32_t n_vocab);

// Compiled grammars by spec, most recently used kept. Thread-safe.
class GrammarCache {
 public:
  GrammarCache(std::shared_ptr<const TokenTable> tokens, size_t capacity = 16)
      : tokens_(std::move(tokens)), capacity_(capacity) {}

  absl::StatusOr<std::shared_ptr<CompiledGrammar>> Get(const ConstraintSpec& spec);
  const TokenTable& tokens() const { return *tokens_; }

 private:
  std::shared_ptr<const TokenTable> tokens_;
  const size_t capacity_;
  absl::Mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<CompiledGrammar>>> lru_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qwen::grammar

#endif  // QWEN_INFERENCE_GRAMMAR_SPEC_H_

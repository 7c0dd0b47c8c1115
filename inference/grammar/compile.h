// From what a request asks for (a JSON schema, a regular expression, a list of choices, a GBNF
// grammar, or tool calls) to a Grammar. Errors are INVALID_ARGUMENT with a message naming the
// construct ("unsupported keyword \"patternProperties\" at #/properties/x",
// "regex: lookahead (?= is not supported at offset 3", "gbnf: undefined rule \"value\"").
#ifndef QWEN_INFERENCE_GRAMMAR_COMPILE_H_
#define QWEN_INFERENCE_GRAMMAR_COMPILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grammar/grammar.h"
#include "nlohmann/json.hpp"

namespace qwen::grammar {

struct RegexOptions {
  // The regex describes the value of a JSON string, written between its quotes: characters that
  // JSON must escape (", \ and control characters) are matched in their escaped form.
  bool json_string = false;
};

// A regular expression (ECMAScript-like subset: literals, ., classes [...] and [^...], \d \w \s
// and their negations, escapes \n \t \xHH \uHHHH, groups (...) and (?:...), alternation |,
// quantifiers * + ? {m} {m,} {m,n} (lazy forms accepted, same language); ^ and $ only at the
// ends; the whole output must match). Lookaround, backreferences and \b are rejected.
absl::StatusOr<Symbol> CompileRegex(absl::string_view pattern, Grammar* g,
                                    const RegexOptions& options = {});
absl::StatusOr<Grammar> RegexGrammar(absl::string_view pattern);

// Exactly one of the strings (at least one; each non-empty).
absl::StatusOr<Grammar> ChoicesGrammar(const std::vector<std::string>& choices);

// GBNF as llama.cpp writes it: `name ::= alternatives`, with "literals", [classes], rule names,
// (groups), `.`, postfix * + ? {m,n}, and # comments. Rules may span lines. `root` is the start.
absl::StatusOr<Grammar> GbnfGrammar(absl::string_view text);

// JSON Schema (the common subset; see docs/structured-output.md) to the grammar of its
// instances, written compactly with ", " and ": " separators. `schema` is parsed JSON.
absl::StatusOr<Grammar> JsonSchemaGrammar(const nlohmann::ordered_json& schema);
// Adds the grammar of `schema`'s instances to `g` and returns its symbol (used for tool-call
// parameters). `path` prefixes error locations ("#").
absl::StatusOr<Symbol> CompileJsonSchema(const nlohmann::ordered_json& schema, Grammar* g,
                                         const std::string& path = "#");

// Qwen3.5's XML tool calls for `tools` ([{"type":"function","function":{name, parameters}}] or
// the inner function objects): each <tool_call> names one of the functions, gives each required
// parameter once (others optional, in schema order), and each value is valid for its schema
// (strings as raw text, other types as JSON). With `required`, the output is one or more calls
// and nothing else; otherwise free text may come first and calls follow it.
absl::StatusOr<Grammar> ToolCallGrammar(const nlohmann::ordered_json& tools, bool required);

// Wraps `g` so that its language starts after a reasoning block: any text not containing
// "</think>", then "</think>", up to two newlines, then the original language. For prompts
// that leave the model inside <think> (Qwen3.5 with thinking on).
void PrefixWithReasoning(Grammar* g);

}  // namespace qwen::grammar

#endif  // QWEN_INFERENCE_GRAMMAR_COMPILE_H_

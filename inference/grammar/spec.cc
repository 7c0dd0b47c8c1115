#include "inference/grammar/spec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/common/status_macros.h"

namespace qwen::grammar {

const char* ConstraintSpec::KindName() const {
  switch (kind) {
    case Kind::kJsonSchema:
      return "json_schema";
    case Kind::kRegex:
      return "regex";
    case Kind::kChoices:
      return "choices";
    case Kind::kGrammar:
      return "grammar";
    case Kind::kToolCalls:
      return "tool_calls";
  }
  return "?";
}

std::string ConstraintSpec::CacheKey() const {
  std::string key = absl::StrCat(KindName(), "|", after_reasoning, "|", tool_calls_required, "|",
                                 text.size(), ":", text, "|", tools_json.size(), ":", tools_json);
  for (const std::string& c : choices) absl::StrAppend(&key, "|", c.size(), ":", c);
  return key;
}

absl::StatusOr<Grammar> BuildGrammar(const ConstraintSpec& spec) {
  absl::StatusOr<Grammar> g;
  switch (spec.kind) {
    case ConstraintSpec::Kind::kJsonSchema: {
      nlohmann::ordered_json schema =
          nlohmann::ordered_json::parse(spec.text, nullptr, /*allow_exceptions=*/false);
      if (schema.is_discarded()) return absl::InvalidArgumentError("is not valid JSON");
      g = JsonSchemaGrammar(schema);
      break;
    }
    case ConstraintSpec::Kind::kRegex:
      g = RegexGrammar(spec.text);
      break;
    case ConstraintSpec::Kind::kChoices:
      g = ChoicesGrammar(spec.choices);
      break;
    case ConstraintSpec::Kind::kGrammar:
      g = GbnfGrammar(spec.text);
      break;
    case ConstraintSpec::Kind::kToolCalls: {
      nlohmann::ordered_json tools =
          nlohmann::ordered_json::parse(spec.tools_json, nullptr, /*allow_exceptions=*/false);
      if (tools.is_discarded()) return absl::InvalidArgumentError("tools are not valid JSON");
      g = ToolCallGrammar(tools, spec.tool_calls_required);
      break;
    }
  }
  if (!g.ok()) return g.status();
  if (spec.after_reasoning) PrefixWithReasoning(&*g);
  RETURN_IF_ERROR(g->Validate());
  return g;
}

std::shared_ptr<const TokenTable> TokenTableFromTokenizer(const tokenizer::Tokenizer& tok,
                                                          int32_t n_vocab) {
  std::vector<std::string> bytes(n_vocab);
  std::vector<bool> usable(n_vocab, false);
  for (int32_t i = 0; i < n_vocab && i < tok.vocab_size(); ++i) {
    const tokenizer::TokenType t = tok.Type(i);
    if (t == tokenizer::TokenType::kControl || t == tokenizer::TokenType::kUnused ||
        t == tokenizer::TokenType::kUnknown) {
      continue;
    }
    bytes[i] = std::string(tok.TokenBytes(i));
    usable[i] = true;
  }
  return std::make_shared<TokenTable>(std::move(bytes), std::move(usable));
}

absl::StatusOr<std::shared_ptr<CompiledGrammar>> GrammarCache::Get(const ConstraintSpec& spec) {
  const std::string key = spec.CacheKey();
  {
    absl::MutexLock lock(&mu_);
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      if (it->first == key) {
        lru_.splice(lru_.begin(), lru_, it);
        return lru_.front().second;
      }
    }
  }
  absl::StatusOr<Grammar> g = BuildGrammar(spec);
  if (!g.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.KindName(), ": ", g.status().message()));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<CompiledGrammar> c, CompiledGrammar::Create(*g, tokens_));
  absl::MutexLock lock(&mu_);
  lru_.emplace_front(key, c);
  if (lru_.size() > capacity_) lru_.pop_back();
  return c;
}

}  // namespace qwen::grammar

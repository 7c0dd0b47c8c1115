#include "inference/chat/chat_template.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::chat {
namespace {

// The spelling of token `key` (an id) in the vocabulary, or "" when absent.
std::string TokenText(const gguf::GgufFile& file, absl::string_view key) {
  auto id = file.GetU32(key);
  const gguf::Value* tokens = file.Find("tokenizer.ggml.tokens");
  if (!id.ok() || tokens == nullptr || tokens->type != gguf::ValueType::kArray ||
      tokens->elem_type != gguf::ValueType::kString || *id >= tokens->strings.size()) {
    return "";
  }
  const absl::string_view s = tokens->strings[*id];
  return std::string(s.data(), s.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromGguf(
    const gguf::GgufFile& file, const ChatTemplateOptions& options) {
  if (!file.Has("tokenizer.chat_template")) {
    return absl::NotFoundError("the model file has no chat template (tokenizer.chat_template)");
  }
  ASSIGN_OR_RETURN(absl::string_view source, file.GetString("tokenizer.chat_template"));
  ChatTemplateOptions opts = options;
  if (opts.bos_token.empty()) opts.bos_token = TokenText(file, "tokenizer.ggml.bos_token_id");
  if (opts.eos_token.empty()) opts.eos_token = TokenText(file, "tokenizer.ggml.eos_token_id");
  return FromSource(source, opts);
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromSource(
    absl::string_view source, const ChatTemplateOptions& options) {
  jinja::Options jinja_options;
  jinja_options.limits = options.limits;
  ASSIGN_OR_RETURN(std::unique_ptr<jinja::Template> compiled,
                   jinja::Template::Parse(source, jinja_options));
  std::unique_ptr<ChatTemplate> t(new ChatTemplate());
  t->source_ = std::string(source.data(), source.size());
  t->options_ = options;
  t->template_ = std::move(compiled);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& request) const {
  if (!request.is_object()) {
    return absl::InvalidArgumentError("a chat request must be a JSON object");
  }
  ASSIGN_OR_RETURN(jinja::Value context, jinja::Value::FromJson(request, jinja::kMaxJsonDepth));
  auto& vars = context.object();
  if (vars.Find("add_generation_prompt") == nullptr) {
    vars.Set("add_generation_prompt", jinja::Value::Bool(true));
  }
  if (vars.Find("bos_token") == nullptr) {
    vars.Set("bos_token", jinja::Value::String(options_.bos_token));
  }
  if (vars.Find("eos_token") == nullptr) {
    vars.Set("eos_token", jinja::Value::String(options_.eos_token));
  }
  return template_->Render(context);
}

bool PromptOpensReasoning(absl::string_view prompt) {
  const size_t open = prompt.rfind("<think>");
  if (open == absl::string_view::npos) return false;
  const size_t close = prompt.rfind("</think>");
  return close == absl::string_view::npos || close < open;
}

}  // namespace qwen::chat

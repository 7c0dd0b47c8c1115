// Rendering a conversation into the prompt text the model was trained on, with the chat template
// the GGUF file itself carries (tokenizer.chat_template).
#ifndef QWEN_INFERENCE_CHAT_CHAT_TEMPLATE_H_
#define QWEN_INFERENCE_CHAT_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/chat/jinja.h"
#include "inference/gguf/gguf_file.h"
#include "nlohmann/json.hpp"

namespace qwen::chat {

struct ChatTemplateOptions {
  jinja::Limits limits;
  // Values for the template variables bos_token / eos_token (FromGguf fills them from the
  // vocabulary when left empty).
  std::string bos_token;
  std::string eos_token;
};

// A compiled chat template. Runs the file's own Jinja template with qwen::chat::jinja, so
// fine-tunes that ship a modified template (an "Instruct" variant with thinking off by default,
// other tool formats) render exactly as the file says; nothing falls back to a built-in format.
//
// Immutable after construction and thread-safe: Render() may be called concurrently.
class ChatTemplate {
 public:
  // NOT_FOUND when the file has no tokenizer.chat_template; FAILED_PRECONDITION when the
  // template uses Jinja this interpreter does not support (the message names the line).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromGguf(
      const gguf::GgufFile& file, const ChatTemplateOptions& options = {});
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromSource(
      absl::string_view source, const ChatTemplateOptions& options = {});

  // Renders a request of the form
  //   {"messages": [...], "tools": [...], "enable_thinking": bool,
  //    "add_generation_prompt": bool, "add_vision_id": bool, ...}
  // Every top-level key becomes a template variable; add_generation_prompt defaults to true,
  // the others are left undefined when absent (the template decides their defaults).
  //
  // Errors: INVALID_ARGUMENT for an invalid conversation, with exactly the message the template
  // raised ("No user query found in messages.") when jinja::IsRaisedByTemplate(status), or a
  // "template error (line N): ..." for data the template cannot handle; RESOURCE_EXHAUSTED
  // when a limit is hit.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& request) const;

  const std::string& source() const { return source_; }

 private:
  ChatTemplate() = default;
  std::string source_;
  ChatTemplateOptions options_;
  std::unique_ptr<jinja::Template> template_;
};

// True when a rendered prompt leaves the assistant turn inside an open <think> block (the
// Qwen3.5 generation prompt with thinking on), i.e. generated text starts as reasoning.
bool PromptOpensReasoning(absl::string_view prompt);

}  // namespace qwen::chat

#endif  // QWEN_INFERENCE_CHAT_CHAT_TEMPLATE_H_

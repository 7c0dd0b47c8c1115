// What a chat template can do, found by rendering probe conversations with it rather than by
// searching its source for words (a template that mentions "tools" in a comment renders none).
#ifndef QWEN_INFERENCE_CHAT_TEMPLATE_CAPABILITIES_H_
#define QWEN_INFERENCE_CHAT_TEMPLATE_CAPABILITIES_H_

#include "inference/chat/chat_template.h"

namespace qwen::chat {

struct TemplateCapabilities {
  // Tools reach the prompt: a conversation rendered with a probe tool contains the tool's name
  // and its parameter's name, which it does not without the tool. (Generated calls are then
  // parsed by OutputParser, which reads Qwen3.5's <tool_call> format.)
  bool tools = false;
  // The model reasons in <think> blocks: with enable_thinking the generation prompt opens one
  // (PromptOpensReasoning), or an assistant turn's reasoning_content is written inside
  // <think>...</think>.
  bool reasoning = false;
};

// Renders a handful of small conversations; a render the template refuses counts as "no".
// Thread-safe (ChatTemplate::Render is).
TemplateCapabilities ProbeCapabilities(const ChatTemplate& chat_template);

}  // namespace qwen::chat

#endif  // QWEN_INFERENCE_CHAT_TEMPLATE_CAPABILITIES_H_

// Chat requests (qwen.v1.Chat): the checks that make a conversation well-formed whatever the
// template, its translation into the template's input, and its rendering and tokenization. Any
// front end (gRPC now, HTTP later) that turns its own request into a v1::Chat uses these.
#ifndef QWEN_SERVICE_CHAT_REQUEST_H_
#define QWEN_SERVICE_CHAT_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.pb.h"
#include "service/request_images.h"
#include "service/request_videos.h"
#include "service/text_model.h"

namespace qwen::service {

// Tools one chat may declare unless the server says otherwise (--max_tools).
inline constexpr int kDefaultMaxTools = 64;

// A chat rendered by the model's template.
struct RenderedChat {
  std::string prompt;
  std::vector<int32_t> token_ids;  // image and video placeholders expanded to their tokens
  bool reasoning_open = false;
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();  // as the template saw them
  std::vector<PlacedImage> images;
  std::vector<PlacedVideo> videos;
};

// The template input for a chat: {"messages", "tools", "enable_thinking",
// "add_generation_prompt"}. INVALID_ARGUMENT naming the field ("chat.messages[1].role: ...").
// `field` is the chat's own path ("chat").
// Also enforces what makes a conversation well-formed whatever the template: roles, a system
// message only first, text that is UTF-8 without NUL bytes, unique tool names of the form
// [A-Za-z0-9_.-]{1,64}, at most `max_tools` tools, and parameters that are JSON schemas
// (ValidateToolSchema).
// Image parts render as {"type": "image"} and are appended to `images` when it is not null;
// video parts as {"type": "video"}, appended to `videos`.
absl::StatusOr<nlohmann::ordered_json> ChatToTemplateInput(
    const v1::Chat& chat, const std::string& field, int max_tools = kDefaultMaxTools,
    std::vector<ImagePart>* images = nullptr, std::vector<VideoPart>* videos = nullptr);

// Renders and tokenizes a chat. FAILED_PRECONDITION when the model has no chat template;
// INVALID_ARGUMENT for a conversation the template refuses ("chat: No user query found ...").
// Videos are probed and planned (PlanVideos) and their placeholder text expanded to their
// timestamped frame pairs before tokenization, as the model's processor does; `prompt` is that
// expanded text.
absl::StatusOr<RenderedChat> RenderChat(const v1::Chat& chat, const TextModel& model,
                                        const std::string& field = "chat",
                                        int max_tools = kDefaultMaxTools);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_CHAT_REQUEST_H_

#include "inference/chat/template_capabilities.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace qwen::chat {
namespace {

using Json = nlohmann::ordered_json;

// Names no template or conversation would contain by accident.
constexpr char kToolName[] = "qwen_capability_probe_tool";
constexpr char kParameterName[] = "qwen_capability_probe_parameter";
constexpr char kReasoning[] = "qwen capability probe reasoning";

Json UserTurn() { return Json::array({Json{{"role", "user"}, {"content", "Hello."}}}); }

std::string RenderOrEmpty(const ChatTemplate& t, const Json& request) {
  absl::StatusOr<std::string> prompt = t.Render(request);
  return prompt.ok() ? *std::move(prompt) : std::string();
}

bool RendersTools(const ChatTemplate& t) {
  Json tool = {{"type", "function"},
               {"function",
                {{"name", kToolName},
                 {"description", "Capability probe."},
                 {"parameters",
                  {{"type", "object"},
                   {"properties", {{kParameterName, {{"type", "string"}}}}},
                   {"required", Json::array({kParameterName})}}}}}};
  const std::string with =
      RenderOrEmpty(t, Json{{"messages", UserTurn()}, {"tools", Json::array({tool})}});
  const std::string without = RenderOrEmpty(t, Json{{"messages", UserTurn()}});
  return absl::StrContains(with, kToolName) && absl::StrContains(with, kParameterName) &&
         !absl::StrContains(without, kToolName);
}

bool RendersReasoning(const ChatTemplate& t) {
  const std::string prompt =
      RenderOrEmpty(t, Json{{"messages", UserTurn()}, {"enable_thinking", true}});
  if (!prompt.empty() && PromptOpensReasoning(prompt)) return true;
  // Templates whose generation prompt leaves the <think> to the model still show it in history.
  Json messages = UserTurn();
  messages.push_back(
      Json{{"role", "assistant"}, {"content", "Hi."}, {"reasoning_content", kReasoning}});
  const std::string history = RenderOrEmpty(
      t, Json{{"messages", messages}, {"add_generation_prompt", false}, {"enable_thinking", true}});
  const size_t open = history.find("<think>");
  const size_t at = history.find(kReasoning);
  const size_t close = history.find("</think>");
  return open != std::string::npos && at != std::string::npos && close != std::string::npos &&
         open < at && at < close;
}

}  // namespace

TemplateCapabilities ProbeCapabilities(const ChatTemplate& chat_template) {
  TemplateCapabilities c;
  c.tools = RendersTools(chat_template);
  c.reasoning = RendersReasoning(chat_template);
  return c;
}

}  // namespace qwen::chat

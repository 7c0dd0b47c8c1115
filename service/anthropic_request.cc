#include "service/anthropic_request.h"

#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "service/field_checks.h"
#include "service/json_fields.h"

namespace qwen::service {
namespace {

using Json = nlohmann::json;

// Text of a `system` or tool_result content: a string or text blocks.
absl::Status TextOf(const Json& v, const std::string& param, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return absl::OkStatus();
  }
  if (!v.is_array()) return WrongType(param, "a string or an array of text blocks", v);
  for (size_t k = 0; k < v.size(); ++k) {
    const std::string bpath = absl::StrCat(param, "[", k, "]");
    if (!v[k].is_object()) return WrongType(bpath, "an object", v[k]);
    std::string type, text;
    RETURN_IF_ERROR(GetString(v[k], "type", bpath + ".type", &type));
    if (type != "text") {
      return FieldError(bpath + ".type", absl::StrCat("\"", type, "\" is not \"text\""));
    }
    RETURN_IF_ERROR(GetString(v[k], "text", bpath + ".text", &text));
    if (!out->empty()) out->append("\n");
    out->append(text);
  }
  return absl::OkStatus();
}

absl::Status ImageOf(const Json& block, const std::string& path, v1::Image* image) {
  auto src = block.find("source");
  if (src == block.end() || !src->is_object()) {
    return FieldError(path + ".source", "is required (an object)");
  }
  std::string type;
  RETURN_IF_ERROR(GetString(*src, "type", path + ".source.type", &type));
  if (type == "base64") {
    std::string media, data;
    RETURN_IF_ERROR(GetString(*src, "media_type", path + ".source.media_type", &media));
    RETURN_IF_ERROR(GetString(*src, "data", path + ".source.data", &data));
    image->set_url(absl::StrCat("data:", media, ";base64,", data));
  } else if (type == "url") {
    std::string url;
    RETURN_IF_ERROR(GetString(*src, "url", path + ".source.url", &url));
    image->set_url(url);  // anything but data: is refused by the server (it fetches nothing)
  } else {
    return FieldError(path + ".source.type",
                      absl::StrCat("\"", type, "\" is not one of base64, url"));
  }
  return absl::OkStatus();
}

// One Anthropic message; a user message's tool_result blocks become tool messages of their own
// (before the rest of its content), as chat templates expect.
absl::Status AddMessage(const Json& m, size_t i, v1::Chat* chat) {
  const std::string path = absl::StrCat("messages[", i, "]");
  if (!m.is_object()) return WrongType(path, "an object", m);
  std::string role;
  bool has_role = false;
  RETURN_IF_ERROR(GetString(m, "role", path + ".role", &role, &has_role));
  if (role != "user" && role != "assistant") {
    return FieldError(path + ".role",
                      has_role ? absl::StrCat("\"", role, "\" is not one of user, assistant")
                               : std::string("is required"));
  }
  auto content = m.find("content");
  if (content == m.end() || content->is_null()) return FieldError(path + ".content", "is required");
  v1::ChatMessage out;
  out.set_role(role);
  if (content->is_string()) {
    out.set_content(content->get<std::string>());
    *chat->add_messages() = std::move(out);
    return absl::OkStatus();
  }
  if (!content->is_array()) {
    return WrongType(path + ".content", "a string or an array of content blocks", *content);
  }
  for (size_t k = 0; k < content->size(); ++k) {
    const Json& block = (*content)[k];
    const std::string bpath = absl::StrCat(path, ".content[", k, "]");
    if (!block.is_object()) return WrongType(bpath, "an object", block);
    std::string type;
    RETURN_IF_ERROR(GetString(block, "type", bpath + ".type", &type));
    if (type == "text") {
      std::string text;
      RETURN_IF_ERROR(GetString(block, "text", bpath + ".text", &text));
      out.add_parts()->set_text(std::move(text));
    } else if (type == "image" && role == "user") {
      RETURN_IF_ERROR(ImageOf(block, bpath, out.add_parts()->mutable_image()));
    } else if (type == "tool_result" && role == "user") {
      v1::ChatMessage* tool = chat->add_messages();
      tool->set_role("tool");
      std::string id, text;
      RETURN_IF_ERROR(GetString(block, "tool_use_id", bpath + ".tool_use_id", &id));
      tool->set_tool_call_id(id);
      auto c = block.find("content");
      if (c != block.end() && !c->is_null()) {
        RETURN_IF_ERROR(TextOf(*c, bpath + ".content", &text));
      }
      tool->set_content(text);
    } else if (type == "tool_use" && role == "assistant") {
      v1::ToolCall* call = out.add_tool_calls();
      std::string id, name;
      RETURN_IF_ERROR(GetString(block, "id", bpath + ".id", &id));
      RETURN_IF_ERROR(GetString(block, "name", bpath + ".name", &name));
      call->set_id(id);
      call->set_name(name);
      auto input = block.find("input");
      if (input != block.end() && !input->is_null()) {
        if (!input->is_object()) return WrongType(bpath + ".input", "an object", *input);
        call->set_arguments(input->dump());
      }
    } else if ((type == "thinking" || type == "redacted_thinking") && role == "assistant") {
      std::string thinking;
      RETURN_IF_ERROR(GetString(block, "thinking", bpath + ".thinking", &thinking));
      out.mutable_reasoning_content()->append(thinking);
    } else {
      return FieldError(bpath + ".type", absl::StrCat("\"", type, "\" is not a content block of a ",
                                                      role, " message here"));
    }
  }
  // An assistant turn's text parts are its content (tool calls and reasoning ride along).
  if (role == "assistant") {
    std::string text;
    for (const v1::ContentPart& p : out.parts()) text += p.text();
    out.clear_parts();
    out.set_content(text);
  }
  if (role == "assistant" || !out.parts().empty()) *chat->add_messages() = std::move(out);
  return absl::OkStatus();
}

absl::Status AddTools(const Json& body, v1::GenerateRequest* r) {
  v1::Chat* chat = r->mutable_chat();
  auto tools = body.find("tools");
  if (tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return WrongType("tools", "an array", *tools);
    for (size_t t = 0; t < tools->size(); ++t) {
      const Json& tool = (*tools)[t];
      const std::string path = absl::StrCat("tools[", t, "]");
      if (!tool.is_object()) return WrongType(path, "an object", tool);
      std::string type;
      RETURN_IF_ERROR(GetString(tool, "type", path + ".type", &type));
      if (!type.empty() && type != "custom") {
        return FieldError(path + ".type",
                          absl::StrCat("\"", type, "\": server tools are not supported"));
      }
      v1::Tool* out = chat->add_tools();
      std::string s;
      RETURN_IF_ERROR(GetString(tool, "name", path + ".name", &s));
      out->set_name(s);
      s.clear();
      RETURN_IF_ERROR(GetString(tool, "description", path + ".description", &s));
      out->set_description(s);
      auto schema = tool.find("input_schema");
      if (schema != tool.end() && !schema->is_null()) {
        if (!schema->is_object()) return WrongType(path + ".input_schema", "an object", *schema);
        out->set_parameters_json(schema->dump());
      }
    }
  }
  auto choice = body.find("tool_choice");
  if (choice == body.end() || choice->is_null()) return absl::OkStatus();
  if (!choice->is_object()) return WrongType("tool_choice", "an object", *choice);
  std::string type, name;
  RETURN_IF_ERROR(GetString(*choice, "type", "tool_choice.type", &type));
  std::optional<bool> no_parallel;
  RETURN_IF_ERROR(GetBool(*choice, "disable_parallel_tool_use",
                          "tool_choice.disable_parallel_tool_use", &no_parallel));
  // At most one tool_use block: generation ends once the first call is complete.
  if (no_parallel.value_or(false)) r->mutable_stopping()->set_max_tool_calls(1);
  if (type == "auto") return absl::OkStatus();
  if (type != "any" && type != "tool" && type != "none") {
    return FieldError("tool_choice.type",
                      absl::StrCat("\"", type, "\" is not one of auto, any, tool, none"));
  }
  if (chat->tools().empty()) return FieldError("tool_choice", "needs tools");
  if (type == "none") {
    chat->clear_tools();
    return absl::OkStatus();
  }
  if (type == "tool") {
    RETURN_IF_ERROR(GetString(*choice, "name", "tool_choice.name", &name));
    int found = -1;
    for (int t = 0; t < chat->tools_size(); ++t) {
      if (chat->tools(t).name() == name) found = t;
    }
    if (found < 0) {
      return FieldError("tool_choice.name", absl::StrCat("\"", name, "\" is not one of the tools"));
    }
    v1::Tool keep = chat->tools(found);
    chat->clear_tools();
    *chat->add_tools() = std::move(keep);
  }
  r->mutable_response_format()->mutable_tool_calls()->set_required(true);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AnthropicMessagesRequest> ParseMessagesRequest(absl::string_view body) {
  ASSIGN_OR_RETURN(Json j, ParseJsonBody(body));
  AnthropicMessagesRequest out;
  v1::GenerateRequest& r = out.request;
  v1::Chat* chat = r.mutable_chat();
  RETURN_IF_ERROR(GetString(j, "model", "model", &out.model));
  std::optional<bool> stream;
  RETURN_IF_ERROR(GetBool(j, "stream", "stream", &stream));
  out.stream = stream.value_or(false);

  auto system = j.find("system");
  if (system != j.end() && !system->is_null()) {
    std::string text;
    RETURN_IF_ERROR(TextOf(*system, "system", &text));
    v1::ChatMessage* m = chat->add_messages();
    m->set_role("system");
    m->set_content(text);
  }
  auto messages = j.find("messages");
  if (messages == j.end() || messages->is_null()) return FieldError("messages", "is required");
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  for (size_t i = 0; i < messages->size(); ++i) {
    RETURN_IF_ERROR(AddMessage((*messages)[i], i, chat));
  }
  RETURN_IF_ERROR(AddTools(j, &r));

  std::optional<int64_t> max_tokens;
  RETURN_IF_ERROR(GetInteger(j, "max_tokens", "max_tokens", &max_tokens));
  if (max_tokens) {
    if (*max_tokens < 1) return FieldError("max_tokens", "must be at least 1");
    if (*max_tokens > std::numeric_limits<int32_t>::max()) {
      return FieldError("max_tokens", "is too large");
    }
    r.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  }
  auto stops = j.find("stop_sequences");
  if (stops != j.end() && !stops->is_null()) {
    if (!stops->is_array()) return WrongType("stop_sequences", "an array", *stops);
    for (size_t k = 0; k < stops->size(); ++k) {
      if (!(*stops)[k].is_string()) {
        return WrongType(absl::StrCat("stop_sequences[", k, "]"), "a string", (*stops)[k]);
      }
      r.mutable_stopping()->add_stop((*stops)[k].get<std::string>());
    }
  }
  std::optional<double> d;
  RETURN_IF_ERROR(GetNumber(j, "temperature", "temperature", &d));
  if (d) r.mutable_sampling()->set_temperature(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(GetNumber(j, "top_p", "top_p", &d));
  if (d) r.mutable_sampling()->set_top_p(static_cast<float>(*d));
  std::optional<int64_t> top_k;
  RETURN_IF_ERROR(GetInteger(j, "top_k", "top_k", &top_k));
  if (top_k) {
    if (*top_k < 0 || *top_k > std::numeric_limits<int32_t>::max()) {
      return FieldError("top_k", "must be >= 0 (0 turns it off)");
    }
    r.mutable_sampling()->set_top_k(static_cast<int32_t>(*top_k));
  }
  auto thinking = j.find("thinking");
  if (thinking != j.end() && !thinking->is_null()) {
    if (!thinking->is_object()) return WrongType("thinking", "an object", *thinking);
    std::string type;
    RETURN_IF_ERROR(GetString(*thinking, "type", "thinking.type", &type));
    if (type == "enabled") {
      chat->set_enable_thinking(true);
      std::optional<int64_t> budget;
      RETURN_IF_ERROR(GetInteger(*thinking, "budget_tokens", "thinking.budget_tokens", &budget));
      if (budget) {
        if (*budget < 0 || *budget > std::numeric_limits<int32_t>::max()) {
          return FieldError("thinking.budget_tokens", "must be >= 0");
        }
        r.mutable_stopping()->set_max_reasoning_tokens(static_cast<uint32_t>(*budget));
      }
    } else if (type == "disabled") {
      chat->set_enable_thinking(false);
    } else if (type != "adaptive") {
      return FieldError("thinking.type",
                        absl::StrCat("\"", type, "\" is not one of enabled, disabled, adaptive"));
    }
  }
  auto metadata = j.find("metadata");
  if (metadata != j.end() && !metadata->is_null() && !metadata->is_object()) {
    return WrongType("metadata", "an object", *metadata);
  }
  return out;
}

}  // namespace qwen::service

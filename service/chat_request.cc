#include "service/chat_request.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "inference/chat/chat_template.h"
#include "inference/common/status_macros.h"
#include "service/field_checks.h"
#include "service/struct_json.h"
#include "service/tool_schema.h"

namespace qwen::service {

using Json = nlohmann::ordered_json;

absl::StatusOr<Json> ChatToTemplateInput(const v1::Chat& chat, const std::string& field,
                                         int max_tools, std::vector<ImagePart>* images,
                                         std::vector<VideoPart>* videos) {
  Json in = Json::object();
  Json messages = Json::array();
  if (chat.messages().empty()) return FieldError(absl::StrCat(field, ".messages"), "is empty");
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string path = absl::StrCat(field, ".messages[", i, "]");
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" &&
        m.role() != "tool") {
      return FieldError(
          absl::StrCat(path, ".role"),
          absl::StrCat("\"", m.role(), "\" is not one of system, user, assistant, tool"));
    }
    if (m.role() == "system" && i > 0) {
      return FieldError(absl::StrCat(path, ".role"),
                        "a system message must be the first message of the chat");
    }
    RETURN_IF_ERROR(CheckText(m.content(), absl::StrCat(path, ".content")));
    RETURN_IF_ERROR(CheckText(m.reasoning_content(), absl::StrCat(path, ".reasoning_content")));
    RETURN_IF_ERROR(CheckText(m.name(), absl::StrCat(path, ".name")));
    RETURN_IF_ERROR(CheckText(m.tool_call_id(), absl::StrCat(path, ".tool_call_id")));
    Json jm = Json::object();
    jm["role"] = m.role();
    if (!m.content().empty() && !m.parts().empty()) {
      return FieldError(path, "set content or parts, not both");
    }
    if (!m.parts().empty()) {
      Json parts = Json::array();
      for (int p = 0; p < m.parts_size(); ++p) {
        const v1::ContentPart& part = m.parts(p);
        if (part.part_case() == v1::ContentPart::kImage) {
          const std::string ipath = absl::StrCat(path, ".parts[", p, "].image");
          if (m.role() != "user") {
            return FieldError(ipath, "only user messages may carry images");
          }
          if (images != nullptr) images->push_back({&part.image(), ipath});
          parts.push_back(Json{{"type", "image"}});
          continue;
        }
        if (part.part_case() == v1::ContentPart::kVideo) {
          const std::string vpath = absl::StrCat(path, ".parts[", p, "].video");
          if (m.role() != "user") {
            return FieldError(vpath, "only user messages may carry videos");
          }
          if (videos != nullptr) videos->push_back({&part.video(), vpath});
          parts.push_back(Json{{"type", "video"}});
          continue;
        }
        if (part.part_case() != v1::ContentPart::kText) {
          return FieldError(absl::StrCat(path, ".parts[", p, "]"), "has no content");
        }
        RETURN_IF_ERROR(CheckText(part.text(), absl::StrCat(path, ".parts[", p, "].text")));
        parts.push_back(Json{{"type", "text"}, {"text", part.text()}});
      }
      jm["content"] = std::move(parts);
    } else {
      jm["content"] = m.content();
    }
    if (!m.reasoning_content().empty()) {
      if (m.role() != "assistant") {
        return FieldError(absl::StrCat(path, ".reasoning_content"),
                          "only assistant messages have it");
      }
      jm["reasoning_content"] = m.reasoning_content();
    }
    if (!m.tool_calls().empty()) {
      if (m.role() != "assistant") {
        return FieldError(absl::StrCat(path, ".tool_calls"), "only assistant messages have them");
      }
      Json calls = Json::array();
      for (int c = 0; c < m.tool_calls_size(); ++c) {
        const v1::ToolCall& call = m.tool_calls(c);
        const std::string cpath = absl::StrCat(path, ".tool_calls[", c, "]");
        if (call.name().empty()) return FieldError(absl::StrCat(cpath, ".name"), "is empty");
        RETURN_IF_ERROR(CheckText(call.name(), absl::StrCat(cpath, ".name")));
        RETURN_IF_ERROR(CheckText(call.arguments(), absl::StrCat(cpath, ".arguments")));
        Json args = Json::object();
        if (!call.arguments().empty()) {
          args = Json::parse(call.arguments(), nullptr, /*allow_exceptions=*/false);
          if (args.is_discarded() || !args.is_object()) {
            return FieldError(absl::StrCat(cpath, ".arguments"), "is not a JSON object");
          }
        }
        Json jc = {{"type", "function"},
                   {"function", {{"name", call.name()}, {"arguments", std::move(args)}}}};
        if (!call.id().empty()) jc["id"] = call.id();
        calls.push_back(std::move(jc));
      }
      jm["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id().empty()) jm["tool_call_id"] = m.tool_call_id();
    if (!m.name().empty()) jm["name"] = m.name();
    messages.push_back(std::move(jm));
  }
  in["messages"] = std::move(messages);
  if (chat.tools_size() > max_tools) {
    return FieldError(
        absl::StrCat(field, ".tools"),
        absl::StrCat(chat.tools_size(), " tools; at most ", max_tools, " are allowed"));
  }
  if (!chat.tools().empty()) {
    Json tools = Json::array();
    absl::flat_hash_set<std::string> names;
    for (int t = 0; t < chat.tools_size(); ++t) {
      const v1::Tool& tool = chat.tools(t);
      const std::string tpath = absl::StrCat(field, ".tools[", t, "]");
      if (tool.name().empty()) return FieldError(absl::StrCat(tpath, ".name"), "is empty");
      if (!IsToolName(tool.name())) {
        return FieldError(absl::StrCat(tpath, ".name"),
                          "must be 1 to 64 characters of A-Z, a-z, 0-9, _, - and .");
      }
      if (!names.insert(tool.name()).second) {
        return FieldError(absl::StrCat(tpath, ".name"),
                          absl::StrCat("\"", tool.name(), "\" names an earlier tool too"));
      }
      RETURN_IF_ERROR(CheckText(tool.description(), absl::StrCat(tpath, ".description")));
      RETURN_IF_ERROR(CheckText(tool.parameters_json(), absl::StrCat(tpath, ".parameters_json")));
      Json fn = Json::object();
      fn["name"] = tool.name();
      if (!tool.description().empty()) fn["description"] = tool.description();
      if (tool.has_parameters() && !tool.parameters_json().empty()) {
        return FieldError(tpath, "set parameters or parameters_json, not both");
      }
      if (!tool.parameters_json().empty()) {
        Json params = Json::parse(tool.parameters_json(), nullptr, /*allow_exceptions=*/false);
        if (params.is_discarded() || !params.is_object()) {
          return FieldError(absl::StrCat(tpath, ".parameters_json"), "is not a JSON object");
        }
        RETURN_IF_ERROR(ValidateToolSchema(params, absl::StrCat(tpath, ".parameters_json")));
        fn["parameters"] = std::move(params);
      } else if (tool.has_parameters()) {
        Json params = StructToJson(tool.parameters());
        RETURN_IF_ERROR(ValidateToolSchema(params, absl::StrCat(tpath, ".parameters")));
        fn["parameters"] = std::move(params);
      }
      tools.push_back(Json{{"type", "function"}, {"function", std::move(fn)}});
    }
    in["tools"] = std::move(tools);
  }
  if (chat.has_enable_thinking()) in["enable_thinking"] = chat.enable_thinking();
  in["add_generation_prompt"] =
      chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true;
  return in;
}

absl::StatusOr<RenderedChat> RenderChat(const v1::Chat& chat, const TextModel& model,
                                        const std::string& field, int max_tools) {
  if (model.chat_template() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": the model file has no chat template"));
  }
  std::vector<ImagePart> images;
  std::vector<VideoPart> videos;
  ASSIGN_OR_RETURN(Json input, ChatToTemplateInput(chat, field, max_tools, &images, &videos));
  if (!images.empty() && model.vision() == nullptr) {
    // Refused before rendering: the answer does not depend on the template.
    return absl::FailedPreconditionError(
        absl::StrCat(images[0].field,
                     ": this server takes no images (it runs without a vision model; start it "
                     "with --mmproj)"));
  }
  // Videos are probed before rendering too (a bad file is refused whatever the template says).
  ASSIGN_OR_RETURN(std::vector<PlacedVideo> placed_videos, PlanVideos(videos, model));
  absl::StatusOr<std::string> prompt = model.chat_template()->Render(input);
  if (!prompt.ok()) {
    // The template's own complaints ("No user query found in messages.") are about the
    // conversation, so they are the client's to fix.
    const absl::StatusCode code = prompt.status().code() == absl::StatusCode::kResourceExhausted
                                      ? absl::StatusCode::kInvalidArgument
                                      : prompt.status().code();
    return absl::Status(code, absl::StrCat(field, ": ", prompt.status().message()));
  }
  RenderedChat out;
  // The model's processor writes each video's frame pairs into the text before tokenizing it.
  ASSIGN_OR_RETURN(out.prompt, ExpandVideoPlaceholders(*prompt, placed_videos, field));
  out.token_ids = model.tokenizer().Encode(out.prompt, /*parse_special=*/true);
  ASSIGN_OR_RETURN(out.images, PlaceImages(images, model, &out.token_ids, field));
  std::vector<model::ImageSpan*> image_spans;
  for (PlacedImage& im : out.images) image_spans.push_back(&im.span);
  RETURN_IF_ERROR(
      PlaceVideoTokens(&placed_videos, model, &out.token_ids, std::move(image_spans), field));
  out.videos = std::move(placed_videos);
  out.reasoning_open = chat::PromptOpensReasoning(out.prompt);
  if (input.contains("tools")) out.tools = input["tools"];
  return out;
}

}  // namespace qwen::service

#include "service/request.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "inference/chat/chat_template.h"
#include "inference/common/status_macros.h"
#include "inference/grammar/spec.h"
#include "inference/sampling/sampler.h"
#include "inference/tokenizer/utf8.h"
#include "service/data_url.h"

namespace qwen::service {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Keys that lead in how JSON schemas are conventionally written; the rest follow sorted.
int KeyRank(const std::string& key) {
  static const char* const kLeading[] = {"type",  "title", "description", "properties",
                                         "items", "enum",  "required"};
  for (size_t k = 0; k < std::size(kLeading); ++k) {
    if (key == kLeading[k]) return static_cast<int>(k);
  }
  return static_cast<int>(std::size(kLeading));
}

Json ValueToJson(const google::protobuf::Value& v);

Json StructFields(const google::protobuf::Struct& s) {
  std::vector<const std::string*> keys;
  for (const auto& [k, unused] : s.fields()) keys.push_back(&k);
  std::sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) {
    const int ra = KeyRank(*a), rb = KeyRank(*b);
    return ra != rb ? ra < rb : *a < *b;
  });
  Json out = Json::object();
  for (const std::string* k : keys) out[*k] = ValueToJson(s.fields().at(*k));
  return out;
}

Json ValueToJson(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return nullptr;
    case google::protobuf::Value::kNumberValue: {
      const double d = v.number_value();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        return static_cast<int64_t>(d);
      }
      return d;
    }
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kBoolValue:
      return v.bool_value();
    case google::protobuf::Value::kStructValue:
      return StructFields(v.struct_value());
    case google::protobuf::Value::kListValue: {
      Json arr = Json::array();
      for (const auto& e : v.list_value().values()) arr.push_back(ValueToJson(e));
      return arr;
    }
    default:
      return nullptr;
  }
}

uint64_t RandomSeed() {
  static absl::Mutex mu;
  static std::mt19937_64* gen = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return new std::mt19937_64(seq);
  }();
  absl::MutexLock lock(&mu);
  // Kept below 2^53 so that clients reading the JSON number as a double get it back exactly.
  return (*gen)() & ((uint64_t{1} << 53) - 1);
}

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           absl::string_view field, int32_t vocab) {
  for (int k = 0; k < ids.size(); ++k) {
    if (ids[k] < 0 || ids[k] >= vocab) {
      return Invalid(
          absl::StrCat(field, "[", k, "]"),
          absl::StrCat("token id ", ids[k], " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

bool IsToolName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool IsTypeName(const Json& t) {
  static const char* const kTypes[] = {"object",  "array",   "string", "number",
                                       "integer", "boolean", "null"};
  if (!t.is_string()) return false;
  const std::string& s = t.get_ref<const std::string&>();
  return std::any_of(std::begin(kTypes), std::end(kTypes), [&](const char* k) { return s == k; });
}

absl::Status ValidateSchemaAt(const Json& schema, const std::string& path, int depth) {
  if (depth > kMaxSchemaDepth) {
    return Invalid(path, absl::StrCat("nests deeper than ", kMaxSchemaDepth, " levels"));
  }
  if (schema.is_boolean()) return absl::OkStatus();  // true / false schemas
  if (!schema.is_object()) return Invalid(path, "a JSON schema must be an object");
  auto sub = [&](const char* key) { return absl::StrCat(path, ".", key); };
  for (const auto& [key, value] : schema.items()) {
    if (key == "type") {
      if (value.is_array()) {
        if (value.empty()) return Invalid(sub("type"), "is an empty array");
        for (const Json& t : value) {
          if (!IsTypeName(t)) return Invalid(sub("type"), "names an unknown type");
        }
      } else if (!IsTypeName(value)) {
        return Invalid(sub("type"),
                       "must be one of object, array, string, number, integer, boolean, null");
      }
    } else if (key == "properties" || key == "$defs" || key == "definitions" ||
               key == "patternProperties") {
      if (!value.is_object()) return Invalid(sub(key.c_str()), "must be an object");
      for (const auto& [name, s] : value.items()) {
        RETURN_IF_ERROR(ValidateSchemaAt(s, absl::StrCat(path, ".", key, ".", name), depth + 1));
      }
    } else if (key == "items" || key == "additionalProperties" || key == "not" ||
               key == "contains" || key == "propertyNames") {
      if (value.is_array() && key == "items") {
        for (size_t k = 0; k < value.size(); ++k) {
          RETURN_IF_ERROR(
              ValidateSchemaAt(value[k], absl::StrCat(path, ".items[", k, "]"), depth + 1));
        }
      } else {
        RETURN_IF_ERROR(ValidateSchemaAt(value, sub(key.c_str()), depth + 1));
      }
    } else if (key == "anyOf" || key == "oneOf" || key == "allOf" || key == "prefixItems") {
      if (!value.is_array() || value.empty()) {
        return Invalid(sub(key.c_str()), "must be a non-empty array of schemas");
      }
      for (size_t k = 0; k < value.size(); ++k) {
        RETURN_IF_ERROR(
            ValidateSchemaAt(value[k], absl::StrCat(path, ".", key, "[", k, "]"), depth + 1));
      }
    } else if (key == "required") {
      if (!value.is_array()) return Invalid(sub("required"), "must be an array of strings");
      for (const Json& r : value) {
        if (!r.is_string()) return Invalid(sub("required"), "must be an array of strings");
      }
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) {
        return Invalid(sub("enum"), "must be a non-empty array");
      }
    } else if (key == "description" || key == "title" || key == "pattern" || key == "format") {
      if (!value.is_string()) return Invalid(sub(key.c_str()), "must be a string");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckText(absl::string_view text, absl::string_view field) {
  if (!tokenizer::IsValidUtf8(text)) return Invalid(field, "is not valid UTF-8");
  if (text.find('\0') != absl::string_view::npos) return Invalid(field, "contains a NUL byte");
  return absl::OkStatus();
}

absl::Status ValidateToolSchema(const Json& schema, const std::string& field) {
  if (!schema.is_object()) return Invalid(field, "must be a JSON object (a JSON schema)");
  if (schema.contains("type") && schema["type"] != "object") {
    return Invalid(absl::StrCat(field, ".type"),
                   "the parameters of a tool must be an object schema (\"type\": \"object\")");
  }
  return ValidateSchemaAt(schema, field, 0);
}

Json StructToJson(const google::protobuf::Struct& s) { return StructFields(s); }

absl::StatusOr<Json> ChatToTemplateInput(const v1::Chat& chat, const std::string& field,
                                         int max_tools, std::vector<ImagePart>* images,
                                         std::vector<VideoPart>* videos) {
  Json in = Json::object();
  Json messages = Json::array();
  if (chat.messages().empty()) return Invalid(absl::StrCat(field, ".messages"), "is empty");
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string path = absl::StrCat(field, ".messages[", i, "]");
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" &&
        m.role() != "tool") {
      return Invalid(
          absl::StrCat(path, ".role"),
          absl::StrCat("\"", m.role(), "\" is not one of system, user, assistant, tool"));
    }
    if (m.role() == "system" && i > 0) {
      return Invalid(absl::StrCat(path, ".role"),
                     "a system message must be the first message of the chat");
    }
    RETURN_IF_ERROR(CheckText(m.content(), absl::StrCat(path, ".content")));
    RETURN_IF_ERROR(CheckText(m.reasoning_content(), absl::StrCat(path, ".reasoning_content")));
    RETURN_IF_ERROR(CheckText(m.name(), absl::StrCat(path, ".name")));
    RETURN_IF_ERROR(CheckText(m.tool_call_id(), absl::StrCat(path, ".tool_call_id")));
    Json jm = Json::object();
    jm["role"] = m.role();
    if (!m.content().empty() && !m.parts().empty()) {
      return Invalid(path, "set content or parts, not both");
    }
    if (!m.parts().empty()) {
      Json parts = Json::array();
      for (int p = 0; p < m.parts_size(); ++p) {
        const v1::ContentPart& part = m.parts(p);
        if (part.part_case() == v1::ContentPart::kImage) {
          const std::string ipath = absl::StrCat(path, ".parts[", p, "].image");
          if (m.role() != "user") {
            return Invalid(ipath, "only user messages may carry images");
          }
          if (images != nullptr) images->push_back({&part.image(), ipath});
          parts.push_back(Json{{"type", "image"}});
          continue;
        }
        if (part.part_case() == v1::ContentPart::kVideo) {
          const std::string vpath = absl::StrCat(path, ".parts[", p, "].video");
          if (m.role() != "user") {
            return Invalid(vpath, "only user messages may carry videos");
          }
          if (videos != nullptr) videos->push_back({&part.video(), vpath});
          parts.push_back(Json{{"type", "video"}});
          continue;
        }
        if (part.part_case() != v1::ContentPart::kText) {
          return Invalid(absl::StrCat(path, ".parts[", p, "]"), "has no content");
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
        return Invalid(absl::StrCat(path, ".reasoning_content"), "only assistant messages have it");
      }
      jm["reasoning_content"] = m.reasoning_content();
    }
    if (!m.tool_calls().empty()) {
      if (m.role() != "assistant") {
        return Invalid(absl::StrCat(path, ".tool_calls"), "only assistant messages have them");
      }
      Json calls = Json::array();
      for (int c = 0; c < m.tool_calls_size(); ++c) {
        const v1::ToolCall& call = m.tool_calls(c);
        const std::string cpath = absl::StrCat(path, ".tool_calls[", c, "]");
        if (call.name().empty()) return Invalid(absl::StrCat(cpath, ".name"), "is empty");
        RETURN_IF_ERROR(CheckText(call.name(), absl::StrCat(cpath, ".name")));
        RETURN_IF_ERROR(CheckText(call.arguments(), absl::StrCat(cpath, ".arguments")));
        Json args = Json::object();
        if (!call.arguments().empty()) {
          args = Json::parse(call.arguments(), nullptr, /*allow_exceptions=*/false);
          if (args.is_discarded() || !args.is_object()) {
            return Invalid(absl::StrCat(cpath, ".arguments"), "is not a JSON object");
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
    return Invalid(absl::StrCat(field, ".tools"),
                   absl::StrCat(chat.tools_size(), " tools; at most ", max_tools, " are allowed"));
  }
  if (!chat.tools().empty()) {
    Json tools = Json::array();
    absl::flat_hash_set<std::string> names;
    for (int t = 0; t < chat.tools_size(); ++t) {
      const v1::Tool& tool = chat.tools(t);
      const std::string tpath = absl::StrCat(field, ".tools[", t, "]");
      if (tool.name().empty()) return Invalid(absl::StrCat(tpath, ".name"), "is empty");
      if (!IsToolName(tool.name())) {
        return Invalid(absl::StrCat(tpath, ".name"),
                       "must be 1 to 64 characters of A-Z, a-z, 0-9, _, - and .");
      }
      if (!names.insert(tool.name()).second) {
        return Invalid(absl::StrCat(tpath, ".name"),
                       absl::StrCat("\"", tool.name(), "\" names an earlier tool too"));
      }
      RETURN_IF_ERROR(CheckText(tool.description(), absl::StrCat(tpath, ".description")));
      RETURN_IF_ERROR(CheckText(tool.parameters_json(), absl::StrCat(tpath, ".parameters_json")));
      Json fn = Json::object();
      fn["name"] = tool.name();
      if (!tool.description().empty()) fn["description"] = tool.description();
      if (tool.has_parameters() && !tool.parameters_json().empty()) {
        return Invalid(tpath, "set parameters or parameters_json, not both");
      }
      if (!tool.parameters_json().empty()) {
        Json params = Json::parse(tool.parameters_json(), nullptr, /*allow_exceptions=*/false);
        if (params.is_discarded() || !params.is_object()) {
          return Invalid(absl::StrCat(tpath, ".parameters_json"), "is not a JSON object");
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

absl::StatusOr<std::string> ImageBytes(const v1::Image& image, const std::string& field) {
  ASSIGN_OR_RETURN(DataUrl media, MediaBytes(image.data(), image.url(), image.mime_type(), field,
                                             "data:image/png;base64,..."));
  const std::string& mime = media.mime_type;
  if (!mime.empty()) {
    const std::string m = absl::AsciiStrToLower(mime);
    const char* want = m == "image/jpeg" || m == "image/jpg" ? "jpeg"
                       : m == "image/png"                    ? "png"
                       : m == "image/webp"                   ? "webp"
                                                             : nullptr;
    if (want == nullptr) {
      return Invalid(absl::StrCat(field, ".mime_type"),
                     absl::StrCat("\"", mime, "\" is not image/jpeg, image/png or image/webp"));
    }
    const absl::string_view sniffed = vision::SniffImageFormat(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(media.bytes.data()), media.bytes.size()));
    if (!sniffed.empty() && sniffed != want) {
      return Invalid(absl::StrCat(field, ".mime_type"),
                     absl::StrCat("says ", mime, " but the data is ", sniffed));
    }
  }
  return std::move(media.bytes);
}

absl::StatusOr<std::vector<PlacedImage>> PlaceImages(const std::vector<ImagePart>& images,
                                                     const TextModel& model,
                                                     std::vector<int32_t>* ids,
                                                     absl::string_view ids_field) {
  std::vector<PlacedImage> placed;
  if (images.empty()) return placed;
  const vision::VisionEncoder* encoder = model.vision();
  if (encoder == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(images[0].field,
                     ": this server takes no images (it runs without a vision model; start it "
                     "with --mmproj)"));
  }
  std::vector<vision::ImageGrid> grids;
  for (const ImagePart& part : images) {
    PlacedImage p;
    p.field = part.field;
    ASSIGN_OR_RETURN(p.bytes, ImageBytes(*part.image, part.field));
    // Decoded here only for its size (and to refuse a bad image before it takes a slot); the
    // worker decodes again.
    ASSIGN_OR_RETURN(
        vision::RgbImage rgb,
        vision::DecodeImage(
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.bytes.data()), p.bytes.size()),
            {}, part.field));
    p.width = rgb.width;
    p.height = rgb.height;
    absl::StatusOr<vision::ImageGrid> grid = vision::PlanGrid(
        rgb.width, rgb.height, encoder->config(), model.vision_options().preprocess);
    if (!grid.ok()) return Invalid(part.field, grid.status().message());
    p.grid = *grid;
    grids.push_back(*grid);
    placed.push_back(std::move(p));
  }
  ASSIGN_OR_RETURN(
      std::vector<model::ImageSpan> spans,
      multimodal::ExpandImagePads(*ids, model.image_tokens().image_pad, grids, ids_field));
  for (size_t k = 0; k < placed.size(); ++k) placed[k].span = spans[k];
  return placed;
}

std::string ImageKey(const PlacedImage& image) {
  const std::string grid = absl::StrCat("|", image.grid.patch_rows, "x", image.grid.patch_cols);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, image.bytes.data(), image.bytes.size());
  EVP_DigestUpdate(ctx, grid.data(), grid.size());
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

void DescribeImages(const std::vector<PlacedImage>& images,
                    google::protobuf::RepeatedPtrField<v1::ImageTokens>* out) {
  for (const PlacedImage& p : images) {
    v1::ImageTokens* t = out->Add();
    t->set_token_offset(static_cast<uint32_t>(p.span.offset));
    t->set_tokens(static_cast<uint32_t>(p.grid.n_tokens()));
    t->set_positions(static_cast<uint32_t>(multimodal::ImagePositions(p.grid)));
    t->set_rows(static_cast<uint32_t>(p.grid.rows()));
    t->set_cols(static_cast<uint32_t>(p.grid.cols()));
    t->set_width(static_cast<uint32_t>(p.width));
    t->set_height(static_cast<uint32_t>(p.height));
  }
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

absl::StatusOr<PreparedGenerate> PrepareGenerate(const v1::GenerateRequest& request,
                                                 const TextModel& model,
                                                 const RequestLimits& limits,
                                                 uint64_t request_number,
                                                 const std::string* forced_output) {
  PreparedGenerate p;
  RETURN_IF_ERROR(CheckText(request.request_id(), "request_id"));
  if (request.request_id().size() > 256) return Invalid("request_id", "is longer than 256 bytes");
  p.request_id =
      request.request_id().empty() ? absl::StrCat("req-", request_number) : request.request_id();
  const int32_t vocab = model.vocab_size();
  worker::v1::GenerateRequest& w = p.worker_request;
  w.set_request_id(p.request_id);

  // Input.
  std::string input_field;
  std::vector<int32_t> prompt;
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      input_field = "prompt";
      RETURN_IF_ERROR(CheckText(request.prompt(), input_field));
      prompt = model.tokenizer().Encode(request.prompt(), /*parse_special=*/true);
      break;
    case v1::GenerateRequest::kPromptTokenIds:
      input_field = "prompt_token_ids.ids";
      RETURN_IF_ERROR(CheckTokenIds(request.prompt_token_ids().ids(), input_field, vocab));
      prompt.assign(request.prompt_token_ids().ids().begin(),
                    request.prompt_token_ids().ids().end());
      break;
    case v1::GenerateRequest::kChat: {
      input_field = "chat";
      ASSIGN_OR_RETURN(RenderedChat rendered,
                       RenderChat(request.chat(), model, "chat", limits.max_tools));
      prompt = std::move(rendered.token_ids);
      for (const PlacedImage& im : rendered.images) {
        worker::v1::Image* wi = w.add_images();
        wi->set_data(im.bytes);
        wi->set_token_offset(im.span.offset);
        wi->set_rows(im.span.rows);
        wi->set_cols(im.span.cols);
        wi->set_min_pixels(model.vision_options().preprocess.min_pixels);
        wi->set_max_pixels(model.vision_options().preprocess.max_pixels);
        wi->set_field(im.field);
        wi->set_key(ImageKey(im));
        p.image_tokens += static_cast<int32_t>(im.grid.n_tokens());
      }
      for (const PlacedVideo& v : rendered.videos) {
        ToWorkerVideo(v, w.add_videos());
        p.video_tokens += static_cast<int32_t>(VideoTokenCount(v));
      }
      p.parse_output = !request.output().raw_text();
      p.parser_options.reasoning_open = rendered.reasoning_open;
      p.parser_options.tools = std::move(rendered.tools);
      break;
    }
    default:
      return Invalid("input", "set one of prompt, prompt_token_ids or chat");
  }
  if (prompt.empty()) return Invalid(input_field, "is empty");
  p.prompt_tokens = static_cast<int32_t>(prompt.size());
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt >= limits.slot_context) {
    return Invalid(input_field,
                   absl::StrCat("the prompt has ", n_prompt, " tokens; the context size is ",
                                limits.slot_context, " tokens, which leaves no room to generate"));
  }
  w.mutable_prompt()->Assign(prompt.begin(), prompt.end());

  // Sampling.
  const v1::SamplingParams& s = request.sampling();
  sampling::SamplingParams sp;
  sp.temperature = s.has_temperature() ? s.temperature() : 1.0f;
  sp.top_k = s.top_k();
  sp.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  sp.min_p = s.min_p();
  sp.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  sp.presence_penalty = s.presence_penalty();
  sp.frequency_penalty = s.frequency_penalty();
  for (const auto& [token, bias] : s.logit_bias()) sp.logit_bias.emplace_back(token, bias);
  std::sort(sp.logit_bias.begin(), sp.logit_bias.end());
  if (absl::Status st = sampling::Validate(sp, vocab); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  }
  p.seed = s.has_seed() ? s.seed() : RandomSeed();
  worker::v1::SamplingParams& ws = *w.mutable_sampling();
  ws.set_temperature(sp.temperature);
  ws.set_top_k(sp.top_k);
  ws.set_top_p(sp.top_p);
  ws.set_min_p(sp.min_p);
  ws.set_repetition_penalty(sp.repetition_penalty);
  ws.set_presence_penalty(sp.presence_penalty);
  ws.set_frequency_penalty(sp.frequency_penalty);
  ws.set_seed(p.seed);
  for (const auto& [token, bias] : sp.logit_bias) (*ws.mutable_logit_bias())[token] = bias;

  // Stopping.
  const v1::StoppingCriteria& st = request.stopping();
  int64_t max_tokens;
  if (st.has_max_tokens()) {
    max_tokens = st.max_tokens();
    if (max_tokens < 1) return Invalid("stopping.max_tokens", "must be at least 1");
    if (n_prompt + max_tokens > limits.slot_context) {
      return Invalid(
          "stopping.max_tokens",
          absl::StrCat("the prompt (", n_prompt, " tokens) plus max_tokens (", max_tokens,
                       ") exceeds the context size of ", limits.slot_context, " tokens"));
    }
  } else {
    max_tokens = std::min<int64_t>(limits.default_max_tokens, limits.slot_context - n_prompt);
  }
  w.set_max_tokens(static_cast<int32_t>(max_tokens));
  if (st.stop_size() > limits.max_stop_strings) {
    return Invalid("stopping.stop", absl::StrCat("at most ", limits.max_stop_strings, " strings"));
  }
  for (int k = 0; k < st.stop_size(); ++k) {
    const std::string field = absl::StrCat("stopping.stop[", k, "]");
    if (st.stop(k).empty()) return Invalid(field, "is empty");
    RETURN_IF_ERROR(CheckText(st.stop(k), field));
    if (st.stop(k).size() > limits.max_stop_bytes) {
      return Invalid(field, absl::StrCat("is longer than ", limits.max_stop_bytes, " bytes"));
    }
    p.stop.push_back(st.stop(k));
  }
  RETURN_IF_ERROR(CheckTokenIds(st.stop_token_ids(), "stopping.stop_token_ids", vocab));
  for (int32_t id : st.stop_token_ids()) {
    p.client_stop_ids.insert(id);
    p.stop_ids.insert(id);
  }
  if (!st.ignore_eos()) {
    for (int32_t id : model.eog_ids()) p.stop_ids.insert(id);
  }
  std::vector<int32_t> stop_ids(p.stop_ids.begin(), p.stop_ids.end());
  std::sort(stop_ids.begin(), stop_ids.end());
  w.mutable_stop_token_ids()->Assign(stop_ids.begin(), stop_ids.end());

  // Output.
  const v1::OutputOptions& o = request.output();
  if (o.top_logprobs() > static_cast<uint32_t>(limits.max_top_logprobs)) {
    return Invalid("output.top_logprobs", absl::StrCat("at most ", limits.max_top_logprobs));
  }
  if (o.top_logprobs() > 0 && !o.logprobs()) {
    return Invalid("output.top_logprobs", "needs output.logprobs");
  }
  if (o.raw_text() && request.input_case() != v1::GenerateRequest::kChat) {
    return Invalid("output.raw_text", "applies to chat input only");
  }
  p.logprobs = o.logprobs();
  p.top_logprobs = static_cast<int>(o.top_logprobs());
  p.return_token_ids = o.return_token_ids();
  w.set_logprobs(p.logprobs ? p.top_logprobs : -1);
  w.set_no_prefix_cache(request.has_prefix_cache() && !request.prefix_cache());

  // Structured output: checked here (so that a bad format fails before any work, naming the
  // construct) and compiled again by the worker for the vocabulary.
  if (request.has_response_format()) {
    const v1::ResponseFormat& rf = request.response_format();
    worker::v1::Constraint& c = *w.mutable_constraint();
    grammar::ConstraintSpec spec;
    std::string field = "response_format";
    switch (rf.format_case()) {
      case v1::ResponseFormat::kJsonSchema:
        field = "response_format.json_schema";
        RETURN_IF_ERROR(CheckText(rf.json_schema(), field));
        spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
        spec.text = rf.json_schema();
        c.set_kind(worker::v1::Constraint::KIND_JSON_SCHEMA);
        break;
      case v1::ResponseFormat::kJsonSchemaStruct:
        field = "response_format.json_schema_struct";
        spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
        spec.text = StructToJson(rf.json_schema_struct()).dump();
        c.set_kind(worker::v1::Constraint::KIND_JSON_SCHEMA);
        break;
      case v1::ResponseFormat::kRegex:
        field = "response_format.regex";
        RETURN_IF_ERROR(CheckText(rf.regex(), field));
        if (rf.regex().empty()) return Invalid(field, "is empty");
        spec.kind = grammar::ConstraintSpec::Kind::kRegex;
        spec.text = rf.regex();
        c.set_kind(worker::v1::Constraint::KIND_REGEX);
        break;
      case v1::ResponseFormat::kChoices:
        field = "response_format.choices";
        for (int k = 0; k < rf.choices().choices_size(); ++k) {
          RETURN_IF_ERROR(
              CheckText(rf.choices().choices(k), absl::StrCat(field, ".choices[", k, "]")));
          spec.choices.push_back(rf.choices().choices(k));
        }
        spec.kind = grammar::ConstraintSpec::Kind::kChoices;
        c.set_kind(worker::v1::Constraint::KIND_CHOICES);
        break;
      case v1::ResponseFormat::kGrammar:
        field = "response_format.grammar";
        RETURN_IF_ERROR(CheckText(rf.grammar(), field));
        spec.kind = grammar::ConstraintSpec::Kind::kGrammar;
        spec.text = rf.grammar();
        c.set_kind(worker::v1::Constraint::KIND_GRAMMAR);
        break;
      case v1::ResponseFormat::kToolCalls:
        field = "response_format.tool_calls";
        if (request.input_case() != v1::GenerateRequest::kChat || request.chat().tools().empty()) {
          return Invalid(field, "needs chat input with tools");
        }
        spec.kind = grammar::ConstraintSpec::Kind::kToolCalls;
        spec.tools_json = p.parser_options.tools.dump();
        spec.tool_calls_required = rf.tool_calls().required();
        c.set_kind(worker::v1::Constraint::KIND_TOOL_CALLS);
        break;
      default:
        return Invalid(field,
                       "set one of json_schema, json_schema_struct, regex, choices, "
                       "grammar or tool_calls");
    }
    spec.after_reasoning =
        request.input_case() == v1::GenerateRequest::kChat && p.parser_options.reasoning_open;
    if (absl::StatusOr<grammar::Grammar> g = grammar::BuildGrammar(spec); !g.ok()) {
      return Invalid(field, g.status().message());
    }
    c.set_text(spec.text);
    for (const std::string& choice : spec.choices) c.add_choices(choice);
    c.set_tools_json(spec.tools_json);
    c.set_tool_calls_required(spec.tool_calls_required);
    c.set_after_reasoning(spec.after_reasoning);
  }

  if (forced_output != nullptr) {
    const std::vector<int32_t> forced = model.tokenizer().Encode(*forced_output, true);
    w.mutable_forced_tokens()->Assign(forced.begin(), forced.end());
  }
  return p;
}

}  // namespace qwen::service

// Turning public requests (qwen.v1) into what the workers run, with validation.
#ifndef QWEN_SERVICE_REQUEST_H_
#define QWEN_SERVICE_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/chat/output_parser.h"
#include "nlohmann/json.hpp"
#include "qwen/v1/qwen.pb.h"
#include "qwen/worker/v1/worker.pb.h"
#include "service/request_videos.h"
#include "service/text_model.h"

namespace qwen::service {

// Limits of this server that requests are checked against.
struct RequestLimits {
  int64_t slot_context = 4096;       // prompt + generated tokens per sequence
  int32_t default_max_tokens = 256;  // when the request does not say
  int max_stop_strings = 16;         // --max_stop_strings
  size_t max_stop_bytes = 256;
  int max_top_logprobs = 20;
  int max_tools = 64;  // --max_tools: tools of one chat
};

// Largest nesting of a tool's JSON schema (objects and arrays inside one another).
inline constexpr int kMaxSchemaDepth = 32;

// A validated Generate request, ready to dispatch.
struct PreparedGenerate {
  std::string request_id;
  // What the worker runs (prompt ids, sampling with the seed filled in, stop ids, logprobs).
  worker::v1::GenerateRequest worker_request;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  // The request's own stop_token_ids (generation ending on one is STOP_TOKEN, not EOS).
  absl::flat_hash_set<int32_t> client_stop_ids;
  // Every token that ends generation (end-of-generation unless ignore_eos, and the client's).
  absl::flat_hash_set<int32_t> stop_ids;
  // Chat input whose output is split into reasoning, content and tool calls.
  bool parse_output = false;
  chat::OutputParserOptions parser_options;
  bool return_token_ids = false;
  bool logprobs = false;
  int top_logprobs = 0;
  int32_t prompt_tokens = 0;
  int32_t image_tokens = 0;  // of prompt_tokens
  int32_t video_tokens = 0;  // of prompt_tokens
};

// An image of a request, where the request carries it.
struct ImagePart {
  const v1::Image* image = nullptr;
  std::string field;  // "chat.messages[0].parts[1].image"
};

// An image checked, decoded once for its size and placed in the prompt.
struct PlacedImage {
  std::string bytes;  // the encoded file
  std::string field;
  int width = 0;
  int height = 0;
  vision::ImageGrid grid;
  model::ImageSpan span;  // its tokens in the prompt
};

// A chat rendered by the model's template.
struct RenderedChat {
  std::string prompt;
  std::vector<int32_t> token_ids;  // image placeholders expanded to the images' tokens
  bool reasoning_open = false;
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();  // as the template saw them
  std::vector<PlacedImage> images;
  std::vector<PlacedVideo> videos;
};

// The encoded bytes of an image given by value or as a base64 data: URL (any other URL is
// INVALID_ARGUMENT: the server never fetches), with mime_type (when given) checked against the
// URL's and the bytes' own format.
absl::StatusOr<std::string> ImageBytes(const v1::Image& image, const std::string& field);

// Resolves the images (bytes or data: URL; any other URL is INVALID_ARGUMENT: the server never
// fetches), decodes each (INVALID_ARGUMENT naming its field when it is not a JPEG, PNG or WebP
// image within the decoding limits), plans its grid and expands the k-th <|image_pad|> of `ids`
// to its tokens. FAILED_PRECONDITION when the server has no vision model (--mmproj).
absl::StatusOr<std::vector<PlacedImage>> PlaceImages(const std::vector<ImagePart>& images,
                                                     const TextModel& model,
                                                     std::vector<int32_t>* ids,
                                                     absl::string_view ids_field);

// Identifies an image's content for state reuse: hex SHA-256 of its file and grid.
std::string ImageKey(const PlacedImage& image);

// The public description of placed images.
void DescribeImages(const std::vector<PlacedImage>& images,
                    google::protobuf::RepeatedPtrField<v1::ImageTokens>* out);

// Checks a Generate request and prepares it. INVALID_ARGUMENT with a message that starts with
// the path of the offending field ("sampling.top_p: must be in (0, 1]"). `forced_output`, when
// not null, is text whose tokens the worker emits in place of sampled ones (testing only; the
// caller decides whether it is allowed). `request_number` names requests without a client id.
absl::StatusOr<PreparedGenerate> PrepareGenerate(const v1::GenerateRequest& request,
                                                 const TextModel& model,
                                                 const RequestLimits& limits,
                                                 uint64_t request_number,
                                                 const std::string* forced_output = nullptr);

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
    const v1::Chat& chat, const std::string& field, int max_tools = RequestLimits().max_tools,
    std::vector<ImagePart>* images = nullptr, std::vector<VideoPart>* videos = nullptr);

// Checks that `schema` is a plausible JSON schema for a tool's parameters: an object whose
// "type" (if any) is "object"; nested schemas under properties, items, additionalProperties,
// anyOf/oneOf/allOf and $defs are objects (or booleans) with known type names; "required" is an
// array of strings, "enum" a non-empty array; nesting at most kMaxSchemaDepth. INVALID_ARGUMENT
// naming the path ("chat.tools[0].parameters.properties.city.type: ...").
absl::Status ValidateToolSchema(const nlohmann::ordered_json& schema, const std::string& field);

// INVALID_ARGUMENT "<field>: is not valid UTF-8" / "<field>: contains a NUL byte".
absl::Status CheckText(absl::string_view text, absl::string_view field);

// Renders and tokenizes a chat. FAILED_PRECONDITION when the model has no chat template;
// INVALID_ARGUMENT for a conversation the template refuses ("chat: No user query found ...").
// Videos are probed and planned (PlanVideos) and their placeholder text expanded to their
// timestamped frame pairs before tokenization, as the model's processor does; `prompt` is that
// expanded text.
absl::StatusOr<RenderedChat> RenderChat(const v1::Chat& chat, const TextModel& model,
                                        const std::string& field = "chat",
                                        int max_tools = RequestLimits().max_tools);

// A google.protobuf.Struct / Value as JSON. Numbers that are whole and fit an int64 become JSON
// integers (a schema's "minimum": 1 stays 1, not 1.0). Object keys come out sorted, with the
// JSON-schema keys that conventionally lead ("type", "description", ...) first.
nlohmann::ordered_json StructToJson(const google::protobuf::Struct& s);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REQUEST_H_

#include "inference/chat/output_parser.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace qwen::chat {
namespace {

using Json = nlohmann::ordered_json;

constexpr absl::string_view kThinkOpen = "<think>";
constexpr absl::string_view kThinkClose = "</think>";
constexpr absl::string_view kToolOpen = "<tool_call>";
constexpr absl::string_view kToolClose = "</tool_call>";
constexpr absl::string_view kFunctionOpen = "<function=";
constexpr absl::string_view kFunctionClose = "</function>";
constexpr absl::string_view kParamOpen = "<parameter=";
constexpr absl::string_view kParamClose = "</parameter>";

// Deepest nesting of a parameter value parsed as JSON; deeper values stay strings, so a
// pathological value cannot exhaust the stack when the result is printed.
constexpr int kMaxArgumentDepth = 64;

// Length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t PartialTagSuffix(absl::string_view s, absl::string_view tag) {
  for (size_t len = std::min(s.size(), tag.size() - 1); len > 0; --len) {
    if (s.substr(s.size() - len) == tag.substr(0, len)) return len;
  }
  return 0;
}

// Length of the run of '\n' ending at s[end).
size_t TrailingNewlines(absl::string_view s, size_t end) {
  size_t n = 0;
  while (n < end && s[end - 1 - n] == '\n') ++n;
  return n;
}

bool JsonDepthWithin(absl::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t k = 0; k < text.size(); ++k) {
    const char c = text[k];
    if (in_string) {
      if (c == '\\') {
        ++k;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// JSON value of `text`, or a discarded value when it is not valid JSON (never throws).
Json ParseJson(absl::string_view text) {
  if (!JsonDepthWithin(text, kMaxArgumentDepth)) return Json(Json::value_t::discarded);
  return Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

// Compact JSON text (the separators of OpenAI's own arguments). Invalid UTF-8 in a value is
// replaced rather than thrown on.
std::string DumpCompact(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool MatchesType(const Json& v, const std::string& type) {
  if (type == "string") return v.is_string();
  if (type == "integer") return v.is_number_integer();
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  return false;
}

}  // namespace

Json ToolCall::ToJson() const {
  Json j = Json::object();
  j["name"] = name;
  j["arguments"] = arguments;
  if (!valid) {
    j["valid"] = false;
    j["error"] = error;
    j["raw"] = raw;
  }
  return j;
}

Json ParsedOutput::ToJson() const {
  Json j = Json::object();
  j["reasoning"] = reasoning;
  j["content"] = content;
  j["tool_calls"] = Json::array();
  for (const ToolCall& call : tool_calls) j["tool_calls"].push_back(call.ToJson());
  return j;
}

OutputParser::OutputParser(const OutputParserOptions& options)
    : state_(options.reasoning_open ? State::kReasoning : State::kContent),
      reasoning_seen_(options.reasoning_open),
      max_tool_calls_(std::max(0, options.max_tool_calls)) {
  if (!options.tools.is_array()) return;
  for (const Json& tool : options.tools) {
    if (!tool.is_object()) continue;
    const Json* fn = &tool;
    auto inner = tool.find("function");
    if (inner != tool.end() && inner->is_object()) fn = &*inner;
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string()) continue;
    tools_given_ = true;
    FunctionSchema schema;
    auto params = fn->find("parameters");
    if (params != fn->end() && params->is_object()) {
      auto props = params->find("properties");
      if (props != params->end() && props->is_object()) {
        for (const auto& [key, prop] : props->items()) {
          ParamSchema p;
          if (prop.is_object()) {
            auto type = prop.find("type");
            if (type != prop.end() && type->is_string()) {
              p.types.push_back(type->get<std::string>());
            } else if (type != prop.end() && type->is_array()) {
              for (const Json& t : *type) {
                if (t.is_string()) p.types.push_back(t.get<std::string>());
              }
            }
          }
          schema.params[key] = std::move(p);
        }
      }
    }
    functions_[name->get<std::string>()] = std::move(schema);
  }
}

void OutputParser::EmitReasoning(absl::string_view text, ParserDelta* delta) {
  if (text.empty()) return;
  delta->reasoning.append(text.data(), text.size());
  result_.reasoning.append(text.data(), text.size());
}

void OutputParser::EmitContent(absl::string_view text, ParserDelta* delta) {
  if (text.empty()) return;
  delta->content.append(text.data(), text.size());
  result_.content.append(text.data(), text.size());
}

ParserDelta OutputParser::Add(absl::string_view text) {
  ParserDelta delta;
  buffer_.append(text.data(), text.size());
  Process(/*final=*/false, &delta);
  return delta;
}

ParserDelta OutputParser::Finish() {
  ParserDelta delta;
  Process(/*final=*/true, &delta);
  return delta;
}

ParsedOutput OutputParser::Parse(absl::string_view text, const OutputParserOptions& options) {
  OutputParser parser(options);
  parser.Add(text);
  parser.Finish();
  return parser.result_;
}

void OutputParser::Process(bool final, ParserDelta* delta) {
  while (true) {
    if (done_) {
      buffer_.clear();
      return;
    }
    const absl::string_view buf = buffer_;
    switch (state_) {
      case State::kReasoning: {
        if (!reasoning_started_) {
          size_t lead = 0;
          while (lead < buf.size() && buf[lead] == '\n') ++lead;
          buffer_.erase(0, lead);
          if (buffer_.empty()) return;
          reasoning_started_ = true;
          continue;
        }
        const size_t close = buf.find(kThinkClose);
        if (close != absl::string_view::npos) {
          EmitReasoning(buf.substr(0, close - TrailingNewlines(buf, close)), delta);
          buffer_.erase(0, close + kThinkClose.size());
          state_ = State::kContent;
          content_started_ = false;
          continue;
        }
        if (final) {
          EmitReasoning(buf, delta);
          buffer_.clear();
          return;
        }
        size_t keep = PartialTagSuffix(buf, kThinkClose);
        keep += TrailingNewlines(buf, buf.size() - keep);
        EmitReasoning(buf.substr(0, buf.size() - keep), delta);
        buffer_.erase(0, buf.size() - keep);
        return;
      }
      case State::kContent: {
        if (!content_started_) {
          size_t lead = 0;
          while (lead < buf.size() && buf[lead] == '\n') ++lead;
          if (lead > 0) {
            buffer_.erase(0, lead);
            continue;
          }
          if (buf.empty()) return;
          if (!reasoning_seen_) {
            if (absl::StartsWith(buf, kThinkOpen)) {
              buffer_.erase(0, kThinkOpen.size());
              state_ = State::kReasoning;
              reasoning_seen_ = true;
              reasoning_started_ = false;
              continue;
            }
            if (!final && buf.size() < kThinkOpen.size() && absl::StartsWith(kThinkOpen, buf)) {
              return;  // might still become <think>
            }
          }
          content_started_ = true;
          reasoning_seen_ = true;  // <think> only counts at the very start
        }
        const size_t open = buf.find(kToolOpen);
        if (open != absl::string_view::npos) {
          EmitContent(buf.substr(0, open - TrailingNewlines(buf, open)), delta);
          buffer_.erase(0, open);  // the block keeps its opening tag for `raw`
          state_ = State::kToolCall;
          open_ = OpenCall();
          open_.pos = kToolOpen.size();
          continue;
        }
        if (final) {
          EmitContent(buf, delta);
          buffer_.clear();
          return;
        }
        size_t keep = PartialTagSuffix(buf, kToolOpen);
        keep += TrailingNewlines(buf, buf.size() - keep);
        EmitContent(buf.substr(0, buf.size() - keep), delta);
        buffer_.erase(0, buf.size() - keep);
        return;
      }
      case State::kToolCall: {
        const size_t close = buf.find(kToolClose, kToolOpen.size());
        if (close == absl::string_view::npos) {
          ScanCall(buf, /*complete=*/final, delta);
          if (!final) return;
          if (open_.call.valid) {
            open_.call.valid = false;
            open_.call.error = "unclosed <tool_call>";
          }
          FinishCall(std::string(buf), delta);
          buffer_.clear();
          state_ = State::kContent;
          content_started_ = false;
          return;
        }
        const size_t end = close + kToolClose.size();
        ScanCall(buf.substr(0, close), /*complete=*/true, delta);
        FinishCall(std::string(buf.substr(0, end)), delta);
        buffer_.erase(0, end);
        state_ = State::kContent;
        content_started_ = false;
        continue;
      }
    }
  }
}

void OutputParser::StreamArguments(std::string fragment, ParserDelta* delta) {
  open_.call.arguments_text += fragment;
  ToolCallDelta d;
  d.index = static_cast<int>(result_.tool_calls.size());
  d.arguments = std::move(fragment);
  delta->tool_call_deltas.push_back(std::move(d));
}

void OutputParser::FinishCall(std::string raw, ParserDelta* delta) {
  ToolCall call = std::move(open_.call);
  open_ = OpenCall();
  call.raw = std::move(raw);
  if (!call.streamed) call.arguments_text = DumpCompact(call.arguments);
  if (call.streamed && max_tool_calls_ > 0 && ++streamed_calls_ >= max_tool_calls_) {
    done_ = true;
  }
  delta->tool_calls.push_back(call);
  result_.tool_calls.push_back(std::move(call));
}

void OutputParser::ScanCall(absl::string_view block, bool complete, ParserDelta* delta) {
  OpenCall& o = open_;
  ToolCall& call = o.call;
  auto fail = [&call](std::string why) {
    call.valid = false;
    if (call.error.empty()) call.error = std::move(why);
  };
  while (true) {
    const absl::string_view rest = block.substr(std::min(o.pos, block.size()));
    const absl::string_view body = absl::StripLeadingAsciiWhitespace(rest);
    const size_t ws = rest.size() - body.size();
    switch (o.stage) {
      case OpenCall::Stage::kBroken:
        return;
      case OpenCall::Stage::kEnd:
        if (complete && !body.empty()) fail("text after </function>");
        return;
      case OpenCall::Stage::kHeader: {
        if (!absl::StartsWith(body, kFunctionOpen)) {
          // A prefix of a tag may still become it (</tool_call> then closes the block and the
          // complete read decides); the problem must not depend on where a chunk ended.
          if (!complete &&
              (absl::StartsWith(kFunctionOpen, body) || absl::StartsWith(kToolClose, body))) {
            return;
          }
          fail("missing <function=...>");
          o.stage = OpenCall::Stage::kBroken;
          return;
        }
        const size_t name_end = body.find('>', kFunctionOpen.size());
        if (name_end == absl::string_view::npos) {
          if (!complete) return;
          fail("unclosed <function=...> tag");
          o.stage = OpenCall::Stage::kBroken;
          return;
        }
        call.name = std::string(absl::StripAsciiWhitespace(
            body.substr(kFunctionOpen.size(), name_end - kFunctionOpen.size())));
        o.pos += ws + name_end + 1;
        o.stage = OpenCall::Stage::kParams;
        auto it = functions_.find(call.name);
        if (it != functions_.end()) o.fn = &it->second;
        if (call.name.empty()) fail("empty function name");
        if (tools_given_ && o.fn == nullptr) {
          fail(absl::StrCat("unknown function '", call.name, "'"));
        }
        if (call.valid) {
          call.streamed = true;
          ToolCallDelta d;
          d.index = static_cast<int>(result_.tool_calls.size());
          d.name = call.name;
          delta->tool_call_deltas.push_back(std::move(d));
        }
        continue;
      }
      case OpenCall::Stage::kParams: {
        if (absl::StartsWith(body, kFunctionClose)) {
          o.pos += ws + kFunctionClose.size();
          o.stage = OpenCall::Stage::kEnd;
          if (call.valid) StreamArguments(call.arguments_text.empty() ? "{}" : "}", delta);
          continue;
        }
        if (!absl::StartsWith(body, kParamOpen)) {
          if (!complete &&
              (absl::StartsWith(kParamOpen, body) || absl::StartsWith(kFunctionClose, body) ||
               absl::StartsWith(kToolClose, body))) {
            return;  // may still become a tag
          }
          fail(body.empty() ? "missing </function>" : "expected <parameter=...> or </function>");
          o.stage = OpenCall::Stage::kBroken;
          return;
        }
        const size_t key_end = body.find('>', kParamOpen.size());
        if (key_end == absl::string_view::npos) {
          if (!complete) return;
          fail("unclosed <parameter=...> tag");
          o.stage = OpenCall::Stage::kBroken;
          return;
        }
        const std::string key(absl::StripAsciiWhitespace(
            body.substr(kParamOpen.size(), key_end - kParamOpen.size())));
        const absl::string_view after = body.substr(key_end + 1);
        size_t value_end = after.find(kParamClose);
        size_t skip = kParamClose.size();
        if (value_end == absl::string_view::npos) {
          if (!complete) return;
          // Read what there is, up to </function> or the end, for a call that is invalid.
          fail(absl::StrCat("unclosed <parameter=", key, ">"));
          value_end = after.find(kFunctionClose);
          if (value_end == absl::string_view::npos) value_end = after.size();
          skip = 0;
        }
        absl::string_view value = after.substr(0, value_end);
        o.pos += ws + key_end + 1 + value_end + skip;
        absl::ConsumePrefix(&value, "\n");
        absl::ConsumeSuffix(&value, "\n");
        if (call.arguments.contains(key)) continue;  // the first value stays (see ToolCallDelta)
        std::string error;
        Json v = TypedValue(o.fn, key, std::string(value), &error);
        if (!error.empty()) fail(std::move(error));
        if (call.valid) {
          StreamArguments(absl::StrCat(call.arguments_text.empty() ? "{" : ",",
                                       DumpCompact(Json(key)), ":", DumpCompact(v)),
                          delta);
        }
        call.arguments[key] = std::move(v);
        continue;
      }
    }
  }
}

Json OutputParser::TypedValue(const FunctionSchema* fn, const std::string& key,
                              const std::string& text, std::string* error) const {
  const ParamSchema* param = nullptr;
  if (fn != nullptr) {
    auto it = fn->params.find(key);
    if (it != fn->params.end()) param = &it->second;
  }
  if (param == nullptr || param->types.empty()) {
    // Unknown parameter or untyped schema: JSON when it is valid JSON, else the text.
    Json v = ParseJson(text);
    return v.is_discarded() ? Json(text) : v;
  }
  const auto& types = param->types;
  auto has = [&](const char* t) { return std::find(types.begin(), types.end(), t) != types.end(); };
  if (types.size() == 1 && types[0] == "string") return Json(text);
  Json v = ParseJson(text);
  if (v.is_discarded()) {
    // The template writes booleans and null the Python way (True, False, None).
    const absl::string_view t = absl::StripAsciiWhitespace(text);
    if (has("boolean") && (t == "True" || t == "False")) return Json(t == "True");
    if (has("null") && t == "None") return Json(nullptr);
  } else {
    for (const std::string& type : types) {
      if (MatchesType(v, type)) return v;
    }
  }
  if (has("string")) return Json(text);
  if (has("object") || has("array")) {
    *error = absl::StrCat("parameter '", key, "' is not valid JSON for its schema type");
    return Json(text);
  }
  // A scalar of the wrong shape: keep whatever was written rather than lose it.
  return v.is_discarded() ? Json(text) : v;
}

}  // namespace qwen::chat

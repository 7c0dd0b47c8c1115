#include "tests/fuzz/chat_fuzz_entry.h"

#include <vector>

#include "absl/status/status.h"
#include "inference/chat/chat_template.h"
#include "inference/chat/output_parser.h"
#include "inference/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace qwen::chat {

absl::StatusOr<std::string> RenderChatForFuzzing(absl::string_view template_source,
                                                 absl::string_view request_json) {
  ChatTemplateOptions options;
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_loop_iterations = 100000;
  options.limits.max_template_bytes = 1 << 20;
  ASSIGN_OR_RETURN(std::unique_ptr<ChatTemplate> t,
                   ChatTemplate::FromSource(template_source, options));
  const auto request = nlohmann::ordered_json::parse(request_json.begin(), request_json.end(),
                                                     nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) return absl::InvalidArgumentError("request is not valid JSON");
  return t->Render(request);
}

namespace {

bool SameCalls(const std::vector<ToolCall>& a, const std::vector<ToolCall>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].name != b[k].name || a[k].arguments != b[k].arguments || a[k].valid != b[k].valid ||
        a[k].raw != b[k].raw || a[k].error != b[k].error || a[k].streamed != b[k].streamed ||
        a[k].arguments_text != b[k].arguments_text) {
      return false;
    }
  }
  return true;
}

// The tool-call deltas fit the calls: each streamed call starts once, with its name, before
// any fragment; its fragments concatenate to its arguments_text, which is the compact text of
// its arguments when it is valid; a call that was not streamed has no deltas.
bool DeltasFitCalls(const std::vector<ToolCallDelta>& deltas, const std::vector<ToolCall>& calls) {
  std::vector<std::string> text(calls.size());
  std::vector<bool> started(calls.size(), false);
  for (const ToolCallDelta& d : deltas) {
    if (d.index < 0 || static_cast<size_t>(d.index) >= calls.size()) return false;
    const size_t k = static_cast<size_t>(d.index);
    if (!d.name.empty()) {
      if (started[k] || d.name != calls[k].name || !d.arguments.empty()) return false;
      started[k] = true;
    } else if (!started[k]) {
      return false;
    }
    text[k] += d.arguments;
  }
  for (size_t k = 0; k < calls.size(); ++k) {
    if (started[k] != calls[k].streamed) return false;
    if (calls[k].streamed && text[k] != calls[k].arguments_text) return false;
    if (calls[k].valid &&
        calls[k].arguments_text !=
            calls[k].arguments.dump(-1, ' ', false,
                                    nlohmann::ordered_json::error_handler_t::replace)) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::Status CheckOutputParser(absl::string_view data) {
  OutputParserOptions options;
  if (!data.empty()) {
    const auto mode = static_cast<unsigned char>(data[0]);
    options.reasoning_open = (mode & 1) != 0;
    if (mode & 2) {
      options.tools = nlohmann::ordered_json::parse(R"([{"type":"function","function":{
        "name":"f","parameters":{"type":"object","properties":{"s":{"type":"string"},
        "i":{"type":"integer"},"n":{"type":"number"},"b":{"type":"boolean"},"z":{"type":"null"},
        "o":{"type":"object"},"a":{"type":"array"},"u":{"type":["integer","string"]}}}}}])");
    }
    data.remove_prefix(1);
  }
  const ParsedOutput whole = OutputParser::Parse(data, options);
  for (int mode = 0; mode < 2; ++mode) {
    OutputParser parser(options);
    std::string reasoning, content;
    std::vector<ToolCall> calls;
    std::vector<ToolCallDelta> deltas;
    auto take = [&](ParserDelta d) {
      reasoning += d.reasoning;
      content += d.content;
      for (auto& c : d.tool_calls) calls.push_back(std::move(c));
      for (auto& c : d.tool_call_deltas) deltas.push_back(std::move(c));
    };
    size_t pos = 0, step = 1;
    while (pos < data.size()) {
      const size_t n = mode == 0 ? 1 : std::min(step, data.size() - pos);
      take(parser.Add(data.substr(pos, n)));
      pos += n;
      step = step * 3 % 17 + 1;  // uneven chunk sizes
    }
    take(parser.Finish());
    const ParsedOutput& r = parser.result();
    if (reasoning != r.reasoning || content != r.content || !SameCalls(calls, r.tool_calls)) {
      return absl::InternalError("OutputParser deltas do not add up to its result");
    }
    if (!DeltasFitCalls(deltas, r.tool_calls)) {
      return absl::InternalError("OutputParser tool-call deltas do not add up to its calls");
    }
    if (r.reasoning != whole.reasoning || r.content != whole.content ||
        !SameCalls(r.tool_calls, whole.tool_calls)) {
      return absl::InternalError("OutputParser result depends on how the text was chunked");
    }
  }
  return absl::OkStatus();
}

}  // namespace qwen::chat

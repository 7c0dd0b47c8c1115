// `qwen parse [--tools tools.json] [--no-thinking] < output.txt`: generated text to reasoning,
// content and tool calls.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/chat/output_parser.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, tools, "",
          "JSON file with the request's tools (an array, or a request object with \"tools\"); "
          "types the arguments and rejects calls to other functions.");
ABSL_FLAG(bool, no_thinking, false,
          "The prompt did not open <think> (thinking off) (--no-thinking).");

namespace qwen::cli {

int RunParse(int argc, char** argv) {
  const std::vector<std::string> positional = ParseFlags(
      "parse",
      "qwen parse [--tools TOOLS.json] [--no-thinking] [OUTPUT.txt]\n\n"
      "Reads the model's generated text from OUTPUT.txt or standard input and prints\n"
      "{\"reasoning\": ..., \"content\": ..., \"tool_calls\": [{\"name\", \"arguments\"}]}.\n"
      "A malformed call has \"valid\": false, \"error\" and its \"raw\" text.",
      argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "usage: qwen parse [--tools TOOLS.json] [--no-thinking] [OUTPUT.txt]\n");
    return 2;
  }
  auto read_file = [](const std::string& path, std::string* out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::stringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    return true;
  };
  chat::OutputParserOptions options;
  options.reasoning_open = !absl::GetFlag(FLAGS_no_thinking);
  const std::string tools_path = absl::GetFlag(FLAGS_tools);
  if (!tools_path.empty()) {
    std::string text;
    if (!read_file(tools_path, &text)) {
      std::fprintf(stderr, "qwen parse: cannot read %s\n", tools_path.c_str());
      return 2;
    }
    auto tools = nlohmann::ordered_json::parse(text, nullptr, false);
    if (tools.is_object() && tools.contains("tools")) tools = tools["tools"];
    if (!tools.is_array()) {
      std::fprintf(stderr, "qwen parse: %s is not a JSON array of tools\n", tools_path.c_str());
      return 2;
    }
    options.tools = std::move(tools);
  }
  std::string output;
  if (positional.empty()) {
    output = ReadStdin();
  } else if (!read_file(positional[0], &output)) {
    std::fprintf(stderr, "qwen parse: cannot read %s\n", positional[0].c_str());
    return 2;
  }
  const chat::ParsedOutput parsed = chat::OutputParser::Parse(output, options);
  std::printf(
      "%s\n",
      parsed.ToJson().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

}  // namespace qwen::cli

// `qwen render --model M < request.json`: a conversation to the prompt text, with the model
// file's own chat template.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/chat/chat_template.h"
#include "inference/gguf/gguf_file.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, chat_template, "",
          "Render with this Jinja file instead of the model's tokenizer.chat_template.");

namespace qwen::cli {

int RunRender(int argc, char** argv) {
  const std::vector<std::string> positional = ParseFlags(
      "render",
      "qwen render (--model MODEL.gguf | --chat_template FILE.jinja) [--json] [REQUEST.json]\n\n"
      "Reads a request {\"messages\": [...], \"tools\": [...], \"enable_thinking\": bool,\n"
      "\"add_generation_prompt\": bool (default true), \"add_vision_id\": bool} from REQUEST.json\n"
      "or standard input and prints the prompt exactly (no newline added). --json prints\n"
      "{\"prompt\": ..., \"reasoning_open\": bool}. An invalid conversation exits with status 2\n"
      "and the template's own message on stderr.",
      argc, argv, {"model_flag", "json_flag"});
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string template_path = absl::GetFlag(FLAGS_chat_template);
  if ((model.empty() == template_path.empty()) || positional.size() > 1) {
    std::fprintf(stderr,
                 "usage: qwen render (--model MODEL.gguf | --chat_template FILE.jinja) "
                 "[--json] [REQUEST.json]\n");
    return 2;
  }
  std::unique_ptr<chat::ChatTemplate> tmpl;
  std::unique_ptr<gguf::GgufFile> file;
  if (!model.empty()) {
    auto resolved = ResolveModel(model);
    if (!resolved.ok()) {
      std::fprintf(stderr, "qwen render: %s\n", std::string(resolved.status().message()).c_str());
      return 2;
    }
    auto f = gguf::GgufFile::Open(resolved->model_path);
    if (!f.ok()) {
      std::fprintf(stderr, "qwen render: %s\n", std::string(f.status().message()).c_str());
      return 2;
    }
    file = std::move(f).value();
    auto t = chat::ChatTemplate::FromGguf(*file);
    if (!t.ok()) {
      std::fprintf(stderr, "qwen render: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    tmpl = std::move(t).value();
  } else {
    std::ifstream in(template_path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "qwen render: cannot read %s\n", template_path.c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto t = chat::ChatTemplate::FromSource(ss.str());
    if (!t.ok()) {
      std::fprintf(stderr, "qwen render: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    tmpl = std::move(t).value();
  }
  std::string request_text;
  if (positional.empty()) {
    request_text = ReadStdin();
  } else {
    std::ifstream in(positional[0], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "qwen render: cannot read %s\n", positional[0].c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    request_text = ss.str();
  }
  const auto request = nlohmann::ordered_json::parse(request_text, nullptr, false);
  if (request.is_discarded()) {
    std::fprintf(stderr, "qwen render: the request is not valid JSON\n");
    return 2;
  }
  auto prompt = tmpl->Render(request);
  if (!prompt.ok()) {
    std::fprintf(stderr, "%s\n", std::string(prompt.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json out;
    out["prompt"] = *prompt;
    out["reasoning_open"] = chat::PromptOpensReasoning(*prompt);
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fwrite(prompt->data(), 1, prompt->size(), stdout);
  }
  return 0;
}

}  // namespace qwen::cli

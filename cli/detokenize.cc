// `qwen detokenize --model M --tokens 1,2,3 [--show-special] [--json]`: token ids to text.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(bool, show_special, false,
          "Show control tokens such as <|im_end|> (hidden by default) (--show-special).");

namespace qwen::cli {

int RunDetokenize(int argc, char** argv) {
  const std::vector<std::string> positional = ParseFlags(
      "detokenize",
      "qwen detokenize --model MODEL.gguf --tokens 1,2,3 [--show-special] [--json]\n\n"
      "Prints the text of the ids (a newline is added; --json prints {\"text\": ...} instead).\n"
      "Bytes that do not form UTF-8 come out as U+FFFD.",
      argc, argv, {"model_flag", "json_flag", "tokens_flag"});
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty() || !positional.empty()) {
    std::fprintf(stderr,
                 "usage: qwen detokenize --model MODEL.gguf --tokens 1,2,3 "
                 "[--show-special] [--json]\n");
    return 2;
  }
  const std::string list =
      absl::GetFlag(FLAGS_tokens).empty() ? ReadStdin() : absl::GetFlag(FLAGS_tokens);
  std::vector<int32_t> ids;
  std::string number;
  bool bad = false;
  auto flush = [&]() -> bool {
    if (number.empty()) return true;
    char* end = nullptr;
    const long long v = std::strtoll(number.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > 0x7FFFFFFF) return false;
    ids.push_back(static_cast<int32_t>(v));
    number.clear();
    return true;
  };
  for (char c : list) {
    if ((c >= '0' && c <= '9') || c == '-') {
      number.push_back(c);
    } else if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '[' ||
               c == ']') {
      if (!flush()) break;
    } else {
      bad = true;
      break;
    }
  }
  if (bad || !flush()) {
    std::fprintf(stderr, "qwen detokenize: --tokens must be non-negative integers\n");
    return 2;
  }
  auto resolved = ResolveModel(model);
  if (!resolved.ok()) {
    std::fprintf(stderr, "qwen %s: %s\n", "detokenize",
                 std::string(resolved.status().message()).c_str());
    return 2;
  }
  auto file = gguf::GgufFile::Open(resolved->model_path);
  if (!file.ok()) {
    std::fprintf(stderr, "qwen detokenize: %s\n", std::string(file.status().message()).c_str());
    return 2;
  }
  auto tok = tokenizer::Tokenizer::FromGguf(**file);
  if (!tok.ok()) {
    std::fprintf(stderr, "qwen detokenize: %s\n", std::string(tok.status().message()).c_str());
    return 2;
  }
  for (int32_t id : ids) {
    if (id >= (*tok)->vocab_size()) {
      std::fprintf(stderr, "qwen detokenize: token %d is outside the vocabulary (%d tokens)\n", id,
                   (*tok)->vocab_size());
      return 2;
    }
  }
  const std::string text = (*tok)->Decode(ids, absl::GetFlag(FLAGS_show_special));
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", nlohmann::ordered_json({{"text", text}}).dump().c_str());
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}

}  // namespace qwen::cli

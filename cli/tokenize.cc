// `qwen tokenize --model M [--text TEXT] [--no-special] [--json]`: text to token ids.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, text, "", "Text to tokenize (default: all of standard input).");
ABSL_FLAG(bool, no_special, false,
          "Tokenize control tokens such as <|im_start|> as plain text (--no-special).");
ABSL_FLAG(std::string, pre_tokenizer, "",
          "Use this pre-tokenizer (qwen2, qwen35) instead of the file's tokenizer.ggml.pre.");

namespace qwen::cli {

int RunTokenize(int argc, char** argv) {
  const std::vector<std::string> positional = ParseFlags(
      "tokenize",
      "qwen tokenize --model MODEL.gguf [--text TEXT] [--no-special] [--json]\n\n"
      "Prints the token ids of TEXT (or of standard input), then one line per token with its id,\n"
      "its piece as spelled in the vocabulary and the text it stands for. --json prints\n"
      "{\"ids\": [...], \"tokens\": [{\"id\", \"piece\", \"text\"}]}.",
      argc, argv, {"model_flag", "json_flag"});
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty() || !positional.empty()) {
    std::fprintf(stderr,
                 "usage: qwen tokenize --model MODEL.gguf [--text TEXT] [--no-special] "
                 "[--json]\n");
    return 2;
  }
  auto resolved = ResolveModel(model);
  if (!resolved.ok()) {
    std::fprintf(stderr, "qwen %s: %s\n", "tokenize",
                 std::string(resolved.status().message()).c_str());
    return 2;
  }
  auto file = gguf::GgufFile::Open(resolved->model_path);
  if (!file.ok()) {
    std::fprintf(stderr, "qwen tokenize: %s\n", std::string(file.status().message()).c_str());
    return 2;
  }
  tokenizer::TokenizerOptions options;
  options.pre_tokenizer_override = absl::GetFlag(FLAGS_pre_tokenizer);
  auto tok = tokenizer::Tokenizer::FromGguf(**file, options);
  if (!tok.ok()) {
    std::fprintf(stderr, "qwen tokenize: %s\n", std::string(tok.status().message()).c_str());
    return 2;
  }
  const std::string text =
      absl::GetFlag(FLAGS_text).empty() ? ReadStdin() : absl::GetFlag(FLAGS_text);
  const std::vector<int32_t> ids = (*tok)->Encode(text, !absl::GetFlag(FLAGS_no_special));

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json out;
    out["ids"] = ids;
    out["tokens"] = nlohmann::ordered_json::array();
    for (int32_t id : ids) {
      const absl::string_view piece = (*tok)->TokenPiece(id);
      const absl::string_view bytes = (*tok)->TokenBytes(id);
      out["tokens"].push_back({{"id", id},
                               {"piece", std::string(piece.data(), piece.size())},
                               {"text", tokenizer::ToValidUtf8(bytes)}});
    }
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::string line;
  for (size_t k = 0; k < ids.size(); ++k) absl::StrAppend(&line, k ? "," : "", ids[k]);
  std::printf("%s\n", line.c_str());
  for (int32_t id : ids) {
    const absl::string_view piece = (*tok)->TokenPiece(id);
    const absl::string_view bytes = (*tok)->TokenBytes(id);
    std::printf("%8d  %-24s %s\n", id,
                nlohmann::json(std::string(piece.data(), piece.size()))
                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                    .c_str(),
                nlohmann::json(std::string(bytes.data(), bytes.size()))
                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                    .c_str());
  }
  return 0;
}

}  // namespace qwen::cli

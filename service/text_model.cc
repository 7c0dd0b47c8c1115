#include "service/text_model.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::service {

absl::StatusOr<std::unique_ptr<TextModel>> TextModel::Load(const std::string& path) {
  std::unique_ptr<TextModel> m(new TextModel());
  m->path_ = path;
  auto file = gguf::GgufFile::Open(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  }
  m->file_ = std::move(*file);
  ASSIGN_OR_RETURN(m->config_, model::ModelConfig::FromGguf(*m->file_));
  ASSIGN_OR_RETURN(m->tokenizer_, tokenizer::Tokenizer::FromGguf(*m->file_));
  if (m->file_->Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(m->chat_template_, chat::ChatTemplate::FromGguf(*m->file_));
    const std::string& src = m->chat_template_->source();
    m->supports_tools_ = absl::StrContains(src, "tools");
    m->supports_reasoning_ = absl::StrContains(src, "<think>");
  }
  m->eog_ids_ = m->tokenizer_->end_of_generation_ids();
  return m;
}

}  // namespace qwen::service

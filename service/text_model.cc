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
  // Ollama's files list further end tokens; `qwen generate` honours them too.
  if (auto more = m->file_->GetIntArray("tokenizer.ggml.eos_token_ids"); more.ok()) {
    for (int64_t v : *more) {
      const int32_t id = static_cast<int32_t>(v);
      if (id >= 0 && id < m->tokenizer_->vocab_size() &&
          std::find(m->eog_ids_.begin(), m->eog_ids_.end(), id) == m->eog_ids_.end()) {
        m->eog_ids_.push_back(id);
      }
    }
  }
  return m;
}

}  // namespace qwen::service

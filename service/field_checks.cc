#include "service/field_checks.h"

#include "inference/tokenizer/utf8.h"

namespace qwen::service {

absl::Status CheckText(absl::string_view text, absl::string_view field) {
  if (!tokenizer::IsValidUtf8(text)) return FieldError(field, "is not valid UTF-8");
  if (text.find('\0') != absl::string_view::npos) return FieldError(field, "contains a NUL byte");
  return absl::OkStatus();
}

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           absl::string_view field, int32_t vocab) {
  for (int k = 0; k < ids.size(); ++k) {
    if (ids[k] < 0 || ids[k] >= vocab) {
      return FieldError(
          absl::StrCat(field, "[", k, "]"),
          absl::StrCat("token id ", ids[k], " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace qwen::service

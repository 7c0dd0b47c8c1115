// Checks of single request fields shared by the request validators (chat_request, request,
// request_images) and any front end: the error names the field's path.
#ifndef QWEN_SERVICE_FIELD_CHECKS_H_
#define QWEN_SERVICE_FIELD_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"

namespace qwen::service {

// INVALID_ARGUMENT "<field>: <why>", the form of every request error.
inline absl::Status FieldError(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// INVALID_ARGUMENT "<field>: is not valid UTF-8" / "<field>: contains a NUL byte".
absl::Status CheckText(absl::string_view text, absl::string_view field);

// INVALID_ARGUMENT "<field>[k]: token id N is outside the vocabulary [0, vocab)".
absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           absl::string_view field, int32_t vocab);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_FIELD_CHECKS_H_

#include "service/data_url.h"

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/field_checks.h"

namespace qwen::service {
absl::StatusOr<DataUrl> ParseDataUrl(absl::string_view url, absl::string_view field,
                                     absl::string_view example) {
  if (!absl::StartsWithIgnoreCase(url, "data:")) {
    return FieldError(field, absl::StrCat("only data: URLs are accepted (the server does not fetch "
                                          "URLs); send the bytes in data or as ",
                                          example));
  }
  const size_t comma = url.find(',');
  if (comma == absl::string_view::npos) return FieldError(field, "has no comma");
  absl::string_view meta = url.substr(5, comma - 5);
  if (!absl::EndsWithIgnoreCase(meta, ";base64")) {
    return FieldError(field, "must be base64 (data:<type>;base64,...)");
  }
  meta.remove_suffix(7);
  DataUrl out;
  out.mime_type = std::string(meta);
  if (!absl::Base64Unescape(url.substr(comma + 1), &out.bytes)) {
    return FieldError(field, "is not valid base64");
  }
  return out;
}

absl::StatusOr<DataUrl> MediaBytes(const std::string& data, const std::string& url,
                                   const std::string& mime_type, absl::string_view field,
                                   absl::string_view example) {
  const bool has_data = !data.empty(), has_url = !url.empty();
  if (has_data == has_url) return FieldError(field, "set exactly one of data and url");
  if (has_data) return DataUrl{mime_type, data};
  absl::StatusOr<DataUrl> parsed = ParseDataUrl(url, absl::StrCat(field, ".url"), example);
  if (!parsed.ok()) return parsed.status();
  if (parsed->mime_type.empty()) {
    parsed->mime_type = mime_type;
  } else if (!mime_type.empty() && !absl::EqualsIgnoreCase(mime_type, parsed->mime_type)) {
    return FieldError(
        absl::StrCat(field, ".mime_type"),
        absl::StrCat("\"", mime_type, "\" differs from the URL's \"", parsed->mime_type, "\""));
  }
  return parsed;
}

}  // namespace qwen::service

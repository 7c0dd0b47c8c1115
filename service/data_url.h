// data: URLs (RFC 2397, base64 only), the one form in which media may come as a URL: the server
// never fetches one. Images and videos of the gRPC API use this, and so will the HTTP API's
// image_url / video_url parts.
#ifndef QWEN_SERVICE_DATA_URL_H_
#define QWEN_SERVICE_DATA_URL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwen::service {

struct DataUrl {
  std::string mime_type;  // as written ("video/mp4"), empty when the URL gives none
  std::string bytes;      // decoded
};

// Parses "data:<type>;base64,<data>". INVALID_ARGUMENT naming `field` ("....url: only data: URLs
// are accepted ...") for any other scheme, a URL without a comma, a non-base64 URL or bad
// base64. `example` completes the message for other schemes ("data:image/png;base64,...").
absl::StatusOr<DataUrl> ParseDataUrl(absl::string_view url, absl::string_view field,
                                     absl::string_view example);

// The bytes of a medium given by value (`data`) or as a data: URL (`url`), exactly one of them,
// and its MIME type: `mime_type` when given, which must then agree with the URL's. Errors name
// `field` ("<field>: set exactly one of data and url", "<field>.mime_type: ...").
absl::StatusOr<DataUrl> MediaBytes(const std::string& data, const std::string& url,
                                   const std::string& mime_type, absl::string_view field,
                                   absl::string_view example);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_DATA_URL_H_

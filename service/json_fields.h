// Typed members of JSON request bodies (the HTTP API's OpenAI and Anthropic bodies), with
// errors that name the member: "<param>: must be a number, not string". Thread-safe functions.
#ifndef QWEN_SERVICE_JSON_FIELDS_H_
#define QWEN_SERVICE_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qwen::service {

// A body that is JSON, an object, nested at most 64 deep. INVALID_ARGUMENT naming the byte of a
// syntax error ("the body is not valid JSON: error at byte 17: ...").
absl::StatusOr<nlohmann::json> ParseJsonBody(absl::string_view body);

// INVALID_ARGUMENT "<param>: must be <want>, not <type of got>".
absl::Status WrongType(const std::string& param, const char* want, const nlohmann::json& got);

// Optional members: absent or null leaves `out` alone. A number that is an integer in value
// (3.0) counts as an integer; non-finite numbers are refused.
absl::Status GetString(const nlohmann::json& obj, const char* key, const std::string& param,
                       std::string* out, bool* present = nullptr);
absl::Status GetBool(const nlohmann::json& obj, const char* key, const std::string& param,
                     std::optional<bool>* out);
absl::Status GetNumber(const nlohmann::json& obj, const char* key, const std::string& param,
                       std::optional<double>* out);
absl::Status GetInteger(const nlohmann::json& obj, const char* key, const std::string& param,
                        std::optional<int64_t>* out);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_JSON_FIELDS_H_

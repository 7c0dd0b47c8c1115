#include "service/json_fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "service/field_checks.h"

namespace qwen::service {

using Json = nlohmann::json;

// Deeper bodies are refused before anything walks them recursively.
constexpr int kMaxNesting = 64;

absl::Status WrongType(const std::string& param, const char* want, const Json& got) {
  return FieldError(param, absl::StrCat("must be ", want, ", not ", got.type_name()));
}

absl::Status GetString(const Json& obj, const char* key, const std::string& param, std::string* out,
                       bool* present) {
  auto it = obj.find(key);
  if (present != nullptr) *present = false;
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return WrongType(param, "a string", *it);
  *out = it->get<std::string>();
  if (present != nullptr) *present = true;
  return absl::OkStatus();
}

absl::Status GetBool(const Json& obj, const char* key, const std::string& param,
                     std::optional<bool>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return WrongType(param, "a boolean", *it);
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetNumber(const Json& obj, const char* key, const std::string& param,
                       std::optional<double>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return WrongType(param, "a number", *it);
  const double v = it->get<double>();
  if (!std::isfinite(v)) return FieldError(param, "must be a finite number");
  *out = v;
  return absl::OkStatus();
}

absl::Status GetInteger(const Json& obj, const char* key, const std::string& param,
                        std::optional<int64_t>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(param, "is too large");
    }
    *out = it->get<int64_t>();
    return absl::OkStatus();
  }
  // 3.0 is an integer too (JavaScript clients have no other kind of number).
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
      *out = static_cast<int64_t>(v);
      return absl::OkStatus();
    }
  }
  return WrongType(param, "an integer", *it);
}

absl::StatusOr<Json> ParseJsonBody(absl::string_view body) {
  Json j;
  int depth = 0;
  try {
    j = Json::parse(body.begin(), body.end(), [&depth](int d, Json::parse_event_t, Json&) {
      depth = std::max(depth, d);
      return true;
    });
  } catch (const Json::parse_error& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..."
    if (const size_t colon = what.find(": "); colon != std::string::npos) {
      what = what.substr(colon + 2);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the body is not valid JSON: error at byte ", e.byte, ": ", what));
  } catch (const Json::out_of_range& e) {
    // A number beyond a double's range ("1e999"): thrown as out_of_range 406, "number
    // overflow parsing '1e999'", which carries no position; the number's first occurrence
    // gives it.
    std::string what = e.what();
    if (const size_t close = what.find("] "); close != std::string::npos) {
      what = what.substr(close + 2);
    }
    std::string where;
    if (const size_t q = what.find('\''); q != std::string::npos) {
      const size_t end = what.find('\'', q + 1);
      const std::string number = what.substr(q + 1, end == std::string::npos ? end : end - q - 1);
      if (const size_t at = body.find(number); !number.empty() && at != absl::string_view::npos) {
        where = absl::StrCat(" at byte ", at + 1);
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the body is not valid JSON: error", where, ": ", what));
  }
  if (depth > kMaxNesting) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body is nested deeper than ", kMaxNesting, " levels"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, not ", j.type_name()));
  }
  return j;
}

}  // namespace qwen::service

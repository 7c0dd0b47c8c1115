#include "service/tool_schema.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "service/field_checks.h"

namespace qwen::service {
namespace {

using Json = nlohmann::ordered_json;

bool IsTypeName(const Json& t) {
  static const char* const kTypes[] = {"object",  "array",   "string", "number",
                                       "integer", "boolean", "null"};
  if (!t.is_string()) return false;
  const std::string& s = t.get_ref<const std::string&>();
  return std::any_of(std::begin(kTypes), std::end(kTypes), [&](const char* k) { return s == k; });
}

absl::Status ValidateSchemaAt(const Json& schema, const std::string& path, int depth) {
  if (depth > kMaxSchemaDepth) {
    return FieldError(path, absl::StrCat("nests deeper than ", kMaxSchemaDepth, " levels"));
  }
  if (schema.is_boolean()) return absl::OkStatus();  // true / false schemas
  if (!schema.is_object()) return FieldError(path, "a JSON schema must be an object");
  auto sub = [&](const char* key) { return absl::StrCat(path, ".", key); };
  for (const auto& [key, value] : schema.items()) {
    if (key == "type") {
      if (value.is_array()) {
        if (value.empty()) return FieldError(sub("type"), "is an empty array");
        for (const Json& t : value) {
          if (!IsTypeName(t)) return FieldError(sub("type"), "names an unknown type");
        }
      } else if (!IsTypeName(value)) {
        return FieldError(sub("type"),
                          "must be one of object, array, string, number, integer, boolean, null");
      }
    } else if (key == "properties" || key == "$defs" || key == "definitions" ||
               key == "patternProperties") {
      if (!value.is_object()) return FieldError(sub(key.c_str()), "must be an object");
      for (const auto& [name, s] : value.items()) {
        RETURN_IF_ERROR(ValidateSchemaAt(s, absl::StrCat(path, ".", key, ".", name), depth + 1));
      }
    } else if (key == "items" || key == "additionalProperties" || key == "not" ||
               key == "contains" || key == "propertyNames") {
      if (value.is_array() && key == "items") {
        for (size_t k = 0; k < value.size(); ++k) {
          RETURN_IF_ERROR(
              ValidateSchemaAt(value[k], absl::StrCat(path, ".items[", k, "]"), depth + 1));
        }
      } else {
        RETURN_IF_ERROR(ValidateSchemaAt(value, sub(key.c_str()), depth + 1));
      }
    } else if (key == "anyOf" || key == "oneOf" || key == "allOf" || key == "prefixItems") {
      if (!value.is_array() || value.empty()) {
        return FieldError(sub(key.c_str()), "must be a non-empty array of schemas");
      }
      for (size_t k = 0; k < value.size(); ++k) {
        RETURN_IF_ERROR(
            ValidateSchemaAt(value[k], absl::StrCat(path, ".", key, "[", k, "]"), depth + 1));
      }
    } else if (key == "required") {
      if (!value.is_array()) return FieldError(sub("required"), "must be an array of strings");
      for (const Json& r : value) {
        if (!r.is_string()) return FieldError(sub("required"), "must be an array of strings");
      }
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) {
        return FieldError(sub("enum"), "must be a non-empty array");
      }
    } else if (key == "description" || key == "title" || key == "pattern" || key == "format") {
      if (!value.is_string()) return FieldError(sub(key.c_str()), "must be a string");
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsToolName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

absl::Status ValidateToolSchema(const Json& schema, const std::string& field) {
  if (!schema.is_object()) return FieldError(field, "must be a JSON object (a JSON schema)");
  if (schema.contains("type") && schema["type"] != "object") {
    return FieldError(absl::StrCat(field, ".type"),
                      "the parameters of a tool must be an object schema (\"type\": \"object\")");
  }
  return ValidateSchemaAt(schema, field, 0);
}

}  // namespace qwen::service

// Tools of a chat request: their names and parameter schemas.
#ifndef QWEN_SERVICE_TOOL_SCHEMA_H_
#define QWEN_SERVICE_TOOL_SCHEMA_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qwen::service {

// Largest nesting of a tool's JSON schema (objects and arrays inside one another).
inline constexpr int kMaxSchemaDepth = 32;

// 1 to 64 characters of [A-Za-z0-9_.-].
bool IsToolName(absl::string_view name);

// Checks that `schema` is a plausible JSON schema for a tool's parameters: an object whose
// "type" (if any) is "object"; nested schemas under properties, items, additionalProperties,
// anyOf/oneOf/allOf and $defs are objects (or booleans) with known type names; "required" is an
// array of strings, "enum" a non-empty array; nesting at most kMaxSchemaDepth. INVALID_ARGUMENT
// naming the path ("chat.tools[0].parameters.properties.city.type: ...").
absl::Status ValidateToolSchema(const nlohmann::ordered_json& schema, const std::string& field);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_TOOL_SCHEMA_H_

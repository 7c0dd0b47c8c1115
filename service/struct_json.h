// google.protobuf.Struct / Value as JSON, for tool parameters and JSON schemas that arrive as
// protobuf structs.
#ifndef QWEN_SERVICE_STRUCT_JSON_H_
#define QWEN_SERVICE_STRUCT_JSON_H_

#include "google/protobuf/struct.pb.h"
#include "nlohmann/json.hpp"

namespace qwen::service {

// A Struct as a JSON object. Numbers that are whole and fit an int64 become JSON integers (a
// schema's "minimum": 1 stays 1, not 1.0). Object keys come out sorted, with the JSON-schema
// keys that conventionally lead ("type", "description", ...) first.
nlohmann::ordered_json StructToJson(const google::protobuf::Struct& s);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_STRUCT_JSON_H_

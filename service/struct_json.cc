#include "service/struct_json.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>
#include <vector>

namespace qwen::service {
namespace {

using Json = nlohmann::ordered_json;

// Keys that lead in how JSON schemas are conventionally written; the rest follow sorted.
int KeyRank(const std::string& key) {
  static const char* const kLeading[] = {"type",  "title", "description", "properties",
                                         "items", "enum",  "required"};
  for (size_t k = 0; k < std::size(kLeading); ++k) {
    if (key == kLeading[k]) return static_cast<int>(k);
  }
  return static_cast<int>(std::size(kLeading));
}

Json ValueToJson(const google::protobuf::Value& v);

Json StructFields(const google::protobuf::Struct& s) {
  std::vector<const std::string*> keys;
  for (const auto& [k, unused] : s.fields()) keys.push_back(&k);
  std::sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) {
    const int ra = KeyRank(*a), rb = KeyRank(*b);
    return ra != rb ? ra < rb : *a < *b;
  });
  Json out = Json::object();
  for (const std::string* k : keys) out[*k] = ValueToJson(s.fields().at(*k));
  return out;
}

Json ValueToJson(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return nullptr;
    case google::protobuf::Value::kNumberValue: {
      const double d = v.number_value();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        return static_cast<int64_t>(d);
      }
      return d;
    }
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kBoolValue:
      return v.bool_value();
    case google::protobuf::Value::kStructValue:
      return StructFields(v.struct_value());
    case google::protobuf::Value::kListValue: {
      Json arr = Json::array();
      for (const auto& e : v.list_value().values()) arr.push_back(ValueToJson(e));
      return arr;
    }
    default:
      return nullptr;
  }
}

}  // namespace

Json StructToJson(const google::protobuf::Struct& s) { return StructFields(s); }

}  // namespace qwen::service

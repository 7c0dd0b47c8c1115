// The JSON schema both structured-output benchmarks use (`qwen bench --only structured` on the
// full model, tests/grammar/grammar_bench.cc without it), so that they measure the same thing.
#ifndef QWEN_CLI_BENCH_SCHEMA_H_
#define QWEN_CLI_BENCH_SCHEMA_H_

namespace qwen::grammar {

// A moderately complex schema: nested objects, an array of objects, enums, bounded numbers,
// a pattern, a format, anyOf with null and a $ref.
inline constexpr char kBenchSchema[] = R"({
  "$defs": {"item": {"type": "object", "properties": {
      "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
      "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
      "price": {"type": "number", "minimum": 0, "maximum": 10000},
      "gift": {"type": "boolean"}},
    "required": ["sku", "quantity", "price"]}},
  "type": "object",
  "properties": {
    "order_id": {"type": "string", "maxLength": 12},
    "customer": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 24},
        "email": {"type": "string", "format": "email"},
        "tier": {"enum": ["free", "pro", "enterprise"]}},
      "required": ["name", "tier"]},
    "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 4},
    "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
    "created": {"type": "string", "format": "date"},
    "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 32}]}},
  "required": ["order_id", "customer", "items", "status"]
})";

}  // namespace qwen::grammar

#endif  // QWEN_CLI_BENCH_SCHEMA_H_

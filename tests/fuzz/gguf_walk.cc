#include "tests/fuzz/gguf_walk.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/chat/chat_template.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/config.h"
#include "inference/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"

namespace qwen::fuzz {
namespace {

using gguf::GgufFile;
using gguf::Value;
using gguf::ValueType;

// Sums bytes so that every view is actually read (ASan sees an out-of-bounds view).
volatile uint64_t sink;

void Touch(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t s = 0;
  for (size_t k = 0; k < n; ++k) s += b[k];
  sink = sink + s;
}

bool Inside(const GgufFile& f, const void* p, uint64_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return b >= f.base() && b <= f.base() + f.file_size() &&
         n <= static_cast<uint64_t>(f.base() + f.file_size() - b);
}

bool IsIntegerType(ValueType t) {
  return t != ValueType::kF32 && t != ValueType::kF64 && t != ValueType::kString &&
         t != ValueType::kArray;
}

void WalkValue(const GgufFile& f, const std::string& key, const Value& v, int depth) {
  if (depth > 8) Fail(absl::StrCat(key, ": arrays nested deeper than the reader allows"));
  (void)gguf::ValueTypeName(v.type);
  if (v.type == ValueType::kString) {
    if (!v.str.empty() && !Inside(f, v.str.data(), v.str.size())) {
      Fail(absl::StrCat(key, ": string view outside the buffer"));
    }
    Touch(v.str.data(), v.str.size());
    return;
  }
  if (v.type != ValueType::kArray) return;
  (void)gguf::ValueTypeName(v.elem_type);
  if (v.elem_type == ValueType::kString) {
    if (v.strings.size() != v.count) Fail(absl::StrCat(key, ": string count mismatch"));
    for (absl::string_view s : v.strings) {
      if (!s.empty() && !Inside(f, s.data(), s.size())) {
        Fail(absl::StrCat(key, ": string element outside the buffer"));
      }
      Touch(s.data(), s.size());
    }
  } else if (v.elem_type == ValueType::kArray) {
    if (v.arrays.size() != v.count) Fail(absl::StrCat(key, ": nested array count mismatch"));
    for (const Value& e : v.arrays) WalkValue(f, key, e, depth + 1);
  } else {
    if (v.count > 0 && v.raw == nullptr) Fail(absl::StrCat(key, ": numeric array without data"));
    for (uint64_t k = 0; k < v.count; ++k) {
      // IntAt is documented for integer element types; FloatAt for every numeric one.
      if (IsIntegerType(v.elem_type)) sink = sink + static_cast<uint64_t>(v.IntAt(k));
      const double x = v.FloatAt(k);
      Touch(&x, sizeof(x));
    }
  }
}

void WalkMetadata(const GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) {
    const std::string k(key);
    if (f.Find(key) != &value) Fail(absl::StrCat("Find(\"", k, "\") does not return its entry"));
    WalkValue(f, k, value, 0);
    // Every typed getter on every key: each either succeeds or reports an error.
    (void)f.GetU32(key);
    (void)f.GetU64(key);
    (void)f.GetI64(key);
    (void)f.GetF32(key);
    (void)f.GetBool(key);
    if (auto s = f.GetString(key); s.ok()) Touch(s->data(), s->size());
    if (auto a = f.GetStringArray(key); a.ok()) {
      for (absl::string_view s : *a) Touch(s.data(), s.size());
    }
    if (auto a = f.GetIntArray(key); a.ok() && a->size() != value.count) {
      Fail(absl::StrCat(k, ": GetIntArray size differs from the count"));
    }
    if (auto a = f.GetF32Array(key); a.ok() && a->size() != value.count) {
      Fail(absl::StrCat(k, ": GetF32Array size differs from the count"));
    }
    (void)f.GetU32Or(key, 7);
    (void)f.GetF32Or(key, 0.5f);
    (void)f.GetBoolOr(key, true);
  }
  (void)f.GetU32Or("no.such.key", 1);
}

void WalkTensors(const GgufFile& f) {
  if (f.alignment() == 0 || (f.alignment() & (f.alignment() - 1)) != 0) {
    Fail(absl::StrCat("alignment ", f.alignment(), " is not a power of two"));
  }
  if (!f.tensors().empty() && f.data_offset() % f.alignment() != 0) {
    Fail("data section is not aligned");
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string name(t.name);
    if (f.FindTensor(t.name) != &t) Fail(absl::StrCat("FindTensor(\"", name, "\") mismatch"));
    if (t.n_dims < 1 || t.n_dims > 4) Fail(absl::StrCat(name, ": n_dims ", t.n_dims));
    int64_t n = 1;
    for (int d = 0; d < 4; ++d) {
      if (t.ne[d] < 1) Fail(absl::StrCat(name, ": ne[", d, "] = ", t.ne[d]));
      n *= t.ne[d];  // UBSan reports an overflow the reader should have refused
    }
    if (n != t.n_elements) Fail(absl::StrCat(name, ": n_elements differs from the shape"));
    (void)t.rows();
    (void)t.ShapeString();
    if (t.file_offset != f.data_offset() + t.offset) Fail(absl::StrCat(name, ": file_offset"));
    if (t.data != f.base() + t.file_offset) Fail(absl::StrCat(name, ": data pointer"));
    if (!Inside(f, t.data, t.n_bytes)) Fail(absl::StrCat(name, ": tensor bytes outside the file"));
    if (t.n_bytes > 0) {
      Touch(t.data, 1);
      Touch(t.data + t.n_bytes - 1, 1);
    }
  }
}

// The readers that take a GgufFile apart further. Their errors are fine; crashes are not.
void WalkConsumers(const GgufFile& f) {
  (void)model::ModelConfig::FromGguf(f);

  if (auto tok = tokenizer::Tokenizer::FromGguf(f); tok.ok()) {
    const tokenizer::Tokenizer& t = **tok;
    const std::vector<int32_t> ids =
        t.Encode("Hello <|im_start|>wörld 123 \xF0\x9F\xA6\x99\n<think>", /*parse_special=*/true);
    for (int32_t id : ids) {
      if (id < 0 || id >= t.vocab_size()) Fail(absl::StrCat("Encode produced id ", id));
    }
    (void)t.Decode(ids, /*show_control=*/true);
    for (int32_t id : {-1, 0, t.vocab_size() - 1, t.vocab_size(), t.eos_id(), t.bos_id()}) {
      (void)t.TokenBytes(id);
      (void)t.TokenPiece(id);
      (void)t.Type(id);
      (void)t.IsEndOfGeneration(id);
    }
  }

  chat::ChatTemplateOptions options;
  options.limits.max_output_bytes = 1 << 16;
  options.limits.max_loop_iterations = 10000;
  if (auto tmpl = chat::ChatTemplate::FromGguf(f, options); tmpl.ok()) {
    static const auto* request = new nlohmann::ordered_json(nlohmann::ordered_json::parse(
        R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"Hi"}]})"));
    auto r = (*tmpl)->Render(*request);
    if (!r.ok() && r.status().code() == absl::StatusCode::kInternal) Fail(r.status().ToString());
  }
}

}  // namespace

void WalkGguf(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::FromBuffer(data, size);
  if (!file.ok()) {
    // Errors name a byte offset (or a key); they must never be INTERNAL.
    if (file.status().code() == absl::StatusCode::kInternal) Fail(file.status().ToString());
    return;
  }
  const GgufFile& f = **file;
  if (f.version() != 2 && f.version() != 3) Fail(absl::StrCat("version ", f.version()));
  WalkMetadata(f);
  WalkTensors(f);
  WalkConsumers(f);
}

}  // namespace qwen::fuzz

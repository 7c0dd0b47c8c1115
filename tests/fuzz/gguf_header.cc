#include "tests/fuzz/gguf_header.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/gguf/gguf_file.h"
#include "inference/quant/types.h"

namespace qwen::fuzz {
namespace {

using gguf::ValueType;

class Cursor {
 public:
  explicit Cursor(const std::string& b) : b_(b) {}
  size_t pos = 0;
  absl::StatusOr<uint64_t> Int(int n) {
    if (b_.size() - pos < static_cast<size_t>(n)) return absl::OutOfRangeError("truncated");
    uint64_t v = 0;
    std::memcpy(&v, b_.data() + pos, n);  // little-endian host
    pos += n;
    return v;
  }
  absl::StatusOr<std::string> String() {
    ASSIGN_OR_RETURN(uint64_t n, Int(8));
    if (b_.size() - pos < n) return absl::OutOfRangeError("truncated string");
    std::string s = b_.substr(pos, n);
    pos += n;
    return s;
  }
  // Skips one value of `type`.
  absl::Status Value(uint32_t type) {
    if (const int n = static_cast<int>(gguf::ScalarSize(static_cast<ValueType>(type))); n > 0) {
      return Int(n).status();
    }
    if (type == static_cast<uint32_t>(ValueType::kString)) return String().status();
    if (type != static_cast<uint32_t>(ValueType::kArray)) return absl::InvalidArgumentError("type");
    ASSIGN_OR_RETURN(uint64_t elem, Int(4));
    ASSIGN_OR_RETURN(uint64_t count, Int(8));
    for (uint64_t k = 0; k < count; ++k) RETURN_IF_ERROR(Value(static_cast<uint32_t>(elem)));
    return absl::OkStatus();
  }

 private:
  const std::string& b_;
};

template <typename T>
std::string Bytes(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

std::string ArrayOf(ValueType elem, uint64_t count, const std::string& elements) {
  return U32(static_cast<uint32_t>(elem)) + U64(count) + elements;
}

}  // namespace

std::string U32(uint32_t v) { return Bytes(v); }
std::string U64(uint64_t v) { return Bytes(v); }
std::string Str(const std::string& s) { return U64(s.size()) + s; }

std::string RawGguf::Serialize() const {
  std::string out = "GGUF";
  out += U32(version);
  out += U64(n_tensors_written.value_or(tensors.size()));
  out += U64(n_kv_written.value_or(kv.size()));
  for (const RawKv& e : kv) out += Str(e.key) + U32(e.type) + e.value;
  for (const RawTensor& t : tensors) {
    out += Str(t.name) + U32(t.n_dims);
    for (uint32_t d = 0; d < t.n_dims && d < 16; ++d) out += U64(d < 4 ? t.ne[d] : 1);
    out += U32(t.type) + U64(t.offset);
  }
  if (pad_to > 1 && pad_to <= (1u << 16)) out.resize((out.size() + pad_to - 1) / pad_to * pad_to);
  return out + data;
}

absl::StatusOr<RawGguf> SplitGguf(const std::string& bytes) {
  ASSIGN_OR_RETURN(
      std::unique_ptr<gguf::GgufFile> file,
      gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  RawGguf g;
  g.version = file->version();
  g.pad_to = file->alignment();
  Cursor c(bytes);
  c.pos = 24;
  for (size_t k = 0; k < file->metadata().size(); ++k) {
    RawKv e;
    ASSIGN_OR_RETURN(e.key, c.String());
    ASSIGN_OR_RETURN(uint64_t type, c.Int(4));
    e.type = static_cast<uint32_t>(type);
    const size_t start = c.pos;
    RETURN_IF_ERROR(c.Value(e.type));
    e.value = bytes.substr(start, c.pos - start);
    g.kv.push_back(std::move(e));
  }
  for (const gguf::TensorInfo& info : file->tensors()) {
    RawTensor t;
    t.name = std::string(info.name);
    t.n_dims = static_cast<uint32_t>(info.n_dims);
    for (int d = 0; d < 4; ++d) t.ne[d] = static_cast<uint64_t>(info.ne[d]);
    t.type = static_cast<uint32_t>(info.type);
    t.offset = info.offset;
    g.tensors.push_back(std::move(t));
  }
  g.data = bytes.substr(std::min<size_t>(file->data_offset(), bytes.size()));
  return g;
}

void ShrinkTensors(RawGguf& g) {
  g.data.clear();
  uint64_t offset = 0;
  for (RawTensor& t : g.tensors) {
    const auto traits = quant::GetTypeTraits(t.type);
    const uint64_t block = traits ? traits->block_size : 1;
    const uint64_t bytes = traits ? traits->type_size : 4;
    t.ne = {block, 1, 1, 1};
    t.offset = offset;
    offset = (offset + bytes + g.pad_to - 1) / g.pad_to * g.pad_to;
  }
  g.data.resize(offset);
  for (size_t k = 0; k < g.data.size(); ++k) g.data[k] = static_cast<char>(k * 37 % 251);
}

RawGguf SyntheticGguf() {
  RawGguf g;
  auto add = [&](const std::string& key, ValueType type, std::string value) {
    g.kv.push_back({key, static_cast<uint32_t>(type), std::move(value)});
  };
  add("general.architecture", ValueType::kString, Str("qwen35"));
  add("general.alignment", ValueType::kU32, U32(64));
  g.pad_to = 64;
  add("t.u8", ValueType::kU8, Bytes<uint8_t>(200));
  add("t.i8", ValueType::kI8, Bytes<int8_t>(-5));
  add("t.u16", ValueType::kU16, Bytes<uint16_t>(60000));
  add("t.i16", ValueType::kI16, Bytes<int16_t>(-300));
  add("t.u32", ValueType::kU32, U32(4000000000u));
  add("t.i32", ValueType::kI32, Bytes<int32_t>(-70000));
  add("t.f32", ValueType::kF32, Bytes<float>(1.5f));
  add("t.bool", ValueType::kBool, Bytes<uint8_t>(1));
  add("t.u64", ValueType::kU64, U64(~0ull));
  add("t.i64", ValueType::kI64, Bytes<int64_t>(-1));
  add("t.f64", ValueType::kF64, Bytes<double>(-2.25));
  add("t.string", ValueType::kString, Str("h\xC3\xA9llo"));
  add("t.arr_i32", ValueType::kArray,
      ArrayOf(ValueType::kI32, 3, Bytes<int32_t>(1) + Bytes<int32_t>(-2) + Bytes<int32_t>(3)));
  add("t.arr_f32", ValueType::kArray, ArrayOf(ValueType::kF32, 2, Bytes(0.5f) + Bytes(1e30f)));
  add("t.arr_f64", ValueType::kArray, ArrayOf(ValueType::kF64, 1, Bytes(1e300)));
  add("t.arr_bool", ValueType::kArray, ArrayOf(ValueType::kBool, 2, std::string("\x01\x00", 2)));
  add("t.arr_u64", ValueType::kArray, ArrayOf(ValueType::kU64, 1, U64(~0ull)));
  add("t.arr_str", ValueType::kArray, ArrayOf(ValueType::kString, 2, Str("a") + Str("")));
  add("t.arr_arr", ValueType::kArray,
      ArrayOf(ValueType::kArray, 2,
              ArrayOf(ValueType::kU8, 2, "\x01\x02") +
                  ArrayOf(ValueType::kArray, 1, ArrayOf(ValueType::kString, 1, Str("x")))));
  add("t.arr_empty", ValueType::kArray, ArrayOf(ValueType::kI64, 0, ""));
  add("tokenizer.ggml.model", ValueType::kString, Str("gpt2"));
  add("tokenizer.ggml.tokens", ValueType::kArray,
      ArrayOf(ValueType::kString, 5,
              Str("a") + Str("b") + Str("ab") + Str("<|im_end|>") + Str("Ġ")));
  add("tokenizer.ggml.token_type", ValueType::kArray,
      ArrayOf(ValueType::kI32, 5, U32(1) + U32(1) + U32(1) + U32(3) + U32(1)));
  add("tokenizer.ggml.merges", ValueType::kArray, ArrayOf(ValueType::kString, 1, Str("a b")));
  add("tokenizer.ggml.eos_token_id", ValueType::kU32, U32(3));
  add("tokenizer.chat_template", ValueType::kString,
      Str("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"));
  const std::pair<const char*, quant::GgmlType> tensors[] = {
      {"token_embd.weight", quant::GgmlType::kQ4_K},
      {"output_norm.weight", quant::GgmlType::kF32},
      {"blk.0.attn_q.weight", quant::GgmlType::kQ8_0},
      {"blk.0.ffn_up.weight", quant::GgmlType::kQ3_K},
      {"blk.0.ffn_down.weight", quant::GgmlType::kF16}};
  uint32_t k = 0;
  for (const auto& [name, type] : tensors) {
    RawTensor t;
    t.name = name;
    t.type = static_cast<uint32_t>(type);
    t.n_dims = k++ % 4 + 1;
    g.tensors.push_back(t);
  }
  ShrinkTensors(g);
  return g;
}

}  // namespace qwen::fuzz

#include "inference/gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/common/status_macros.h"

namespace qwen::gguf {
namespace {

constexpr int kMaxArrayDepth = 4;
constexpr int kMaxDims = 4;

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads the header front to back. Every read is bounds-checked, and every error names the byte
// offset where the problem is.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  uint64_t offset() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Error(absl::string_view what) const { return ErrorAt(pos_, what); }
  absl::Status ErrorAt(uint64_t at, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at byte ", at));
  }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n > remaining()) {
      return Error(absl::StrCat("file truncated: ", what, " needs ", n, " bytes but only ",
                                remaining(), " remain (file size ", size_, ")"));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v = Load<T>(data_ + pos_);
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<absl::string_view> ReadString(absl::string_view what) {
    const uint64_t at = pos_;
    ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > remaining()) {
      return ErrorAt(at, absl::StrCat("file truncated or corrupt: ", what, " has length ", len,
                                      " but only ", remaining(), " bytes remain"));
    }
    absl::string_view s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }

  const uint8_t* here() const { return data_ + pos_; }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

absl::Status ReadValue(Reader& r, ValueType type, int depth, const std::string& what, Value& v);

absl::StatusOr<ValueType> ReadType(Reader& r, const std::string& what) {
  const uint64_t at = r.offset();
  ASSIGN_OR_RETURN(uint32_t t, r.Read<uint32_t>(what + " type"));
  if (t > static_cast<uint32_t>(ValueType::kF64)) {
    return r.ErrorAt(at, absl::StrCat("invalid value type ", t, " for ", what));
  }
  return static_cast<ValueType>(t);
}

absl::Status ReadArray(Reader& r, int depth, const std::string& what, Value& v) {
  if (depth >= kMaxArrayDepth) return r.Error(absl::StrCat(what, ": arrays nested too deeply"));
  ASSIGN_OR_RETURN(v.elem_type, ReadType(r, what + " element"));
  const uint64_t count_at = r.offset();
  ASSIGN_OR_RETURN(v.count, r.Read<uint64_t>(what + " element count"));
  const int64_t elem = ScalarSize(v.elem_type);
  if (elem > 0) {
    if (v.count > r.remaining() / static_cast<uint64_t>(elem)) {
      return r.ErrorAt(count_at, absl::StrCat("file truncated or corrupt: ", what, " has ", v.count,
                                              " elements of ", elem, " bytes but only ",
                                              r.remaining(), " bytes remain"));
    }
    v.raw = r.here();
    if (v.elem_type == ValueType::kBool) {
      for (uint64_t k = 0; k < v.count; ++k) {
        if (v.raw[k] > 1) {
          return r.ErrorAt(r.offset() + k, absl::StrCat(what, ": bool element is not 0 or 1"));
        }
      }
    }
    return r.Skip(v.count * elem, what);
  }
  // Strings and nested arrays take at least 8 bytes each: bound the count before allocating.
  const uint64_t min_elem = v.elem_type == ValueType::kString ? 8 : 12;
  if (v.count > r.remaining() / min_elem) {
    return r.ErrorAt(count_at, absl::StrCat("file truncated or corrupt: ", what, " has ", v.count,
                                            " elements but only ", r.remaining(), " bytes remain"));
  }
  if (v.elem_type == ValueType::kString) {
    v.strings.reserve(v.count);
    for (uint64_t k = 0; k < v.count; ++k) {
      ASSIGN_OR_RETURN(absl::string_view s, r.ReadString(what + " element"));
      v.strings.push_back(s);
    }
    return absl::OkStatus();
  }
  v.arrays.resize(v.count);
  for (uint64_t k = 0; k < v.count; ++k) {
    v.arrays[k].type = ValueType::kArray;
    RETURN_IF_ERROR(ReadArray(r, depth + 1, what, v.arrays[k]));
  }
  return absl::OkStatus();
}

absl::Status ReadValue(Reader& r, ValueType type, int depth, const std::string& what, Value& v) {
  v.type = type;
  const uint64_t at = r.offset();
  switch (type) {
    case ValueType::kU8: {
      ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(what));
      v.u = x;
      break;
    }
    case ValueType::kI8: {
      ASSIGN_OR_RETURN(int8_t x, r.Read<int8_t>(what));
      v.i = x;
      break;
    }
    case ValueType::kU16: {
      ASSIGN_OR_RETURN(uint16_t x, r.Read<uint16_t>(what));
      v.u = x;
      break;
    }
    case ValueType::kI16: {
      ASSIGN_OR_RETURN(int16_t x, r.Read<int16_t>(what));
      v.i = x;
      break;
    }
    case ValueType::kU32: {
      ASSIGN_OR_RETURN(uint32_t x, r.Read<uint32_t>(what));
      v.u = x;
      break;
    }
    case ValueType::kI32: {
      ASSIGN_OR_RETURN(int32_t x, r.Read<int32_t>(what));
      v.i = x;
      break;
    }
    case ValueType::kU64: {
      ASSIGN_OR_RETURN(uint64_t x, r.Read<uint64_t>(what));
      v.u = x;
      break;
    }
    case ValueType::kI64: {
      ASSIGN_OR_RETURN(int64_t x, r.Read<int64_t>(what));
      v.i = x;
      break;
    }
    case ValueType::kF32: {
      ASSIGN_OR_RETURN(float x, r.Read<float>(what));
      v.f = x;
      break;
    }
    case ValueType::kF64: {
      ASSIGN_OR_RETURN(double x, r.Read<double>(what));
      v.f = x;
      break;
    }
    case ValueType::kBool: {
      ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(what));
      if (x > 1) return r.ErrorAt(at, absl::StrCat(what, ": bool value ", x, " is not 0 or 1"));
      v.b = x != 0;
      break;
    }
    case ValueType::kString: {
      ASSIGN_OR_RETURN(v.str, r.ReadString(what));
      break;
    }
    case ValueType::kArray:
      return ReadArray(r, depth, what, v);
  }
  return absl::OkStatus();
}

bool IsSignedType(ValueType t) {
  return t == ValueType::kI8 || t == ValueType::kI16 || t == ValueType::kI32 ||
         t == ValueType::kI64;
}

// Reads a scalar integer of any width as int64 / uint64 (reporting whether it fits int64).
struct IntValue {
  bool negative;
  uint64_t magnitude;  // the value when not negative
  int64_t value;       // valid when it fits int64
};

IntValue AsInt(const Value& v) {
  if (IsSignedType(v.type)) return {v.i < 0, static_cast<uint64_t>(v.i), v.i};
  return {false, v.u, static_cast<int64_t>(v.u)};
}

}  // namespace

int64_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;  // a value outside the enum (read from a file)
}

absl::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kU8:
      return "u8";
    case ValueType::kI8:
      return "i8";
    case ValueType::kU16:
      return "u16";
    case ValueType::kI16:
      return "i16";
    case ValueType::kU32:
      return "u32";
    case ValueType::kI32:
      return "i32";
    case ValueType::kF32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "u64";
    case ValueType::kI64:
      return "i64";
    case ValueType::kF64:
      return "f64";
  }
  return "unknown";
}

bool Value::IsInteger() const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

int64_t Value::IntAt(uint64_t k) const {
  const uint8_t* p = raw + k * ScalarSize(elem_type);
  switch (elem_type) {
    case ValueType::kU8:
    case ValueType::kBool:
      return Load<uint8_t>(p);
    case ValueType::kI8:
      return Load<int8_t>(p);
    case ValueType::kU16:
      return Load<uint16_t>(p);
    case ValueType::kI16:
      return Load<int16_t>(p);
    case ValueType::kU32:
      return Load<uint32_t>(p);
    case ValueType::kI32:
      return Load<int32_t>(p);
    case ValueType::kU64:
      return static_cast<int64_t>(Load<uint64_t>(p));
    case ValueType::kI64:
      return Load<int64_t>(p);
    case ValueType::kF32:
      return static_cast<int64_t>(Load<float>(p));
    case ValueType::kF64:
      return static_cast<int64_t>(Load<double>(p));
    default:
      return 0;
  }
}

double Value::FloatAt(uint64_t k) const {
  const uint8_t* p = raw + k * ScalarSize(elem_type);
  switch (elem_type) {
    case ValueType::kF32:
      return Load<float>(p);
    case ValueType::kF64:
      return Load<double>(p);
    case ValueType::kU64:
      return static_cast<double>(Load<uint64_t>(p));
    default:
      return static_cast<double>(IntAt(k));
  }
}

std::string TensorInfo::ShapeString() const {
  std::vector<int64_t> dims(ne.begin(), ne.begin() + n_dims);
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) munmap(mapping_, size_);
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) {
    const int err = errno;
    auto msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::FailedPreconditionError(msg);
  }
  struct stat st;
  if (fstat(f->fd_, &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot stat: ", strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, not a GGUF at byte 0"));
  }
  f->mapping_ = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, f->fd_, 0);
  if (f->mapping_ == MAP_FAILED) {
    f->mapping_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat(path, ": mmap failed: ", strerror(errno)));
  }
  f->data_ = static_cast<const uint8_t*>(f->mapping_);
  absl::Status s = f->Parse();
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(const uint8_t* data, size_t size) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = "<memory>";
  f->data_ = data;
  f->size_ = size;
  RETURN_IF_ERROR(f->Parse());
  return f;
}

absl::Status GgufFile::Parse() {
  Reader r(data_, size_);
  RETURN_IF_ERROR(r.Need(4, "magic"));
  if (std::memcmp(data_, "GGUF", 4) != 0) {
    if (std::memcmp(data_, "FUGG", 4) == 0) {
      return r.Error("big-endian GGUF files are not supported");
    }
    return r.Error("not a GGUF file: bad magic (expected \"GGUF\")");
  }
  RETURN_IF_ERROR(r.Skip(4, "magic"));
  const uint64_t version_at = r.offset();
  ASSIGN_OR_RETURN(version_, r.Read<uint32_t>("version"));
  if (version_ == 1) return r.ErrorAt(version_at, "GGUF version 1 is not supported (need 2 or 3)");
  if (version_ != 2 && version_ != 3) {
    return r.ErrorAt(version_at,
                     absl::StrCat("unsupported GGUF version ", version_, " (need 2 or 3)"));
  }
  const uint64_t counts_at = r.offset();
  ASSIGN_OR_RETURN(uint64_t n_tensors, r.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, r.Read<uint64_t>("metadata count"));
  // Each metadata entry takes at least 13 bytes (key length, type, one byte of value) and each
  // tensor info at least 32: bound the counts by the file size before reserving anything.
  if (n_kv > r.remaining() / 13) {
    return r.ErrorAt(counts_at + 8, absl::StrCat("corrupt header: metadata count ", n_kv,
                                                 " cannot fit in ", r.remaining(), " bytes"));
  }
  if (n_tensors > r.remaining() / 32) {
    return r.ErrorAt(counts_at, absl::StrCat("corrupt header: tensor count ", n_tensors,
                                             " cannot fit in ", r.remaining(), " bytes"));
  }

  metadata_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    const uint64_t key_at = r.offset();
    ASSIGN_OR_RETURN(absl::string_view key, r.ReadString(absl::StrCat("metadata key #", k)));
    if (key.empty()) return r.ErrorAt(key_at, absl::StrCat("metadata key #", k, " is empty"));
    if (metadata_index_.contains(key)) {
      return r.ErrorAt(key_at, absl::StrCat("duplicate metadata key \"", key, "\""));
    }
    const std::string what = absl::StrCat("metadata \"", key, "\"");
    ASSIGN_OR_RETURN(ValueType type, ReadType(r, what));
    Value v;
    RETURN_IF_ERROR(ReadValue(r, type, 0, what, v));
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(key, std::move(v));
  }

  if (const Value* a = Find("general.alignment")) {
    if (!a->IsInteger() || AsInt(*a).negative || AsInt(*a).magnitude == 0 ||
        AsInt(*a).magnitude > (1u << 30) ||
        (AsInt(*a).magnitude & (AsInt(*a).magnitude - 1)) != 0) {
      return absl::InvalidArgumentError(
          "general.alignment must be a power of two integer between 1 and 2^30");
    }
    alignment_ = AsInt(*a).magnitude;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const uint64_t info_at = r.offset();
    TensorInfo t;
    ASSIGN_OR_RETURN(t.name, r.ReadString(absl::StrCat("tensor #", k, " name")));
    if (t.name.empty()) return r.ErrorAt(info_at, absl::StrCat("tensor #", k, " has no name"));
    if (tensor_index_.contains(t.name)) {
      return r.ErrorAt(info_at, absl::StrCat("duplicate tensor name \"", t.name, "\""));
    }
    const std::string what = absl::StrCat("tensor \"", t.name, "\"");
    const uint64_t dims_at = r.offset();
    ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>(what + " dimension count"));
    if (n_dims < 1 || n_dims > kMaxDims) {
      return r.ErrorAt(dims_at, absl::StrCat(what, " has ", n_dims, " dimensions (must be 1 to ",
                                             kMaxDims, ")"));
    }
    t.n_dims = static_cast<int>(n_dims);
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne_at = r.offset();
      ASSIGN_OR_RETURN(uint64_t ne, r.Read<uint64_t>(what + " dimension"));
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return r.ErrorAt(ne_at, absl::StrCat(what, " has invalid dimension ", d, " = ", ne));
      }
      if (static_cast<uint64_t>(n_elements) >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) {
        return r.ErrorAt(ne_at, absl::StrCat(what, ": element count overflows"));
      }
      t.ne[d] = static_cast<int64_t>(ne);
      n_elements *= static_cast<int64_t>(ne);
    }
    t.n_elements = n_elements;
    const uint64_t type_at = r.offset();
    ASSIGN_OR_RETURN(uint32_t type_id, r.Read<uint32_t>(what + " type"));
    std::optional<quant::TypeTraits> traits = quant::GetTypeTraits(type_id);
    if (!traits) {
      return r.ErrorAt(type_at, absl::StrCat(what, " has unknown type id ", type_id));
    }
    t.type = static_cast<quant::GgmlType>(type_id);
    if (t.ne[0] % traits->block_size != 0) {
      return r.ErrorAt(dims_at,
                       absl::StrCat(what, " of type ", traits->name, " has ne[0] = ", t.ne[0],
                                    ", not a multiple of its block size ", traits->block_size));
    }
    const uint64_t blocks = static_cast<uint64_t>(n_elements / traits->block_size);
    if (blocks > std::numeric_limits<uint64_t>::max() / traits->type_size) {
      return r.ErrorAt(dims_at, absl::StrCat(what, ": byte size overflows"));
    }
    t.n_bytes = blocks * static_cast<uint64_t>(traits->type_size);
    const uint64_t offset_at = r.offset();
    ASSIGN_OR_RETURN(t.offset, r.Read<uint64_t>(what + " offset"));
    if (t.offset % alignment_ != 0) {
      return r.ErrorAt(offset_at, absl::StrCat(what, " offset ", t.offset,
                                               " is not a multiple of the alignment ", alignment_));
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(t);
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = r.offset();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (!tensors_.empty() && data_offset_ > size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("file truncated: data section would start at byte ", data_offset_,
                     " past the end (size ", size_, ")"));
  }
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  for (TensorInfo& t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file truncated or corrupt: tensor \"", t.name, "\" (", t.n_bytes, " bytes) at byte ",
          data_offset_ + t.offset, " runs past the end of the file (size ", size_, ")"));
    }
    t.file_offset = data_offset_ + t.offset;
    t.data = data_ + t.file_offset;
  }
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& prev = *by_offset[k - 1];
    const TensorInfo& cur = *by_offset[k];
    if (prev.offset + prev.n_bytes > cur.offset) {
      return absl::InvalidArgumentError(absl::StrCat("corrupt file: tensors \"", prev.name,
                                                     "\" and \"", cur.name, "\" overlap at byte ",
                                                     data_offset_ + cur.offset));
    }
  }
  return absl::OkStatus();
}

const Value* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status Missing(absl::string_view key) {
  return absl::NotFoundError(absl::StrCat("metadata key \"", key, "\" is missing"));
}

absl::Status WrongType(absl::string_view key, const Value& v, absl::string_view expected) {
  std::string got(ValueTypeName(v.type));
  if (v.type == ValueType::kArray) absl::StrAppend(&got, " of ", ValueTypeName(v.elem_type));
  return absl::InvalidArgumentError(
      absl::StrCat("metadata key \"", key, "\" has type ", got, ", expected ", expected));
}

absl::Status OutOfRange(absl::string_view key, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("metadata key \"", key, "\" is out of range for ", expected));
}

}  // namespace

absl::StatusOr<uint64_t> GgufFile::GetU64(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (!v->IsInteger()) return WrongType(key, *v, "an unsigned integer");
  IntValue iv = AsInt(*v);
  if (iv.negative) return OutOfRange(key, "an unsigned integer");
  return iv.magnitude;
}

absl::StatusOr<uint32_t> GgufFile::GetU32(absl::string_view key) const {
  ASSIGN_OR_RETURN(uint64_t v, GetU64(key));
  if (v > std::numeric_limits<uint32_t>::max()) return OutOfRange(key, "u32");
  return static_cast<uint32_t>(v);
}

absl::StatusOr<int64_t> GgufFile::GetI64(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (!v->IsInteger()) return WrongType(key, *v, "an integer");
  IntValue iv = AsInt(*v);
  if (!iv.negative && iv.magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRange(key, "i64");
  }
  return iv.value;
}

absl::StatusOr<float> GgufFile::GetF32(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (!v->IsFloat()) return WrongType(key, *v, "a float");
  return static_cast<float>(v->f);
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kBool) return WrongType(key, *v, "bool");
  return v->b;
}

absl::StatusOr<absl::string_view> GgufFile::GetString(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kString) return WrongType(key, *v, "string");
  return v->str;
}

absl::StatusOr<std::vector<absl::string_view>> GgufFile::GetStringArray(
    absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kString) {
    return WrongType(key, *v, "array of string");
  }
  return v->strings;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || v->raw == nullptr || v->elem_type == ValueType::kF32 ||
      v->elem_type == ValueType::kF64) {
    return WrongType(key, *v, "array of integers");
  }
  std::vector<int64_t> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) out[k] = v->IntAt(k);
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetF32Array(absl::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kArray || v->raw == nullptr || v->elem_type == ValueType::kBool) {
    return WrongType(key, *v, "array of numbers");
  }
  std::vector<float> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) out[k] = static_cast<float>(v->FloatAt(k));
  return out;
}

absl::StatusOr<uint32_t> GgufFile::GetU32Or(absl::string_view key, uint32_t fallback) const {
  if (!Has(key)) return fallback;
  return GetU32(key);
}

absl::StatusOr<float> GgufFile::GetF32Or(absl::string_view key, float fallback) const {
  if (!Has(key)) return fallback;
  return GetF32(key);
}

absl::StatusOr<bool> GgufFile::GetBoolOr(absl::string_view key, bool fallback) const {
  if (!Has(key)) return fallback;
  return GetBool(key);
}

}  // namespace qwen::gguf

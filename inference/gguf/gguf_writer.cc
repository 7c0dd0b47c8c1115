#include "inference/gguf/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/gguf/gguf_file.h"

namespace qwen::gguf {
namespace {

template <typename T>
void Put(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

void PutString(std::string& out, absl::string_view s) {
  Put<uint64_t>(out, s.size());
  out.append(s.data(), s.size());
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

void GgufWriter::Key(absl::string_view key, uint32_t type) {
  PutString(kv_bytes_, key);
  Put<uint32_t>(kv_bytes_, type);
  ++n_kv_;
}

void GgufWriter::AddU8(absl::string_view key, uint8_t v) {
  Key(key, static_cast<uint32_t>(ValueType::kU8));
  Put(kv_bytes_, v);
}
void GgufWriter::AddU32(absl::string_view key, uint32_t v) {
  Key(key, static_cast<uint32_t>(ValueType::kU32));
  Put(kv_bytes_, v);
}
void GgufWriter::AddI32(absl::string_view key, int32_t v) {
  Key(key, static_cast<uint32_t>(ValueType::kI32));
  Put(kv_bytes_, v);
}
void GgufWriter::AddU64(absl::string_view key, uint64_t v) {
  Key(key, static_cast<uint32_t>(ValueType::kU64));
  Put(kv_bytes_, v);
}
void GgufWriter::AddF32(absl::string_view key, float v) {
  Key(key, static_cast<uint32_t>(ValueType::kF32));
  Put(kv_bytes_, v);
}
void GgufWriter::AddBool(absl::string_view key, bool v) {
  Key(key, static_cast<uint32_t>(ValueType::kBool));
  Put<uint8_t>(kv_bytes_, v ? 1 : 0);
}
void GgufWriter::AddString(absl::string_view key, absl::string_view v) {
  Key(key, static_cast<uint32_t>(ValueType::kString));
  PutString(kv_bytes_, v);
}
void GgufWriter::AddStringArray(absl::string_view key, const std::vector<std::string>& v) {
  Key(key, static_cast<uint32_t>(ValueType::kArray));
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kString));
  Put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v) PutString(kv_bytes_, s);
}
void GgufWriter::AddI32Array(absl::string_view key, const std::vector<int32_t>& v) {
  Key(key, static_cast<uint32_t>(ValueType::kArray));
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kI32));
  Put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v) Put(kv_bytes_, x);
}
void GgufWriter::AddU32Array(absl::string_view key, const std::vector<uint32_t>& v) {
  Key(key, static_cast<uint32_t>(ValueType::kArray));
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kU32));
  Put<uint64_t>(kv_bytes_, v.size());
  for (uint32_t x : v) Put(kv_bytes_, x);
}
void GgufWriter::AddF32Array(absl::string_view key, const std::vector<float>& v) {
  Key(key, static_cast<uint32_t>(ValueType::kArray));
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kF32));
  Put<uint64_t>(kv_bytes_, v.size());
  for (float x : v) Put(kv_bytes_, x);
}

void GgufWriter::AddTensor(absl::string_view name, quant::GgmlType type,
                           const std::vector<int64_t>& ne, Fill fill) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  const quant::TypeTraits& t = quant::Traits(type);
  const uint64_t n_bytes = static_cast<uint64_t>(n / t.block_size * t.type_size);
  data_size_ = AlignUp(data_size_, alignment_);
  tensors_.push_back(Tensor{std::string(name), type, ne, n_bytes, data_size_, std::move(fill)});
  data_size_ += n_bytes;
}

void GgufWriter::AddTensorBytes(absl::string_view name, quant::GgmlType type,
                                const std::vector<int64_t>& ne, std::string bytes) {
  auto shared = std::make_shared<std::string>(std::move(bytes));
  AddTensor(name, type, ne, [shared](uint8_t* dst, uint64_t offset, uint64_t n) {
    std::memcpy(dst, shared->data() + offset, n);
  });
}

std::string GgufWriter::Header() const {
  std::string out = "GGUF";
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, n_kv_);
  out += kv_bytes_;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(out, t.offset);
  }
  out.resize(AlignUp(out.size(), alignment_), '\0');
  return out;
}

std::string GgufWriter::ToBytes() const {
  std::string out = Header();
  const size_t base = out.size();
  out.resize(base + data_size_, '\0');
  for (const Tensor& t : tensors_) {
    t.fill(reinterpret_cast<uint8_t*>(out.data() + base + t.offset), 0, t.n_bytes);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return absl::FailedPreconditionError(absl::StrCat(path, ": ", std::strerror(errno)));
  const std::string header = Header();
  if (std::fwrite(header.data(), 1, header.size(), f.get()) != header.size()) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  constexpr uint64_t kPiece = 16 << 20;
  std::vector<uint8_t> buf;
  uint64_t written = 0;
  for (const Tensor& t : tensors_) {
    if (t.offset > written) {
      std::vector<uint8_t> pad(t.offset - written, 0);
      std::fwrite(pad.data(), 1, pad.size(), f.get());
      written = t.offset;
    }
    // Pieces hold whole blocks, so a fill callback never sees half a block.
    const uint64_t block_bytes = quant::Traits(t.type).type_size;
    const uint64_t piece = std::max<uint64_t>(1, kPiece / block_bytes) * block_bytes;
    for (uint64_t off = 0; off < t.n_bytes; off += piece) {
      const uint64_t n = std::min(piece, t.n_bytes - off);
      buf.resize(n);
      t.fill(buf.data(), off, n);
      if (std::fwrite(buf.data(), 1, n, f.get()) != n) {
        return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
      }
    }
    written += t.n_bytes;
  }
  if (std::fflush(f.get()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace qwen::gguf

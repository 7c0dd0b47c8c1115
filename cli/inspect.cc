// `qwen inspect MODEL.gguf [--json]`: what is in a GGUF file.
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/flags_util.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/layout.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int64_t, array_limit, -1,
          "Show at most this many elements of each metadata array (-1: 16 in the text output, "
          "all of them in --json; 0: none).");

namespace qwen::cli {
namespace {

using gguf::Value;
using gguf::ValueType;
using Json = nlohmann::ordered_json;

Json ScalarJson(const Value& v) {
  switch (v.type) {
    case ValueType::kU8:
    case ValueType::kU16:
    case ValueType::kU32:
    case ValueType::kU64:
      return v.u;
    case ValueType::kI8:
    case ValueType::kI16:
    case ValueType::kI32:
    case ValueType::kI64:
      return v.i;
    case ValueType::kF32:
    case ValueType::kF64:
      return v.f;
    case ValueType::kBool:
      return v.b;
    case ValueType::kString:
      return std::string(v.str);
    case ValueType::kArray:
      break;
  }
  return nullptr;
}

Json ValueJson(const Value& v, int64_t limit) {
  if (v.type != ValueType::kArray) return ScalarJson(v);
  Json arr = Json::array();
  const uint64_t n = limit < 0 ? v.count : std::min<uint64_t>(v.count, limit);
  for (uint64_t k = 0; k < n; ++k) {
    switch (v.elem_type) {
      case ValueType::kString:
        arr.push_back(std::string(v.strings[k]));
        break;
      case ValueType::kArray:
        arr.push_back(ValueJson(v.arrays[k], limit));
        break;
      case ValueType::kF32:
      case ValueType::kF64:
        arr.push_back(v.FloatAt(k));
        break;
      case ValueType::kBool:
        arr.push_back(v.IntAt(k) != 0);
        break;
      case ValueType::kU64:
        arr.push_back(static_cast<uint64_t>(v.IntAt(k)));
        break;
      default:
        arr.push_back(v.IntAt(k));
    }
  }
  return arr;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string TypeLabel(const Value& v) {
  if (v.type != ValueType::kArray) return std::string(gguf::ValueTypeName(v.type));
  return absl::StrCat("[", gguf::ValueTypeName(v.elem_type), " x ", v.count, "]");
}

std::string ValueText(const Value& v, int64_t limit) {
  if (v.type != ValueType::kArray) {
    std::string s = Dump(ScalarJson(v));
    if (s.size() > 200) s = absl::StrCat(s.substr(0, 200), "... (", v.str.size(), " bytes)");
    return s;
  }
  std::string s = Dump(ValueJson(v, limit));
  if (static_cast<uint64_t>(limit) < v.count) {
    s.pop_back();
    absl::StrAppend(&s, limit > 0 ? ", " : "", "... ", v.count - limit, " more]");
  }
  return s;
}

std::string HumanBytes(uint64_t n) {
  if (n >= (1ull << 30)) return absl::StrFormat("%.2f GiB", n / double(1ull << 30));
  if (n >= (1ull << 20)) return absl::StrFormat("%.2f MiB", n / double(1ull << 20));
  if (n >= (1ull << 10)) return absl::StrFormat("%.2f KiB", n / double(1ull << 10));
  return absl::StrCat(n, " B");
}

struct TypeTotal {
  int tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
};

}  // namespace

int RunInspect(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "inspect",
      "qwen inspect MODEL.gguf [--json]: print a GGUF file's metadata and tensor table, and which\n"
      "naming convention it follows (llama.cpp's or Ollama's). MODEL may be ollama:NAME[:TAG].\n"
      "Exit 0 on success, 2 when the file cannot be read or is not a valid GGUF.",
      argc, argv, {"json_flag"});
  if (args.size() != 1) {
    std::fprintf(stderr, "usage: qwen inspect MODEL.gguf [--json]\n");
    return 2;
  }
  const absl::StatusOr<ModelFiles> resolved = ResolveModel(args[0]);
  if (!resolved.ok()) {
    std::fprintf(stderr, "qwen inspect: %s\n", std::string(resolved.status().message()).c_str());
    return 2;
  }
  auto file_or = gguf::GgufFile::Open(resolved->model_path);
  if (!file_or.ok()) {
    std::fprintf(stderr, "qwen inspect: %s\n", std::string(file_or.status().message()).c_str());
    return 2;
  }
  const gguf::GgufFile& file = **file_or;
  const bool json = absl::GetFlag(FLAGS_json);
  int64_t limit = absl::GetFlag(FLAGS_array_limit);
  if (limit < 0) limit = json ? -1 : 16;

  std::map<std::string, TypeTotal> totals;
  int64_t total_elements = 0;
  uint64_t total_bytes = 0;
  for (const gguf::TensorInfo& t : file.tensors()) {
    TypeTotal& tt = totals[std::string(quant::TypeName(t.type))];
    ++tt.tensors;
    tt.elements += t.n_elements;
    tt.bytes += t.n_bytes;
    total_elements += t.n_elements;
    total_bytes += t.n_bytes;
  }

  if (json) {
    Json out;
    out["layout"] = std::string(model::LayoutName(model::DetectLayout(file)));
    if (!resolved->projector_path.empty()) out["projector"] = resolved->projector_path;
    Json meta = Json::object();
    for (const auto& [key, value] : file.metadata())
      meta[std::string(key)] = ValueJson(value, limit);
    out["metadata"] = std::move(meta);
    Json tensors = Json::array();
    for (const gguf::TensorInfo& t : file.tensors()) {
      Json ne = Json::array();
      for (int d = 0; d < t.n_dims; ++d) ne.push_back(t.ne[d]);
      tensors.push_back(Json{{"name", std::string(t.name)},
                             {"type", std::string(quant::TypeName(t.type))},
                             {"ne", ne},
                             {"offset", t.file_offset},
                             {"bytes", t.n_bytes}});
    }
    out["tensors"] = std::move(tensors);
    Json by_type = Json::object();
    for (const auto& [name, tt] : totals) by_type[name] = tt.bytes;
    out["bytes_by_type"] = std::move(by_type);
    std::printf("%s\n", Dump(out).c_str());
    return 0;
  }

  std::printf("file:      %s\n", file.path().c_str());
  std::printf("size:      %" PRIu64 " bytes (%s)\n", file.file_size(),
              HumanBytes(file.file_size()).c_str());
  std::printf("format:    GGUF v%u, alignment %" PRIu64 ", tensor data at byte %" PRIu64 "\n",
              file.version(), file.alignment(), file.data_offset());
  const model::FileLayout layout = model::DetectLayout(file);
  std::printf("layout:    %s%s\n", std::string(model::LayoutName(layout)).c_str(),
              layout == model::FileLayout::kOllama
                  ? " (Ollama's own library layout: bundled mtp.*/v.* tensors, Ollama's keys)"
                  : "");
  if (!resolved->projector_path.empty()) {
    std::printf("projector: %s\n", resolved->projector_path.c_str());
  }
  std::printf("\nmetadata (%zu keys):\n", file.metadata().size());
  size_t key_width = 0;
  for (const auto& [key, value] : file.metadata()) key_width = std::max(key_width, key.size());
  for (const auto& [key, value] : file.metadata()) {
    std::printf("  %-*s  %-16s %s\n", static_cast<int>(key_width), std::string(key).c_str(),
                TypeLabel(value).c_str(), ValueText(value, limit).c_str());
  }
  std::printf("\ntensors (%zu):\n", file.tensors().size());
  if (!file.tensors().empty()) {
    size_t name_width = 4;
    for (const auto& t : file.tensors()) name_width = std::max(name_width, t.name.size());
    std::printf("  %-*s  %-7s %-22s %14s %14s\n", static_cast<int>(name_width), "name", "type",
                "shape (ne)", "offset", "bytes");
    for (const auto& t : file.tensors()) {
      std::printf("  %-*s  %-7s %-22s %14" PRIu64 " %14" PRIu64 "\n", static_cast<int>(name_width),
                  std::string(t.name).c_str(), std::string(quant::TypeName(t.type)).c_str(),
                  t.ShapeString().c_str(), t.file_offset, t.n_bytes);
    }
    std::printf("\nby type:\n");
    std::printf("  %-8s %8s %16s %16s %7s %8s\n", "type", "tensors", "elements", "bytes", "share",
                "bits/w");
    for (const auto& [name, tt] : totals) {
      std::printf("  %-8s %8d %16" PRId64 " %16" PRIu64 " %6.2f%% %8.3f\n", name.c_str(),
                  tt.tensors, tt.elements, tt.bytes,
                  100.0 * tt.bytes / std::max<uint64_t>(1, total_bytes),
                  8.0 * tt.bytes / std::max<int64_t>(1, tt.elements));
    }
    std::printf("  %-8s %8zu %16" PRId64 " %16" PRIu64 " %7s %8.3f  (%s)\n", "total",
                file.tensors().size(), total_elements, total_bytes, "100%",
                8.0 * total_bytes / std::max<int64_t>(1, total_elements),
                HumanBytes(total_bytes).c_str());
  }
  return 0;
}

}  // namespace qwen::cli

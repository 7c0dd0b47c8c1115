// Structure-aware GGUF fuzzing: the input is not a file but a list of edits applied to a valid
// file's records (gguf_header.h) — change a value's type tag, bytes or array count, a key, a
// tensor's dimensions, type or offset, the written counts, the alignment, the version, truncate
// or extend — so that nearly every input reaches the reader's deeper checks and the consumers
// of the metadata instead of stopping at the magic or a count.
//
// Bases: the tiny model (q3_k_m) with its real metadata (vocabulary, merges, chat template) and
// tensors shrunk to one block each, the tiny vision projector likewise, and a synthetic file
// with a value of every type.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/gguf/gguf_file.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/gguf_header.h"
#include "tests/fuzz/gguf_walk.h"

namespace qwen::fuzz {
namespace {

std::vector<RawGguf>* bases;

RawGguf LoadBase(const std::string& relative) {
  auto g = SplitGguf(ReadFileOrDie(DataPath(relative)));
  if (!g.ok()) {
    std::fprintf(stderr, "%s: %s\n", relative.c_str(), g.status().ToString().c_str());
    std::exit(2);
  }
  ShrinkTensors(*g);
  return *std::move(g);
}

uint64_t InterestingU64(FuzzedDataProvider& p) {
  static constexpr uint64_t kValues[] = {0,
                                         1,
                                         2,
                                         3,
                                         7,
                                         8,
                                         31,
                                         32,
                                         33,
                                         64,
                                         255,
                                         256,
                                         4096,
                                         (1ull << 31) - 1,
                                         1ull << 31,
                                         (1ull << 32) - 1,
                                         1ull << 32,
                                         (1ull << 62),
                                         (1ull << 63) - 1,
                                         1ull << 63,
                                         ~0ull - 1,
                                         ~0ull};
  if (p.ConsumeBool()) return p.PickValueInArray(kValues);
  return p.ConsumeIntegral<uint64_t>();
}

uint32_t InterestingU32(FuzzedDataProvider& p) {
  return p.ConsumeBool() ? static_cast<uint32_t>(p.ConsumeIntegralInRange(0, 40))
                         : p.ConsumeIntegral<uint32_t>();
}

void Edit(FuzzedDataProvider& p, RawGguf& g, std::string* tail_bytes, size_t* truncate_to) {
  const int op = p.ConsumeIntegralInRange(0, 17);
  const size_t nkv = g.kv.size(), nt = g.tensors.size();
  RawKv* kv = nkv ? &g.kv[p.ConsumeIntegralInRange<size_t>(0, nkv - 1)] : nullptr;
  RawTensor* t = nt ? &g.tensors[p.ConsumeIntegralInRange<size_t>(0, nt - 1)] : nullptr;
  switch (op) {
    case 0:
      g.version = p.ConsumeBool() ? p.ConsumeIntegralInRange(0, 4) : p.ConsumeIntegral<uint32_t>();
      break;
    case 1:  // a value read as another type
      if (kv) kv->type = InterestingU32(p) % 14;
      break;
    case 2:  // new value bytes
      if (kv) kv->value = p.ConsumeRandomLengthString(64);
      break;
    case 3:  // overwrite bytes inside a value (array counts, string lengths, element types)
      if (kv && !kv->value.empty()) {
        const size_t at = p.ConsumeIntegralInRange<size_t>(0, kv->value.size() - 1);
        const std::string b = p.ConsumeBool() ? U64(InterestingU64(p)) : U32(InterestingU32(p));
        kv->value.replace(at, std::min(b.size(), kv->value.size() - at), b);
      }
      break;
    case 4:  // a key: empty, duplicate, or arbitrary
      if (kv) {
        const int how = p.ConsumeIntegralInRange(0, 2);
        kv->key = how == 0   ? ""
                  : how == 1 ? g.kv[p.ConsumeIntegralInRange<size_t>(0, nkv - 1)].key
                             : p.ConsumeRandomLengthString(32);
      }
      break;
    case 5:  // drop or duplicate a metadata entry
      if (kv) {
        const size_t k = kv - g.kv.data();
        if (p.ConsumeBool()) {
          g.kv.erase(g.kv.begin() + k);
        } else {
          g.kv.push_back(g.kv[k]);
        }
      }
      break;
    case 6:  // general.alignment and the padding actually used
      if (p.ConsumeBool()) {
        g.kv.push_back({"general.alignment", p.ConsumeIntegralInRange<uint32_t>(0, 12),
                        p.ConsumeBool() ? U32(static_cast<uint32_t>(InterestingU64(p)))
                                        : U64(InterestingU64(p))});
      } else {
        g.pad_to = uint64_t{1} << p.ConsumeIntegralInRange(0, 12);
      }
      break;
    case 7:
      if (t) t->n_dims = p.ConsumeBool() ? p.ConsumeIntegralInRange(0, 6) : InterestingU32(p);
      break;
    case 8:
      if (t) t->ne[p.ConsumeIntegralInRange(0, 3)] = InterestingU64(p);
      break;
    case 9:
      if (t) t->type = InterestingU32(p);
      break;
    case 10:
      if (t)
        t->offset =
            p.ConsumeBool() ? t->offset + p.ConsumeIntegralInRange(-64, 64) : InterestingU64(p);
      break;
    case 11:  // tensor names: empty, duplicate, arbitrary
      if (t) {
        const int how = p.ConsumeIntegralInRange(0, 2);
        t->name = how == 0   ? ""
                  : how == 1 ? g.tensors[p.ConsumeIntegralInRange<size_t>(0, nt - 1)].name
                             : p.ConsumeRandomLengthString(32);
      }
      break;
    case 12:  // drop or duplicate a tensor
      if (t) {
        const size_t k = t - g.tensors.data();
        if (p.ConsumeBool()) {
          g.tensors.erase(g.tensors.begin() + k);
        } else {
          g.tensors.push_back(g.tensors[k]);
        }
      }
      break;
    case 13:
      g.n_kv_written =
          p.ConsumeBool() ? g.kv.size() + p.ConsumeIntegralInRange(-3, 3) : InterestingU64(p);
      break;
    case 14:
      g.n_tensors_written =
          p.ConsumeBool() ? g.tensors.size() + p.ConsumeIntegralInRange(-3, 3) : InterestingU64(p);
      break;
    case 15:  // the data section
      if (p.ConsumeBool()) {
        g.data.resize(p.ConsumeIntegralInRange<size_t>(0, g.data.size() + 256));
      } else {
        *tail_bytes = p.ConsumeRandomLengthString(64);
      }
      break;
    case 16:  // cut the serialized file
      *truncate_to = p.ConsumeIntegral<uint32_t>();
      break;
    case 17:  // a new entry of any type with arbitrary bytes
      g.kv.push_back({p.ConsumeRandomLengthString(24), InterestingU32(p) % 14,
                      p.ConsumeRandomLengthString(48)});
      break;
  }
}

}  // namespace
}  // namespace qwen::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  using namespace qwen::fuzz;
  bases = new std::vector<RawGguf>;
  bases->push_back(LoadBase("models/tiny-qwen35-q3_k_m.gguf"));
  bases->push_back(LoadBase("models/mmproj-tiny-qwen35-f16.gguf"));
  bases->push_back(SyntheticGguf());
  // The bases themselves must parse: otherwise every edit starts from a broken file.
  for (const RawGguf& g : *bases) {
    const std::string bytes = g.Serialize();
    auto f = qwen::gguf::GgufFile::FromBuffer(reinterpret_cast<const uint8_t*>(bytes.data()),
                                              bytes.size());
    if (!f.ok()) Fail(absl::StrCat("base does not parse: ", f.status().ToString()));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qwen::fuzz;
  FuzzedDataProvider p(data, size);
  RawGguf g = (*bases)[p.ConsumeIntegralInRange<size_t>(0, bases->size() - 1)];
  std::string tail;
  size_t truncate_to = ~size_t{0};
  for (int n = p.ConsumeIntegralInRange(0, 12); n > 0 && p.remaining_bytes() > 0; --n) {
    Edit(p, g, &tail, &truncate_to);
  }
  std::string bytes = g.Serialize() + tail;
  if (truncate_to < bytes.size()) bytes.resize(truncate_to);
  // An exact-size heap copy, so that reading one byte past the end is an ASan report.
  std::vector<uint8_t> file(bytes.begin(), bytes.end());
  WalkGguf(file.data(), file.size());
  return 0;
}

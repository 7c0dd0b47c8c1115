#include "inference/model/layout.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace qwen::model {
namespace {

bool HasTensorWithPrefix(const gguf::GgufFile& file, absl::string_view prefix) {
  return std::any_of(
      file.tensors().begin(), file.tensors().end(),
      [prefix](const gguf::TensorInfo& t) { return absl::StartsWith(t.name, prefix); });
}

std::string ArchitectureOf(const gguf::GgufFile& file) {
  auto arch = file.GetString("general.architecture");
  return arch.ok() ? std::string(*arch) : std::string();
}

// Suffixes of the MTP block that keep their name inside the block in both layouts.
constexpr absl::string_view kMtpLayerTensors[] = {
    "attn_norm.weight",   "post_attention_norm.weight",
    "attn_q.weight",      "attn_k.weight",
    "attn_v.weight",      "attn_output.weight",
    "attn_q_norm.weight", "attn_k_norm.weight",
    "ffn_gate.weight",    "ffn_up.weight",
    "ffn_down.weight",
};

struct MtpOuterName {
  absl::string_view llama;   // after blk.<n>.
  absl::string_view ollama;  // whole name
  bool raw_norm;             // Ollama stores the Hugging Face weight (no +1)
};
constexpr MtpOuterName kMtpOuterTensors[] = {
    {"nextn.eh_proj.weight", "mtp.fc.weight", false},
    {"nextn.enorm.weight", "mtp.pre_fc_norm_embedding.weight", true},
    {"nextn.hnorm.weight", "mtp.pre_fc_norm_hidden.weight", true},
    {"nextn.shared_head_norm.weight", "mtp.norm.weight", true},
};

}  // namespace

absl::string_view LayoutName(FileLayout layout) {
  switch (layout) {
    case FileLayout::kLlamaCpp:
      return "llama.cpp";
    case FileLayout::kOllama:
      return "ollama";
  }
  return "unknown";
}

FileLayout DetectLayout(const gguf::GgufFile& file) {
  const std::string arch = ArchitectureOf(file);
  // llama.cpp's separate vision projector: its clip.vision.* keys and v.* tensors are its own.
  if (arch == "clip") return FileLayout::kLlamaCpp;
  if (!arch.empty()) {
    for (absl::string_view key : {"vision.block_count", "image_token_id", "ssm.v_head_reordered",
                                  "rope.mrope_interleaved"}) {
      if (file.Has(absl::StrCat(arch, ".", key))) return FileLayout::kOllama;
    }
  }
  if (HasTensorWithPrefix(file, "mtp.") || HasTensorWithPrefix(file, "v.")) {
    return FileLayout::kOllama;
  }
  return FileLayout::kLlamaCpp;
}

std::string DescribeFile(const gguf::GgufFile& file) {
  const std::string arch = ArchitectureOf(file);
  const size_t n = file.tensors().size();
  if (arch == "clip") {
    return absl::StrCat(
        "this file is a vision projector (general.architecture = clip, ", n,
        " tensors), not a text model: give it with --mmproj and the text model with --model");
  }
  if (file.FindTensor("blk.0.ssm_in.weight") != nullptr ||
      file.FindTensor("blk.0.ssm_ba.weight") != nullptr) {
    return absl::StrCat("this file (architecture \"", arch, "\", ", n,
                        " tensors) has Qwen3-Next's fused delta-net tensors (blk.N.ssm_in, "
                        "blk.N.ssm_ba), which is neither llama.cpp's nor Ollama's Qwen3.5 layout");
  }
  if (n == 0) {
    return absl::StrCat("this file (architecture \"", arch,
                        "\") holds no tensors: a vocabulary-only file cannot be served");
  }
  const FileLayout layout = DetectLayout(file);
  return absl::StrCat("the file (architecture \"", arch, "\", ", n, " tensors) reads as ",
                      LayoutName(layout), "'s layout",
                      layout == FileLayout::kOllama
                          ? " (it has Ollama's keys or bundled mtp.*/v.* tensors)"
                          : " (no Ollama keys, no bundled mtp.*/v.* tensors)",
                      " but does not hold a complete Qwen3.5 model in it");
}

int CountOllamaMtpBlocks(const gguf::GgufFile& file) {
  std::set<int> blocks;
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (!absl::StartsWith(t.name, "mtp.layers.")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(t.name, '.');
    int k = 0;
    if (parts.size() > 2 && absl::SimpleAtoi(parts[2], &k) && k >= 0 && k < 64) blocks.insert(k);
  }
  // The projection in front of the block counts one block even without layer tensors.
  if (blocks.empty() && file.FindTensor("mtp.fc.weight") != nullptr) return 1;
  return static_cast<int>(blocks.size());
}

absl::StatusOr<std::vector<MtpTensor>> FindMtpTensors(const gguf::GgufFile& file, int n_layer) {
  std::vector<MtpTensor> out;
  if (DetectLayout(file) == FileLayout::kOllama) {
    const int blocks = CountOllamaMtpBlocks(file);
    if (blocks > 1) {
      return absl::UnimplementedError(
          absl::StrCat("the file bundles ", blocks, " MTP blocks (mtp.layers.*); Qwen3.5 has one"));
    }
    if (blocks == 0) return out;
    const std::string blk = absl::StrCat("blk.", n_layer, ".");
    for (const MtpOuterName& m : kMtpOuterTensors) {
      if (const gguf::TensorInfo* t = file.FindTensor(m.ollama)) {
        out.push_back({absl::StrCat(blk, m.llama), t, m.raw_norm});
      }
    }
    for (absl::string_view suffix : kMtpLayerTensors) {
      if (const gguf::TensorInfo* t = file.FindTensor(absl::StrCat("mtp.layers.0.", suffix))) {
        out.push_back({absl::StrCat(blk, suffix), t, false});
      }
    }
  } else {
    auto nextn = file.GetU32Or(absl::StrCat(ArchitectureOf(file), ".nextn_predict_layers"), 0);
    if (!nextn.ok()) return nextn.status();
    for (uint32_t k = 0; k < *nextn; ++k) {
      const std::string blk = absl::StrCat("blk.", n_layer + static_cast<int>(k), ".");
      for (const MtpOuterName& m : kMtpOuterTensors) {
        const std::string name = absl::StrCat(blk, m.llama);
        if (const gguf::TensorInfo* t = file.FindTensor(name)) out.push_back({name, t, false});
      }
      for (absl::string_view suffix : kMtpLayerTensors) {
        const std::string name = absl::StrCat(blk, suffix);
        if (const gguf::TensorInfo* t = file.FindTensor(name)) out.push_back({name, t, false});
      }
    }
  }
  if (!out.empty() && out.front().name.find("nextn.eh_proj") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the MTP block lacks its input projection (", out.front().name, " found, ",
        DetectLayout(file) == FileLayout::kOllama ? "mtp.fc.weight" : "blk.N.nextn.eh_proj.weight",
        " missing)"));
  }
  return out;
}

}  // namespace qwen::model

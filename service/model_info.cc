#include "service/model_info.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "inference/quant/types.h"

namespace qwen::service {

std::string FileTypeName(uint32_t file_type) {
  // llama.cpp's llama_ftype numbering (gaps are retired types).
  switch (file_type) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS";
    case 20: return "IQ2_XS";
    case 21: return "Q2_K_S";
    case 22: return "IQ3_XS";
    case 23: return "IQ3_XXS";
    case 24: return "IQ1_S";
    case 25: return "IQ4_NL";
    case 26: return "IQ3_S";
    case 27: return "IQ3_M";
    case 28: return "IQ2_S";
    case 29: return "IQ2_M";
    case 30: return "IQ4_XS";
    case 31: return "IQ1_M";
    case 32: return "BF16";
    case 36: return "TQ1_0";
    case 37: return "TQ2_0";
    case 38: return "MXFP4_MOE";
    default: return absl::StrCat("unknown (", file_type, ")");
  }
}

v1::GetModelInfoResponse StaticModelInfo(const TextModel& model) {
  v1::GetModelInfoResponse info;
  const gguf::GgufFile& file = model.file();
  info.set_name(model.config().name);
  info.set_architecture(model.config().architecture);
  if (auto ft = file.GetU32("general.file_type"); ft.ok()) {
    info.set_file_type(FileTypeName(*ft));
  } else {
    info.set_file_type("unknown");
  }
  struct Stats {
    uint32_t tensors = 0;
    uint64_t parameters = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, Stats> by_type;
  uint64_t parameters = 0;
  for (const gguf::TensorInfo& t : file.tensors()) {
    Stats& s = by_type[std::string(quant::TypeName(t.type))];
    ++s.tensors;
    s.parameters += static_cast<uint64_t>(t.n_elements);
    s.bytes += t.n_bytes;
    parameters += static_cast<uint64_t>(t.n_elements);
  }
  info.set_parameter_count(parameters);
  std::vector<std::pair<std::string, Stats>> sorted(by_type.begin(), by_type.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.bytes > b.second.bytes; });
  for (const auto& [name, s] : sorted) {
    v1::TensorTypeStats* t = info.add_tensor_types();
    t->set_type(name);
    t->set_tensors(s.tensors);
    t->set_parameters(s.parameters);
    t->set_bytes(s.bytes);
  }
  info.set_context_length(static_cast<uint32_t>(model.config().context_length));
  info.set_vocab_size(static_cast<uint32_t>(model.vocab_size()));
  if (model.chat_template() != nullptr) info.set_chat_template(model.chat_template()->source());
  for (int32_t id : model.eog_ids()) info.add_eos_token_ids(id);
  v1::Capabilities* caps = info.mutable_capabilities();
  caps->set_chat(model.chat_template() != nullptr);
  caps->set_tools(model.supports_tools());
  caps->set_reasoning(model.supports_reasoning());
  caps->set_vision(false);
  info.set_file_size_bytes(file.file_size());
  return info;
}

}  // namespace qwen::service

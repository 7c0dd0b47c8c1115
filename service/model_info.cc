#include "service/model_info.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "inference/model/layout.h"
#include "inference/quant/types.h"

namespace qwen::service {

std::string FileTypeName(uint32_t file_type) {
  // llama.cpp's llama_ftype numbering (gaps are retired types).
  struct Name {
    uint32_t id;
    const char* name;
  };
  static constexpr Name kNames[] = {
      {0, "F32"},      {1, "F16"},      {2, "Q4_0"},       {3, "Q4_1"},    {7, "Q8_0"},
      {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},      {11, "Q3_K_S"}, {12, "Q3_K_M"},
      {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"},    {16, "Q5_K_S"}, {17, "Q5_K_M"},
      {18, "Q6_K"},    {19, "IQ2_XXS"}, {20, "IQ2_XS"},    {21, "Q2_K_S"}, {22, "IQ3_XS"},
      {23, "IQ3_XXS"}, {24, "IQ1_S"},   {25, "IQ4_NL"},    {26, "IQ3_S"},  {27, "IQ3_M"},
      {28, "IQ2_S"},   {29, "IQ2_M"},   {30, "IQ4_XS"},    {31, "IQ1_M"},  {32, "BF16"},
      {36, "TQ1_0"},   {37, "TQ2_0"},   {38, "MXFP4_MOE"},
  };
  for (const Name& n : kNames) {
    if (n.id == file_type) return n.name;
  }
  return absl::StrCat("unknown (", file_type, ")");
}

v1::GetModelInfoResponse StaticModelInfo(const TextModel& model, const std::string& fallback_name) {
  v1::GetModelInfoResponse info;
  const gguf::GgufFile& file = model.file();
  info.set_name(model.config().name.empty() ? fallback_name : model.config().name);
  info.set_file_layout(std::string(model::LayoutName(model.config().layout)));
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
  caps->set_vision(model.vision() != nullptr);
  caps->set_mtp(model.config().n_nextn > 0);
  caps->set_video(model.supports_video());
  if (const vision::VisionEncoder* v = model.vision(); v != nullptr) {
    v1::VisionInfo* vi = info.mutable_vision();
    const gguf::GgufFile& mf = *model.vision_file();
    if (auto name = mf.GetString("general.name"); name.ok()) vi->set_name(std::string(*name));
    vi->set_file_size_bytes(mf.file_size());
    uint64_t n = 0;
    for (const gguf::TensorInfo& t : mf.tensors()) n += static_cast<uint64_t>(t.n_elements);
    vi->set_parameter_count(n);
    vi->set_projection_dim(static_cast<uint32_t>(v->projection_dim()));
    vi->set_patch_size(static_cast<uint32_t>(v->config().patch_size));
    vi->set_spatial_merge_size(static_cast<uint32_t>(v->config().spatial_merge_size));
    vi->set_min_pixels(static_cast<uint64_t>(model.vision_options().preprocess.min_pixels));
    vi->set_max_pixels(static_cast<uint64_t>(model.vision_options().preprocess.max_pixels));
    if (model.supports_video()) {
      const video::VideoSettings& s = model.vision_options().video;
      v1::VideoSupport* vs = vi->mutable_video();
      vs->set_default_fps(static_cast<float>(s.defaults.fps));
      vs->set_max_fps(static_cast<float>(s.max_fps));
      vs->set_max_frames(static_cast<uint32_t>(s.defaults.max_frames));
      vs->set_min_pixels(static_cast<uint64_t>(s.defaults.min_pixels));
      vs->set_max_pixels(static_cast<uint64_t>(s.defaults.max_pixels));
      vs->set_max_bytes(static_cast<uint64_t>(s.limits.max_bytes));
      vs->set_max_duration_seconds(s.limits.max_duration_seconds);
      vs->set_max_frame_pixels(static_cast<uint64_t>(s.limits.max_frame_pixels));
      vs->set_max_source_frames(static_cast<uint64_t>(s.limits.max_frames));
      for (absl::string_view c : video::AcceptedContainers()) vs->add_containers(std::string(c));
      for (absl::string_view c : video::AcceptedCodecs()) vs->add_codecs(std::string(c));
    }
  }
  info.set_file_size_bytes(file.file_size());
  return info;
}

}  // namespace qwen::service

// The static part of GetModelInfo: what the model file says about itself.
#ifndef QWEN_SERVICE_MODEL_INFO_H_
#define QWEN_SERVICE_MODEL_INFO_H_

#include <cstdint>
#include <string>

#include "qwen/v1/qwen.pb.h"
#include "service/text_model.h"

namespace qwen::service {

// llama.cpp's name of a general.file_type value ("Q3_K_M"), or "unknown (N)".
std::string FileTypeName(uint32_t file_type);

// Fills everything but `serving` and slot_context_length. Pure function of the file, except
// that `fallback_name` names the model when the file has no general.name (Ollama's files).
v1::GetModelInfoResponse StaticModelInfo(const TextModel& model,
                                         const std::string& fallback_name = "");

}  // namespace qwen::service

#endif  // QWEN_SERVICE_MODEL_INFO_H_

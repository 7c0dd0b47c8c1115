// The front end's view of the model: metadata, tokenizer and chat template, no weights.
#ifndef QWEN_SERVICE_TEXT_MODEL_H_
#define QWEN_SERVICE_TEXT_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/chat/chat_template.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/config.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/video/video.h"
#include "inference/vision/vision.h"

namespace qwen::service {

// Everything the front end needs to turn requests into token ids and tokens back into text.
// It maps the same GGUF file as the workers (read-only and shared, so the pages exist once) but
// reads only the metadata: the weight pages are never touched here.
//
// With an mmproj file it also holds the vision tower (for its configuration: the front end
// plans image grids and counts image tokens, the workers encode).
//
// Immutable after Load() and thread-safe.
class TextModel {
 public:
  struct VisionOptions {
    std::string mmproj_path;  // empty: no image input
    vision::PreprocessOptions preprocess;
    // What an uploaded image may be before it is decoded (--max_image_bytes,
    // --max_image_megapixels).
    vision::DecodeLimits decode;
    // How videos are sampled and what they may be (the --video_* flags).
    video::VideoSettings video;
  };

  // Opens the file and builds the tokenizer and (when the file has one) the chat template.
  // Errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<TextModel>> Load(const std::string& path,
                                                         const VisionOptions& vision = {});

  const gguf::GgufFile& file() const { return *file_; }
  const std::string& path() const { return path_; }
  const model::ModelConfig& config() const { return config_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  // Null when the file has no tokenizer.chat_template.
  const chat::ChatTemplate* chat_template() const { return chat_template_.get(); }
  // Tokens that end generation unless the request says ignore_eos.
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }
  int32_t vocab_size() const { return tokenizer_->vocab_size(); }
  // The template renders tools / the model reasons in <think> blocks.
  bool supports_tools() const { return supports_tools_; }
  bool supports_reasoning() const { return supports_reasoning_; }

  // The vision tower, or null when the server runs without --mmproj.
  const vision::VisionEncoder* vision() const { return vision_.get(); }
  const VisionOptions& vision_options() const { return vision_options_; }
  const gguf::GgufFile* vision_file() const { return vision_file_.get(); }
  // With vision(): the image marker tokens.
  const multimodal::ImageTokenIds& image_tokens() const { return image_tokens_; }
  // Video input works: a vision tower and a vocabulary with <|video_pad|>.
  bool supports_video() const { return vision_ != nullptr && image_tokens_.video_pad >= 0; }

 private:
  TextModel() = default;

  std::string path_;
  std::shared_ptr<const gguf::GgufFile> file_;
  model::ModelConfig config_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<chat::ChatTemplate> chat_template_;
  std::vector<int32_t> eog_ids_;
  bool supports_tools_ = false;
  bool supports_reasoning_ = false;
  std::unique_ptr<vision::VisionEncoder> vision_;
  std::shared_ptr<const gguf::GgufFile> vision_file_;
  VisionOptions vision_options_;
  multimodal::ImageTokenIds image_tokens_;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_TEXT_MODEL_H_

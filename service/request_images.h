// Images of a request: where their bytes are (by value or a data: URL; the server never fetches
// a URL), their MIME type, their size from the header, their place and tokens in the prompt, and
// the key (SHA-256) under which a worker may reuse their state.
#ifndef QWEN_SERVICE_REQUEST_IMAGES_H_
#define QWEN_SERVICE_REQUEST_IMAGES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/model/model.h"
#include "inference/vision/vision.h"
#include "qwen/v1/qwen.pb.h"
#include "service/text_model.h"

namespace qwen::service {

// An image of a request, where the request carries it.
struct ImagePart {
  const v1::Image* image = nullptr;
  std::string field;  // "chat.messages[0].parts[1].image"
};

// An image checked, measured from its header and placed in the prompt.
struct PlacedImage {
  std::string bytes;  // the encoded file
  std::string field;
  int width = 0;
  int height = 0;
  vision::ImageGrid grid;
  model::ImageSpan span;  // its tokens in the prompt
};

// The encoded bytes of an image given by value or as a base64 data: URL (any other URL is
// INVALID_ARGUMENT: the server never fetches), with mime_type (when given) checked against the
// URL's and the bytes' own format.
absl::StatusOr<std::string> ImageBytes(const v1::Image& image, const std::string& field);

// Resolves the images (ImageBytes), reads each one's header (INVALID_ARGUMENT naming its field
// when it is not a JPEG, PNG or WebP within the model's decode limits; the pixels are decoded by
// the worker), plans its grid and expands the k-th <|image_pad|> of `ids` to its tokens.
// FAILED_PRECONDITION when the server has no vision model (--mmproj).
absl::StatusOr<std::vector<PlacedImage>> PlaceImages(const std::vector<ImagePart>& images,
                                                     const TextModel& model,
                                                     std::vector<int32_t>* ids,
                                                     absl::string_view ids_field);

// Identifies an image's content for state reuse: hex SHA-256 of its file and grid.
std::string ImageKey(const PlacedImage& image);

// The public description of placed images.
void DescribeImages(const std::vector<PlacedImage>& images,
                    google::protobuf::RepeatedPtrField<v1::ImageTokens>* out);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REQUEST_IMAGES_H_

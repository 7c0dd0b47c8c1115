#include "service/request_images.h"

#include <openssl/evp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/vision/image.h"
#include "service/data_url.h"
#include "service/field_checks.h"

namespace qwen::service {

absl::StatusOr<std::string> ImageBytes(const v1::Image& image, const std::string& field) {
  ASSIGN_OR_RETURN(DataUrl media, MediaBytes(image.data(), image.url(), image.mime_type(), field,
                                             "data:image/png;base64,..."));
  const std::string& mime = media.mime_type;
  if (!mime.empty()) {
    const std::string m = absl::AsciiStrToLower(mime);
    const char* want = m == "image/jpeg" || m == "image/jpg" ? "jpeg"
                       : m == "image/png"                    ? "png"
                       : m == "image/webp"                   ? "webp"
                                                             : nullptr;
    if (want == nullptr) {
      return FieldError(absl::StrCat(field, ".mime_type"),
                        absl::StrCat("\"", mime, "\" is not image/jpeg, image/png or image/webp"));
    }
    const absl::string_view sniffed = vision::SniffImageFormat(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(media.bytes.data()), media.bytes.size()));
    if (!sniffed.empty() && sniffed != want) {
      return FieldError(absl::StrCat(field, ".mime_type"),
                        absl::StrCat("says ", mime, " but the data is ", sniffed));
    }
  }
  return std::move(media.bytes);
}

absl::StatusOr<std::vector<PlacedImage>> PlaceImages(const std::vector<ImagePart>& images,
                                                     const TextModel& model,
                                                     std::vector<int32_t>* ids,
                                                     absl::string_view ids_field) {
  std::vector<PlacedImage> placed;
  if (images.empty()) return placed;
  const vision::VisionEncoder* encoder = model.vision();
  if (encoder == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(images[0].field,
                     ": this server takes no images (it runs without a vision model; start it "
                     "with --mmproj)"));
  }
  std::vector<vision::ImageGrid> grids;
  for (const ImagePart& part : images) {
    PlacedImage p;
    p.field = part.field;
    ASSIGN_OR_RETURN(p.bytes, ImageBytes(*part.image, part.field));
    // Only the header is read here, on a gRPC thread: the size is all the prompt needs, and
    // the limits (bytes, pixels) are checked from it. The worker decodes the pixels when it
    // encodes the image, and refuses a corrupt body then (INVALID_ARGUMENT naming the field).
    ASSIGN_OR_RETURN(
        vision::ImageInfo info,
        vision::ReadImageInfo(
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.bytes.data()), p.bytes.size()),
            model.vision_options().decode, part.field));
    p.width = info.width;
    p.height = info.height;
    absl::StatusOr<vision::ImageGrid> grid = vision::PlanGrid(
        info.width, info.height, encoder->config(), model.vision_options().preprocess);
    if (!grid.ok()) return FieldError(part.field, grid.status().message());
    p.grid = *grid;
    grids.push_back(*grid);
    placed.push_back(std::move(p));
  }
  ASSIGN_OR_RETURN(
      std::vector<model::ImageSpan> spans,
      multimodal::ExpandImagePads(*ids, model.image_tokens().image_pad, grids, ids_field));
  for (size_t k = 0; k < placed.size(); ++k) placed[k].span = spans[k];
  return placed;
}

std::string ImageKey(const PlacedImage& image) {
  const std::string grid = absl::StrCat("|", image.grid.patch_rows, "x", image.grid.patch_cols);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, image.bytes.data(), image.bytes.size());
  EVP_DigestUpdate(ctx, grid.data(), grid.size());
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

void DescribeImages(const std::vector<PlacedImage>& images,
                    google::protobuf::RepeatedPtrField<v1::ImageTokens>* out) {
  for (const PlacedImage& p : images) {
    v1::ImageTokens* t = out->Add();
    t->set_token_offset(static_cast<uint32_t>(p.span.offset));
    t->set_tokens(static_cast<uint32_t>(p.grid.n_tokens()));
    t->set_positions(static_cast<uint32_t>(multimodal::ImagePositions(p.grid)));
    t->set_rows(static_cast<uint32_t>(p.grid.rows()));
    t->set_cols(static_cast<uint32_t>(p.grid.cols()));
    t->set_width(static_cast<uint32_t>(p.width));
    t->set_height(static_cast<uint32_t>(p.height));
  }
}

}  // namespace qwen::service

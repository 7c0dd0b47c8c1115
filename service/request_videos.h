// Videos of a request: where their bytes are (by value or a data: URL; the server never fetches
// a URL), how the server's settings bound what a request may ask, what probing them says, their
// frame pairs' place and tokens in the prompt, and how the worker is told to encode them.
#ifndef QWEN_SERVICE_REQUEST_VIDEOS_H_
#define QWEN_SERVICE_REQUEST_VIDEOS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/model/model.h"
#include "inference/video/video.h"
#include "inference/vision/image.h"
#include "qwen/v1/qwen.pb.h"
#include "qwen/worker/v1/worker.pb.h"
#include "service/text_model.h"

namespace qwen::service {

// A video of a request, where the request carries it.
struct VideoPart {
  const v1::Video* video = nullptr;
  std::string field;  // "chat.messages[0].parts[1].video"
};

// A video checked, probed (a file) or measured (client frames), planned and placed.
struct PlacedVideo {
  std::string field;
  std::string bytes;                  // the file; empty with client frames
  std::vector<std::string> frames;    // client frames: the encoded images
  std::vector<double> frame_times;    // and their times
  video::VideoOptions options;        // the request's, within the server's maxima
  video::VideoLimits limits;          // the server's
  vision::DecodeLimits frame_limits;  // the server's, on each client frame (as on images)
  video::VideoInfo info;              // frame size, frames and duration of the file (or frames)
  video::VideoPlan plan;
  std::vector<model::ImageSpan> pairs;  // each frame pair's tokens in the prompt
};

// The HTTP API's hook: a video_url part ({"url": "data:video/mp4;base64,..."}) as the gRPC
// API's Video, with its MIME type checked (INVALID_ARGUMENT naming `field` otherwise).
absl::StatusOr<v1::Video> VideoFromDataUrl(absl::string_view url, absl::string_view field);

// The encoded file of a video given by value or as a base64 data: URL, its mime_type (when
// given) checked against the URL's and against the container the bytes hold.
absl::StatusOr<std::string> VideoBytes(const v1::Video& video, const std::string& field);

// Resolves each video (bytes, data: URL or frames), checks the request's fps, max_frames and
// pixel bounds against the server's settings, probes the file (demuxing only; INVALID_ARGUMENT
// naming the field for a container, codec or file the server does not take, each limit by
// name) or reads the frames' headers, and plans its frames as the model's processor does.
// FAILED_PRECONDITION when the server has no vision model or the vocabulary no <|video_pad|>.
absl::StatusOr<std::vector<PlacedVideo>> PlanVideos(const std::vector<VideoPart>& parts,
                                                    const TextModel& model);

// The prompt text with each video's placeholder replaced by its timestamped frame pairs
// (multimodal::ExpandVideoText).
absl::StatusOr<std::string> ExpandVideoPlaceholders(const std::string& prompt,
                                                    const std::vector<PlacedVideo>& videos,
                                                    absl::string_view field);

// After tokenization of the expanded text and the expansion of the image placeholders: widens
// each pair's <|video_pad|> to its tokens, sets every video's `pairs`, and moves the image
// spans in `images` (already widened, offsets of the text before this step) past the pairs that
// precede them.
absl::Status PlaceVideoTokens(std::vector<PlacedVideo>* videos, const TextModel& model,
                              std::vector<int32_t>* ids, std::vector<model::ImageSpan*> images,
                              absl::string_view field);

// Identifies a video's content and plan for state and embedding reuse: hex SHA-256 of its file
// (or frames and times), the sampled frames and the grid. Pair k is "<key>#<k>".
std::string VideoKey(const PlacedVideo& video);

// Tokens the video's frame pairs take.
int64_t VideoTokenCount(const PlacedVideo& video);

// The public description of placed videos.
void DescribeVideos(const std::vector<PlacedVideo>& videos,
                    google::protobuf::RepeatedPtrField<v1::VideoTokens>* out);

// What the worker needs to encode the video (worker.proto Video).
void ToWorkerVideo(const PlacedVideo& video, worker::v1::Video* out);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REQUEST_VIDEOS_H_

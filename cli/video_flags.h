// Video input flags of `qwen serve` (defaults and maxima of a request's sampling, limits on the
// files) and `qwen generate` (the same, for its --video files), defined once.
#ifndef QWEN_CLI_VIDEO_FLAGS_H_
#define QWEN_CLI_VIDEO_FLAGS_H_

#include "inference/video/video.h"

namespace qwen::cli {

// The flags' values. Their consistency is checked where they are used (TextModel::Load for
// the server, the planning itself for `qwen generate`).
video::VideoSettings VideoSettingsFromFlags();

}  // namespace qwen::cli

#endif  // QWEN_CLI_VIDEO_FLAGS_H_

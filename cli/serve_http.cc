// `qwen serve` flags of the OpenAI-compatible HTTP API (service/http_front_end.h), kept apart
// from cli/serve.cc.
#include <string>

#include "absl/flags/flag.h"
#include "cli/serve_limits.h"

ABSL_FLAG(int32_t, http_port, 0,
          "Also serve the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models, /health) "
          "on this port of --host, with the gRPC port's TLS, tokens, limits, queue and workers "
          "(scripts/run and the Helm chart use 8080). 0: off; -1: any free port (the log says "
          "which).");
ABSL_FLAG(std::string, served_model_name, "",
          "The model's id in the HTTP API (/v1/models and the `model` of requests). Default: the "
          "Ollama name given to --model, else the file's name without .gguf.");

namespace qwen::cli {

void ApplyServeHttpFlags(service::FrontEndOptions* o) {
  o->http_port = absl::GetFlag(FLAGS_http_port);
  o->served_model_name = absl::GetFlag(FLAGS_served_model_name);
}

}  // namespace qwen::cli

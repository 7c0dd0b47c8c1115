#include "cli/serve_limits.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/serving_flags.h"
#include "service/limits.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the public port; with --tls_key, the port speaks TLS only.");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key of --tls_cert (read once at start-up; keep it mode 0600).");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate signed by it (mutual TLS). Needs "
          "--tls_cert and --tls_key.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of accepted bearer tokens, one per line ('#' comments and blank lines skipped). "
          "Set: every call needs the metadata \"authorization: Bearer <token>\" or gets "
          "UNAUTHENTICATED.");
ABSL_FLAG(bool, auth_exempt_probes, true,
          "With --auth_tokens_file: grpc.health.v1.Health and server reflection need no token "
          "(Kubernetes probes, grpcurl list/describe).");
ABSL_FLAG(int64_t, max_message_bytes, qwen::service::kDefaultMaxMessageBytes,
          "Largest request message: a larger one gets INVALID_ARGUMENT (beyond twice this, at "
          "least 1 MiB more, the transport refuses it unread with RESOURCE_EXHAUSTED).");
ABSL_FLAG(int32_t, max_concurrent_streams, qwen::service::kDefaultMaxConcurrentStreams,
          "Calls one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_"
          "STREAMS); further calls wait in the client until one ends.");
ABSL_FLAG(int64_t, max_image_bytes, 20 << 20,
          "Largest encoded image (JPEG, PNG, WebP) a request may carry, in bytes (default 20 "
          "MiB). A request message is also bounded by --max_message_bytes, so raise both for "
          "large images.");
ABSL_FLAG(double, max_image_megapixels, 50,
          "Largest image a request may carry, in millions of pixels of the image as sent (before "
          "it is resized to --image_max_pixels): decoding one costs 3 bytes a pixel, 150 MB at "
          "50. Checked from the image's header, before anything is decoded.");
ABSL_FLAG(int32_t, max_tools, 64, "Tools one chat request may declare.");
ABSL_FLAG(int32_t, max_stop_strings, 16, "Stop strings one request may set.");
ABSL_FLAG(std::string, worker_memory_limit, "",
          "Cap on each worker's private memory (heap, KV cache, stacks; not the shared weights), "
          "set with setrlimit(RLIMIT_DATA), e.g. 6G or 512M. It counts the KV cache of every "
          "slot's full context from start-up (reserved address space), so it must exceed "
          "slots x (state + KV per token x ctx_size) + overhead (--check_config says so). A worker "
          "over it exits and is restarted like a crash. Empty: no cap.");

namespace qwen::cli {
namespace {

// "512M", "6G", "1048576" -> bytes; -1 when it does not parse.
int64_t ParseBytes(std::string text) {
  text = std::string(absl::StripAsciiWhitespace(text));
  if (text.empty()) return 0;
  int64_t scale = 1;
  const char last = absl::ascii_toupper(text.back());
  if (last == 'K' || last == 'M' || last == 'G' || last == 'T') {
    scale = last == 'K'   ? int64_t{1} << 10
            : last == 'M' ? int64_t{1} << 20
            : last == 'G' ? int64_t{1} << 30
                          : int64_t{1} << 40;
    text.pop_back();
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(text, &n) || n < 0 || n > (int64_t{1} << 50)) return -1;
  return n * scale;
}

}  // namespace

absl::Status ApplyServeLimitFlags(service::FrontEndOptions* o) {
  o->tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  o->tls.key_file = absl::GetFlag(FLAGS_tls_key);
  o->tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o->auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  o->auth_exempt_probes = absl::GetFlag(FLAGS_auth_exempt_probes);
  o->max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o->max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  o->limits.max_tools = absl::GetFlag(FLAGS_max_tools);
  o->limits.max_stop_strings = absl::GetFlag(FLAGS_max_stop_strings);
  const int64_t image_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  o->image_limits.max_bytes = image_bytes > 0 ? static_cast<size_t>(image_bytes) : 0;
  const double megapixels = absl::GetFlag(FLAGS_max_image_megapixels);
  if (!(megapixels > 0 && megapixels <= 1e6)) {
    return absl::InvalidArgumentError("--max_image_megapixels must be in (0, 1000000]");
  }
  o->image_limits.max_pixels = static_cast<int64_t>(megapixels * 1e6);
  o->pool.allow_fault_injection = absl::GetFlag(FLAGS_testing_allow_fault_injection);
  const int64_t memory = ParseBytes(absl::GetFlag(FLAGS_worker_memory_limit));
  if (memory < 0) {
    return absl::InvalidArgumentError(
        "--worker_memory_limit must be a size such as 6G, 512M or a number of bytes");
  }
  if (memory > 0 && memory < (int64_t{16} << 20)) {
    return absl::InvalidArgumentError("--worker_memory_limit must be at least 16M");
  }
  o->pool.memory_limit_bytes = memory;
  return absl::OkStatus();
}

}  // namespace qwen::cli

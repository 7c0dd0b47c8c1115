// The command line of `qwen client`.
//
// The client parses its own flags rather than using Abseil's: the `qwen` program's Abseil flags
// are one global set, in which generate, parse and the common flags already own several of the
// client's names (--prompt, --chat, --tools, --temperature, --max_tokens, --json ...) with other
// types or defaults. Here a sampling flag that is not given is not sent, so the server's
// default applies.
#ifndef QWEN_CLI_CLIENT_FLAGS_H_
#define QWEN_CLI_CLIENT_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qwen::cli {

enum class ReasoningMode { kShow, kDim, kHide };

struct ClientOptions {
  // Connection.
  std::string server = "localhost:50051";
  bool tls = false;             // TLS with the system's roots (implied by the other tls_ flags)
  std::string tls_ca;           // PEM file of the roots to trust instead
  std::string tls_cert;         // PEM client certificate (mTLS), with tls_key
  std::string tls_key;          // PEM private key of tls_cert
  std::string tls_server_name;  // name to verify the server's certificate against
  std::string auth_token;       // sent as `authorization: Bearer <token>`
  std::string auth_token_file;  // the token in a file (surrounding whitespace dropped)
  absl::Duration timeout = absl::ZeroDuration();              // per call; 0: none
  std::vector<std::pair<std::string, std::string>> metadata;  // extra KEY=VALUE metadata
  std::string request_id;

  // What to generate.
  std::string prompt;
  bool chat = false;
  std::string system;
  std::string tools;  // JSON file
  bool no_thinking = false;
  std::vector<std::string> images;  // with --chat: image files sent with the first user message
  std::vector<std::string> videos;  // with --chat: video files sent with the first user message
  ReasoningMode reasoning = ReasoningMode::kDim;

  // Sampling and stopping: sent only when given.
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<uint64_t> seed;
  std::optional<double> repetition_penalty;
  std::optional<double> presence_penalty;
  std::optional<double> frequency_penalty;
  std::vector<std::string> stop;
  bool ignore_eos = false;

  // Output.
  bool json = false;
  bool help = false;
};

// Parses the arguments after `qwen client` (argv[0] is skipped). Flags are --name=value or
// --name value (--name alone for a switch), with hyphens or underscores in the name.
// INVALID_ARGUMENT naming the flag for an unknown flag, a bad value or a stray argument.
absl::StatusOr<ClientOptions> ParseClientFlags(int argc, char** argv);

// The --help text.
std::string ClientUsage();

}  // namespace qwen::cli

#endif  // QWEN_CLI_CLIENT_FLAGS_H_

// `qwen health`: one grpc.health.v1 Check against a server, for probes (the Helm chart's exec
// probes when the public port speaks TLS: they ask the plaintext loopback port of
// `qwen serve --health_port`).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/flags_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, service, "",
          "The grpc.health.v1 service name to ask about (qwen serve: \"qwen.v1.Qwen\", or \"\" for "
          "the server as a whole).");
ABSL_FLAG(absl::Duration, probe_timeout, absl::Seconds(4),
          "Deadline of the check, connection included.");

namespace qwen::cli {

int RunHealth(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "health",
      "qwen health [--service NAME] [--probe_timeout 4s] HOST:PORT\n\n"
      "Asks a gRPC server's health service (plaintext) whether NAME is serving. Exit status 0\n"
      "when SERVING; 1 when NOT_SERVING, unknown or unreachable (one line on stderr says which);\n"
      "2 for bad usage.",
      argc, argv);
  if (args.size() != 1) {
    std::fprintf(stderr, "qwen health: give one HOST:PORT (e.g. 127.0.0.1:50052)\n");
    return 2;
  }
  const absl::Duration timeout = absl::GetFlag(FLAGS_probe_timeout);
  if (timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr, "qwen health: --probe_timeout must be positive\n");
    return 2;
  }
  const std::string service = absl::GetFlag(FLAGS_service);
  auto channel = grpc::CreateChannel(args[0], grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // Wait for the connection within the deadline instead of failing at once while it is made.
  ctx.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, req, &resp);
  const std::string what = absl::StrCat(args[0], " \"", service, "\"");
  if (!st.ok()) {
    std::fprintf(stderr, "qwen health: %s: %s: %s\n", what.c_str(),
                 st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? "no answer in time"
                                                                        : "check failed",
                 st.error_message().c_str());
    return 1;
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::fprintf(stderr, "qwen health: %s: %s\n", what.c_str(), status.c_str());
    return 1;
  }
  std::printf("%s: %s\n", what.c_str(), status.c_str());
  return 0;
}

}  // namespace qwen::cli

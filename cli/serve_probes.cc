// `qwen serve` flags for running under an orchestrator: the loopback health port for probes and
// the reloading of credential files. Kept apart from cli/serve.cc.
#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/serve_limits.h"

ABSL_FLAG(int32_t, health_port, -1,
          "Also serve grpc.health.v1 in plaintext on 127.0.0.1:N (only the machine's or pod's own "
          "processes reach it), for probes that cannot speak the public port's TLS or send a "
          "token: `qwen health 127.0.0.1:N --service qwen.v1.Qwen`. -1: none; 0: any free port "
          "(the log says which).");
ABSL_FLAG(absl::Duration, credentials_reload_interval, absl::Seconds(10),
          "How often --tls_cert, --tls_key, --tls_client_ca and --auth_tokens_file are read again: "
          "a changed certificate serves new connections and changed tokens check new calls, "
          "without a restart and without ending open streams. 0: read once at start-up.");

namespace qwen::cli {

void ApplyServeProbeFlags(service::FrontEndOptions* o) {
  o->health_port = absl::GetFlag(FLAGS_health_port);
  o->credentials_reload_interval = absl::GetFlag(FLAGS_credentials_reload_interval);
}

}  // namespace qwen::cli

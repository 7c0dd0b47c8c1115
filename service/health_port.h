// A plaintext grpc.health.v1 server on the loopback interface, beside the public server.
//
// When the public port speaks TLS (or wants a token for health), the kubelet's native gRPC probes
// cannot use it; the pod's probes then run `qwen health` inside the container against this port
// instead. It listens on 127.0.0.1 only, so nothing outside the pod's network namespace reaches
// it, and serves the health service (plus server reflection, which gRPC adds to every server of
// a process that enables it), no API, no token, no TLS.
#ifndef QWEN_SERVICE_HEALTH_PORT_H_
#define QWEN_SERVICE_HEALTH_PORT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace qwen::service {

// Mirrors the public server's serving status. Thread-safe.
class LocalHealthServer {
 public:
  // Listens on 127.0.0.1:port (0: any free port) and reports NOT_SERVING for "" and every name in
  // `services` until SetServing(true). UNAVAILABLE naming the flag when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<LocalHealthServer>> Start(
      int port, std::vector<std::string> services);
  ~LocalHealthServer();

  int port() const { return port_; }
  void SetServing(bool serving);
  // NOT_SERVING for good, ends Watch streams and stops the server (within `deadline`).
  void Shutdown(absl::Duration deadline);

 private:
  LocalHealthServer() = default;

  std::vector<std::string> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_HEALTH_PORT_H_

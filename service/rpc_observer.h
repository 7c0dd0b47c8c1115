// A server interceptor that gives every unary call of the public server the same account a
// Generate stream gets from GenerateCall: one request log line and the request counter.
#ifndef QWEN_SERVICE_RPC_OBSERVER_H_
#define QWEN_SERVICE_RPC_OBSERVER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace qwen::service {

class Metrics;

// The method label of a full gRPC method name: "Tokenize" for "/qwen.v1.Qwen/Tokenize",
// "unknown" for a qwen.v1.Qwen method that does not exist (clients choose the path: unbounded
// label values would grow the metrics without limit), and "grpc.health.v1.Health/Check" for
// other services (logged at debug level only, never a metric label).
std::string MethodLabel(absl::string_view full_method);

// Creates one interceptor per call. GenerateCall accounts for the Generate streams it handles;
// the interceptor accounts for a Generate call only when its request could not be parsed
// (gRPC then never calls the handler). When a call ends (the status is about to be sent) it writes
// the request line (component "request"; calls of other services, such as health checks and
// reflection, at debug level) and, for qwen.v1.Qwen methods, counts the call in
// qwen_requests_total. The request id is the client's x-request-id metadata or "req-<n>" from
// `request_counter` (shared with Generate), and is sent back as x-request-id initial metadata.
//
// Thread-safe; `metrics` (may be null) and `request_counter` must outlive the server.
class RpcObserverFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcObserverFactory(Metrics* metrics, std::atomic<uint64_t>* request_counter)
      : metrics_(metrics), request_counter_(request_counter) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  Metrics* const metrics_;
  std::atomic<uint64_t>* const request_counter_;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_RPC_OBSERVER_H_

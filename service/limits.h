// Explicit limits of the public server on what a request may hold, and the answer to a request
// that cannot even be parsed.
#ifndef QWEN_SERVICE_LIMITS_H_
#define QWEN_SERVICE_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/server_interceptor.h"

namespace qwen::service {

// Largest request message a client may send by default (--max_message_bytes): room for a
// prompt filling a 262,144-token context as text or ids, with tools, several times over.
inline constexpr int64_t kDefaultMaxMessageBytes = int64_t{8} << 20;
// Streams one HTTP/2 connection may have open at once by default (--max_concurrent_streams).
inline constexpr int kDefaultMaxConcurrentStreams = 100;

// The size gRPC itself refuses to receive (RESOURCE_EXHAUSTED, before parsing): twice
// `max_message_bytes`, at least 1 MiB more, at most 2 GiB - 1. Between the two, the request is
// parsed and refused with INVALID_ARGUMENT by CheckMessageSize, which names the limit; beyond
// it the bytes are never buffered.
int TransportMessageLimit(int64_t max_message_bytes);

// INVALID_ARGUMENT "request: N bytes is over the maximum message size of M bytes" when the
// message is larger than `max_message_bytes`. Thread-safe.
absl::Status CheckMessageSize(const google::protobuf::Message& request, int64_t max_message_bytes);

// Turns gRPC's answer to a request that does not parse (INTERNAL with no message) into
// INVALID_ARGUMENT naming the field when it can: proto3 strings must be UTF-8, and a string
// field that is not ("qwen.v1.GenerateRequest.prompt") is the usual cause. One interceptor per
// call of a method with a single request message, owned by gRPC; the factory is thread-safe.
class ParseErrorInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  ParseErrorInterceptorFactory();  // installs the protobuf log handler that names the field
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_LIMITS_H_

// The one place where absl::Status (used across module boundaries) and grpc::Status (on the
// wire) are translated into each other.
#ifndef QWEN_SERVICE_GRPC_STATUS_H_
#define QWEN_SERVICE_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace qwen::service {

// Same code, same message. The two code spaces are the canonical gRPC codes in both libraries;
// the mapping is written out so that neither side's numbering is relied on. A code unknown to
// gRPC becomes UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse, for statuses received from a worker.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_GRPC_STATUS_H_

// The one place where absl::Status (used across module boundaries) is translated into what the
// wire carries: grpc::Status for gRPC (both ways), and the HTTP status and error type for the
// OpenAI-compatible HTTP API.
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

// The HTTP status of an error and the `type` of its OpenAI error object:
//   INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE  400 invalid_request_error
//   UNAUTHENTICATED 401 authentication_error      PERMISSION_DENIED 403 permission_error
//   NOT_FOUND 404 not_found_error                 ALREADY_EXISTS, ABORTED 409 conflict_error
//   RESOURCE_EXHAUSTED 429 rate_limit_error (the queue is full; sent with Retry-After)
//   CANCELLED 499 (nginx's "client closed request": the client is gone and sees nothing)
//   UNIMPLEMENTED 501 not_implemented_error       UNAVAILABLE 503 service_unavailable_error
//   DEADLINE_EXCEEDED 504 timeout_error           others (INTERNAL, UNKNOWN, DATA_LOSS) 500
//                                                 server_error
// OK is 200. A body over the size limit is 413, decided by the HTTP layer before any status.
struct HttpError {
  int status;
  const char* type;
};
HttpError ToHttpError(absl::StatusCode code);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_GRPC_STATUS_H_

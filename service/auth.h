// Bearer-token authentication of the public gRPC server.
//
// Clients send `authorization: Bearer <token>`; the server holds the accepted tokens (one per
// line of --auth_tokens_file). gRPC's C++ server interceptors cannot end a call themselves, so
// the check is split in two:
// - AuthInterceptorFactory's interceptor runs before any handler of every call: it compares the
//   presented token with every accepted one in constant time and, when none matches, marks the
//   call (an entry in the call's received metadata that a client cannot use to its advantage:
//   the mark only ever denies). It also rewrites the final status of a marked call to
//   UNAUTHENTICATED and empties any message such a call would send, so that even handlers that
//   do not look at the mark (gRPC's built-in health and reflection services, when they are not
//   exempt) neither answer nor leak anything; marked streaming calls of those services are
//   cancelled at once.
// - The handlers of qwen.v1.Qwen call CheckAuthenticated() first and answer UNAUTHENTICATED
//   before doing any work.
#ifndef QWEN_SERVICE_AUTH_H_
#define QWEN_SERVICE_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/server_interceptor.h"

namespace qwen::service {

// The metadata entry the interceptor adds to a call whose token was refused. Public so that the
// tests can check that a client sending it gains nothing.
inline constexpr char kAuthDeniedMetadata[] = "x-qwen-auth-denied";

// Reads a token file: one token per line; surrounding spaces and tabs are dropped, and empty
// lines and lines starting with '#' are skipped. A token must be printable ASCII without spaces
// (it travels in an HTTP/2 header). INVALID_ARGUMENT naming the line for a bad token, NOT_FOUND
// or PERMISSION_DENIED when the file cannot be read, and INVALID_ARGUMENT when it holds no token.
absl::StatusOr<std::vector<std::string>> LoadAuthTokens(const std::string& path);

// Equality whose running time depends only on the length of `presented`, not on where it first
// differs from `expected` (nor on `expected`'s length): both are hashed (SHA-256, linear in the
// length) and the digests compared with OpenSSL's CRYPTO_memcmp, which has no early exit.
bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected);

// The accepted tokens and which methods need none. Thread-safe: SetTokens() may replace the
// tokens while calls are checked (a check sees the old set or the new one, never a mix).
class Authenticator {
 public:
  // `exempt_probes`: grpc.health.v1.Health and server reflection need no token.
  Authenticator(std::vector<std::string> tokens, bool exempt_probes);

  // The tokens from now on (the token file changed). Calls already admitted are not affected.
  void SetTokens(std::vector<std::string> tokens);

  // Whether the method ("/package.Service/Method") may be called without a token.
  bool IsExempt(absl::string_view method) const;
  // OK, or UNAUTHENTICATED saying what is wrong with the `authorization` header value(s). Every
  // accepted token is compared (no early exit), each in constant time.
  absl::Status Check(const std::vector<absl::string_view>& authorization_values) const;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<std::string>> tokens_ ABSL_GUARDED_BY(mu_);
  const bool exempt_probes_;
};

// Creates one interceptor per call (gRPC owns them). The authenticator must outlive the server.
class AuthInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AuthInterceptorFactory(const Authenticator* auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  const Authenticator* auth_;
};

// UNAUTHENTICATED when the interceptor refused this call's token, else OK. Thread-safe.
absl::Status CheckAuthenticated(const grpc::ServerContextBase& ctx);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_AUTH_H_

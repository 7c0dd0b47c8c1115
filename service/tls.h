// TLS of the public gRPC server: certificate and key, and optionally client certificates (mTLS).
#ifndef QWEN_SERVICE_TLS_H_
#define QWEN_SERVICE_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace qwen::service {

struct TlsOptions {
  std::string cert_file;       // PEM certificate chain (--tls_cert)
  std::string key_file;        // PEM private key (--tls_key)
  std::string client_ca_file;  // PEM CA bundle; set: clients must present a certificate it signs
  // > 0: the files are read again this often and a changed certificate, key or CA bundle is used
  // for new connections (established ones keep theirs), so that a renewed certificate (a mounted
  // Secret updated in place) needs no restart. 0: read once at start-up.
  int reload_interval_seconds = 0;
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// INVALID_ARGUMENT naming the flag for an incomplete set: a certificate without a key (or the
// reverse), a client CA without TLS. Reads no file.
absl::Status ValidateTlsOptions(const TlsOptions& options);

// The server credentials the options ask for: insecure when TLS is off. INVALID_ARGUMENT for an
// incomplete set (a certificate without a key, a client CA without TLS) or a file that is not
// PEM; NOT_FOUND / PERMISSION_DENIED for a file that cannot be read. Errors name the flag.
// The key file is read once, at start-up (the server may then drop the right to read it).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

}  // namespace qwen::service

#endif  // QWEN_SERVICE_TLS_H_

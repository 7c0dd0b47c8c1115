#include "service/tls.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "service/log.h"

namespace qwen::service {
namespace {

constexpr char kComponent[] = "tls";

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    absl::string_view must_contain) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(err));
    return err == EACCES ? absl::PermissionDeniedError(why) : absl::NotFoundError(why);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (!absl::StrContains(pem, "-----BEGIN ") || !absl::StrContains(pem, must_contain)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " is not a PEM file holding a ", must_contain));
  }
  return pem;
}

}  // namespace

absl::Status ValidateTlsOptions(const TlsOptions& o) {
  if (!o.enabled() && !o.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs TLS: set --tls_cert and --tls_key too");
  }
  if (o.enabled() && (o.cert_file.empty() || o.key_file.empty())) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: set both");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& o) {
  if (absl::Status st = ValidateTlsOptions(o); !st.ok()) return st;
  if (!o.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      o.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                               : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::StatusOr<std::string> cert = ReadPem("--tls_cert", o.cert_file, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls_key", o.key_file, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  struct stat st;
  if (stat(o.key_file.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    LogWarning(kComponent, absl::StrCat("--tls_key ", o.key_file,
                                        " is readable by every user of this machine; make it "
                                        "readable by the server's user only (chmod 600)"));
  }
  std::string ca_pem;
  if (!o.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--tls_client_ca", o.client_ca_file, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    ca_pem = std::move(*ca);
  }
  if (o.reload_interval_seconds > 0) {
    // gRPC's watcher reads the files now and every interval; each handshake uses the latest
    // certificate, key and CA bundle it read.
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        o.key_file, o.cert_file, o.client_ca_file,
        static_cast<unsigned int>(o.reload_interval_seconds));
    grpc::experimental::TlsServerCredentialsOptions tls(provider);
    tls.watch_identity_key_cert_pairs();
    if (!o.client_ca_file.empty()) tls.watch_root_certs();
    tls.set_cert_request_type(o.client_ca_file.empty()
                                  ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                  : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    return grpc::experimental::TlsServerCredentials(tls);
  }
  pair.cert_chain = std::move(*cert);
  pair.private_key = std::move(*key);
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.client_ca_file.empty()) ssl.pem_root_certs = std::move(ca_pem);
  return grpc::SslServerCredentials(ssl);
}

}  // namespace qwen::service

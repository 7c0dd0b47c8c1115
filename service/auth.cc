#include "service/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/grpc_status.h"
#include "service/log.h"

namespace qwen::service {
namespace {

constexpr char kComponent[] = "auth";
constexpr char kDeniedValue[] = "1";
constexpr char kBearer[] = "bearer ";

// Methods that Kubernetes probes and grpcurl's discovery use.
constexpr const char* kProbePrefixes[] = {
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
};

// At most one "refused" log line a second: a client hammering with bad tokens must not flood
// the log.
void LogRefusal(absl::string_view method, absl::string_view peer, absl::string_view why) {
  static std::atomic<int64_t> last_ms{0};
  const int64_t now = absl::ToUnixMillis(absl::Now());
  int64_t prev = last_ms.load();
  if (now - prev < 1000 || !last_ms.compare_exchange_strong(prev, now)) return;
  LogWarning(kComponent, absl::StrCat("refused ", method, " from ", peer, ": ", why,
                                      " (further refusals within a second are not logged)"));
}

class AuthInterceptor : public grpc::experimental::Interceptor {
 public:
  AuthInterceptor(const Authenticator* auth, grpc::experimental::ServerRpcInfo* info)
      : auth_(auth), info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      OnMetadata(methods->GetRecvInitialMetadata());
    }
    if (denied_) {
      if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
        // Whatever a handler that ignored the mark wanted to send becomes an empty message.
        grpc::ByteBuffer* buffer = methods->GetSerializedSendMessage();
        if (buffer != nullptr) {
          grpc::Slice empty;
          *buffer = grpc::ByteBuffer(&empty, 1);
        }
      }
      if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
        methods->ModifySendStatus(ToGrpcStatus(refusal_));
      }
    }
    methods->Proceed();
  }

 private:
  void OnMetadata(std::multimap<grpc::string_ref, grpc::string_ref>* md) {
    const absl::string_view method = info_->method();
    if (md == nullptr || auth_->IsExempt(method)) return;
    std::vector<absl::string_view> values;
    auto [begin, end] = md->equal_range("authorization");
    for (auto it = begin; it != end; ++it) {
      values.emplace_back(it->second.data(), it->second.size());
    }
    refusal_ = auth_->Check(values);
    if (refusal_.ok()) return;
    denied_ = true;
    md->emplace(grpc::string_ref(kAuthDeniedMetadata), grpc::string_ref(kDeniedValue));
    LogRefusal(method, info_->server_context()->peer(), refusal_.message());
    // Streaming handlers of gRPC's own services would not end by themselves (a health Watch runs
    // until the client leaves): cancel them now. qwen.v1.Qwen's handlers end marked calls with
    // UNAUTHENTICATED themselves.
    if (info_->type() != grpc::experimental::ServerRpcInfo::Type::UNARY &&
        !absl::StartsWith(method, "/qwen.v1.")) {
      info_->server_context()->TryCancel();
    }
  }

  const Authenticator* const auth_;
  grpc::experimental::ServerRpcInfo* const info_;
  bool denied_ = false;  // hooks of one call run one at a time
  absl::Status refusal_;  // UNAUTHENTICATED, why
};

}  // namespace

absl::StatusOr<std::vector<std::string>> LoadAuthTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    const std::string why =
        absl::StrCat("--auth_tokens_file: cannot read ", path, ": ", std::strerror(err));
    return err == EACCES ? absl::PermissionDeniedError(why) : absl::NotFoundError(why);
  }
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    LogWarning(kComponent, absl::StrCat("--auth_tokens_file ", path,
                                        " is readable by every user of this machine; make it "
                                        "readable by the server's user only (chmod 600)"));
  }
  std::vector<std::string> tokens;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty() || token.front() == '#') continue;
    for (char c : token) {
      if (c <= 0x20 || c >= 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrCat("--auth_tokens_file: line ", number,
                         " is not a token (printable ASCII without spaces)"));
      }
    }
    tokens.emplace_back(token);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file: ", path, " holds no token"));
  }
  return tokens;
}

bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected) {
  // Digests of equal length whatever the inputs' lengths, so that neither a length mismatch nor
  // the first differing byte shows in the time taken; CRYPTO_memcmp has no data-dependent branch.
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b);
  return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

Authenticator::Authenticator(std::vector<std::string> tokens, bool exempt_probes)
    : tokens_(std::make_shared<const std::vector<std::string>>(std::move(tokens))),
      exempt_probes_(exempt_probes) {}

void Authenticator::SetTokens(std::vector<std::string> tokens) {
  auto next = std::make_shared<const std::vector<std::string>>(std::move(tokens));
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(next);
}

bool Authenticator::IsExempt(absl::string_view method) const {
  if (!exempt_probes_) return false;
  for (const char* prefix : kProbePrefixes) {
    if (absl::StartsWith(method, prefix)) return true;
  }
  return false;
}

absl::Status Authenticator::Check(const std::vector<absl::string_view>& values) const {
  if (values.empty()) {
    return absl::UnauthenticatedError(
        "this server needs a bearer token: send the metadata \"authorization: Bearer <token>\"");
  }
  if (values.size() > 1) return absl::UnauthenticatedError("more than one authorization header");
  absl::string_view v = values[0];
  if (v.size() < sizeof(kBearer) - 1 ||
      !absl::EqualsIgnoreCase(v.substr(0, sizeof(kBearer) - 1), kBearer)) {
    return absl::UnauthenticatedError("the authorization header is not \"Bearer <token>\"");
  }
  const absl::string_view presented = absl::StripAsciiWhitespace(v.substr(sizeof(kBearer) - 1));
  std::shared_ptr<const std::vector<std::string>> tokens;
  {
    absl::MutexLock lock(&mu_);
    tokens = tokens_;
  }
  bool ok = false;
  for (const std::string& t : *tokens) ok |= ConstantTimeEquals(presented, t);
  if (!ok) return absl::UnauthenticatedError("the bearer token is not valid");
  return absl::OkStatus();
}

grpc::experimental::Interceptor* AuthInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new AuthInterceptor(auth_, info);
}

absl::Status CheckAuthenticated(const grpc::ServerContextBase& ctx) {
  if (ctx.client_metadata().count(kAuthDeniedMetadata) > 0) {
    return absl::UnauthenticatedError("the bearer token is missing or not valid");
  }
  return absl::OkStatus();
}

}  // namespace qwen::service

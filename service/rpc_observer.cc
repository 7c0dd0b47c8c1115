#include "service/rpc_observer.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "service/generate_call.h"
#include "service/grpc_status.h"
#include "service/metrics.h"
#include "service/request_log.h"

namespace qwen::service {
namespace {

using grpc::experimental::InterceptionHookPoints;

constexpr char kQwenPrefix[] = "/qwen.v1.Qwen/";
constexpr char kRequestIdKey[] = "x-request-id";

class RpcObserver : public grpc::experimental::Interceptor {
 public:
  RpcObserver(grpc::experimental::ServerRpcInfo* info, Metrics* metrics,
              std::atomic<uint64_t>* counter)
      : info_(info), metrics_(metrics), counter_(counter), arrival_(absl::Now()) {
    const absl::string_view method = info->method() != nullptr ? info->method() : "";
    qwen_method_ = absl::StartsWith(method, kQwenPrefix);
    generate_ = method == absl::StrCat(kQwenPrefix, "Generate");
    method_ = MethodLabel(method);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      if (auto* md = methods->GetRecvInitialMetadata(); md != nullptr) {
        auto it = md->find(kRequestIdKey);
        if (it != md->end()) request_id_.assign(it->second.data(), it->second.size());
        // The HTTP API's calls (Tokenize, Detokenize, and a Generate refused before it was
        // parsed) count under protocol "http"; GenerateCall decides its own calls' label.
        it = md->find(kProtocolMetadata);
        if (it != md->end() && it->second == "http" && info_->server_context() != nullptr &&
            IsInProcessPeer(info_->server_context()->peer())) {
          protocol_ = "http";
        }
      }
      if (request_id_.empty() && !generate_) NewRequestId();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA) &&
        qwen_method_ && !generate_ && !request_id_.empty()) {
      if (auto* md = methods->GetSendInitialMetadata(); md != nullptr) {
        md->emplace(kRequestIdKey, request_id_);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsed_ = true;  // no handler runs for this call
    }
    // GenerateCall accounts for the Generate calls that reached it.
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        (!generate_ || unparsed_)) {
      if (request_id_.empty()) NewRequestId();
      RequestSummary r;
      r.method = method_;
      r.request_id = request_id_;
      if (info_->server_context() != nullptr) r.peer = info_->server_context()->peer();
      r.status = FromGrpcStatus(methods->GetSendStatus());
      r.duration = absl::Now() - arrival_;
      // A Generate call counts in the duration histogram like every other (its count equals the
      // Generate calls), whether or not GenerateCall ever saw it.
      r.generate = generate_;
      r.protocol = protocol_;
      if (qwen_method_) {
        LogRequest(r);
        if (metrics_ != nullptr) metrics_->RecordRequest(r);
      } else if (LogEnabled(LogLevel::kDebug)) {
        Log(LogLevel::kDebug, "request",
            absl::StrCat(r.method, " ", StatusCodeName(r.status.code())), RequestLogFields(r));
      }
    }
    methods->Proceed();
  }

 private:
  void NewRequestId() { request_id_ = absl::StrCat("req-", counter_->fetch_add(1) + 1); }

  grpc::experimental::ServerRpcInfo* const info_;
  Metrics* const metrics_;
  std::atomic<uint64_t>* const counter_;
  const absl::Time arrival_;
  bool qwen_method_ = false;
  bool generate_ = false;
  bool unparsed_ = false;
  std::string method_;
  std::string request_id_;
  std::string protocol_ = "grpc";
};

}  // namespace

std::string MethodLabel(absl::string_view full_method) {
  if (absl::StartsWith(full_method, kQwenPrefix)) {
    static constexpr absl::string_view kMethods[] = {"Generate", "Tokenize", "Detokenize",
                                                     "RenderChat", "GetModelInfo"};
    const absl::string_view name = full_method.substr(sizeof(kQwenPrefix) - 1);
    for (absl::string_view m : kMethods) {
      if (name == m) return std::string(name);
    }
    return "unknown";
  }
  if (absl::StartsWith(full_method, "/")) full_method.remove_prefix(1);
  return std::string(full_method);
}

grpc::experimental::Interceptor* RpcObserverFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RpcObserver(info, metrics_, request_counter_);
}

}  // namespace qwen::service

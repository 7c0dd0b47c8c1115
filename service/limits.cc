#include "service/limits.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "service/grpc_status.h"
#include "service/log.h"

namespace qwen::service {
namespace {

// The last parse complaint protobuf logged on this thread. gRPC parses a request and runs the
// interceptors' POST_RECV_MESSAGE hooks on the same thread, one right after the other.
thread_local std::string last_parse_error;

void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  if (absl::StrContains(message, "invalid UTF-8")) {
    // "String field 'qwen.v1.GenerateRequest.prompt' contains invalid UTF-8 data when parsing a
    // protocol buffer. ..." — a client's mistake, answered to the client, not worth a log line.
    last_parse_error = message;
    return;
  }
  const LogLevel ours = level >= google::protobuf::LOGLEVEL_ERROR     ? LogLevel::kError
                        : level == google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarning
                                                                      : LogLevel::kInfo;
  Log(ours, "protobuf", absl::StrCat(filename, ":", line, ": ", message));
}

std::string DescribeParseError(const std::string& logged) {
  const size_t open = logged.find('\'');
  const size_t close = open == std::string::npos ? open : logged.find('\'', open + 1);
  if (close != std::string::npos && absl::StrContains(logged, "invalid UTF-8")) {
    return absl::StrCat(logged.substr(open + 1, close - open - 1),
                        ": is not valid UTF-8 (string fields must be; send token ids for "
                        "arbitrary bytes)");
  }
  return "request: the message does not parse as the method's request type (a string field "
         "that is not valid UTF-8, or bytes that are not a protobuf message)";
}

class ParseErrorInterceptor : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      if (methods->GetRecvMessage() == nullptr) {
        failed_ = true;
        why_ = DescribeParseError(last_parse_error);
      }
      last_parse_error.clear();
    }
    if (failed_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const absl::StatusCode code = FromGrpcStatus(methods->GetSendStatus()).code();
      if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnimplemented) {
        methods->ModifySendStatus(ToGrpcStatus(absl::InvalidArgumentError(why_)));
      }
    }
    methods->Proceed();
  }

 private:
  bool failed_ = false;  // hooks of one call run one at a time
  std::string why_;
};

}  // namespace

int TransportMessageLimit(int64_t max_message_bytes) {
  const int64_t limit = max_message_bytes + std::max<int64_t>(max_message_bytes, 1 << 20);
  return static_cast<int>(std::min<int64_t>(limit, std::numeric_limits<int>::max()));
}

absl::Status CheckMessageSize(const google::protobuf::Message& request, int64_t max_message_bytes) {
  const size_t bytes = request.ByteSizeLong();
  if (static_cast<int64_t>(bytes) > max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("request: ", bytes,
                                                   " bytes is over the maximum message size of ",
                                                   max_message_bytes, " bytes"));
  }
  return absl::OkStatus();
}

ParseErrorInterceptorFactory::ParseErrorInterceptorFactory() {
  google::protobuf::SetLogHandler(&ProtobufLogHandler);
}

grpc::experimental::Interceptor* ParseErrorInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  // Only methods with one request message have it parsed before the handler runs; a streamed
  // request's reads end with no message, which is no parse error.
  using Type = grpc::experimental::ServerRpcInfo::Type;
  if (info->type() != Type::UNARY && info->type() != Type::SERVER_STREAMING) return nullptr;
  return new ParseErrorInterceptor();
}

}  // namespace qwen::service

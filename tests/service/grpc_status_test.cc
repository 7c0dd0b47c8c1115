#include "service/grpc_status.h"

#include <string>

#include "gtest/gtest.h"

namespace qwen::service {
namespace {

TEST(GrpcStatusTest, EveryCodeRoundTripsWithItsMessage) {
  for (int c = 0; c <= 16; ++c) {
    const absl::Status s(static_cast<absl::StatusCode>(c), c == 0 ? "" : "field: why");
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    if (c != 0) {
      EXPECT_EQ(g.error_message(), "field: why");
    }
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
}

TEST(GrpcStatusTest, TheCodesTheApiPromises) {
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("x")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ToGrpcStatus(absl::CancelledError("x")).error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, UnknownCodesBecomeUnknown) {
  const absl::Status odd(static_cast<absl::StatusCode>(99), "odd");
  EXPECT_EQ(ToGrpcStatus(odd).error_code(), grpc::StatusCode::UNKNOWN);
  // grpc::StatusCode has no fixed underlying type: a value outside its enumerators would be
  // undefined behaviour (UBSan says so), so take the one enumerator no status maps to.
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::DO_NOT_USE, "odd")).code(),
            absl::StatusCode::kUnknown);
}

// The HTTP API's statuses (docs/api.md): each gRPC code has one, and the ones clients act on
// are the ones OpenAI's clients expect.
TEST(GrpcStatusTest, HttpStatusesOfTheCodes) {
  EXPECT_EQ(ToHttpError(absl::StatusCode::kOk).status, 200);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kInvalidArgument).status, 400);
  EXPECT_STREQ(ToHttpError(absl::StatusCode::kInvalidArgument).type, "invalid_request_error");
  EXPECT_EQ(ToHttpError(absl::StatusCode::kFailedPrecondition).status, 400);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kUnauthenticated).status, 401);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kPermissionDenied).status, 403);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kNotFound).status, 404);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kResourceExhausted).status, 429);
  EXPECT_STREQ(ToHttpError(absl::StatusCode::kResourceExhausted).type, "rate_limit_error");
  EXPECT_EQ(ToHttpError(absl::StatusCode::kUnavailable).status, 503);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kDeadlineExceeded).status, 504);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kCancelled).status, 499);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kUnimplemented).status, 501);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kInternal).status, 500);
  EXPECT_EQ(ToHttpError(absl::StatusCode::kDataLoss).status, 500);
  EXPECT_EQ(ToHttpError(static_cast<absl::StatusCode>(99)).status, 500);
  for (int c = 1; c <= 16; ++c) {
    const HttpError e = ToHttpError(static_cast<absl::StatusCode>(c));
    EXPECT_GE(e.status, 400) << c;
    EXPECT_NE(std::string(e.type), "") << c;
  }
}

}  // namespace
}  // namespace qwen::service

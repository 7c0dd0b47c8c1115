// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection), beside the v1alpha service
// that Debian's gRPC 1.51 provides: grpcurl and current gRPC libraries ask for v1 first and fall
// back to v1alpha only after a round trip, and some clients do not fall back at all.
#ifndef QWEN_SERVICE_REFLECTION_V1_H_
#define QWEN_SERVICE_REFLECTION_V1_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/descriptor.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace qwen::service {

// Answers reflection requests from a descriptor pool (the generated pool: every message and
// service linked into the program, which is what v1alpha serves too). Files are sent with the
// files they import, each file once per response.
//
// Thread-safe: calls run on gRPC's threads; SetServices may be called while they do.
class ReflectionV1Service final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  explicit ReflectionV1Service(const google::protobuf::DescriptorPool* pool =
                                   google::protobuf::DescriptorPool::generated_pool());

  // The full names list_services answers with (the services the server registered).
  void SetServices(std::vector<std::string> services);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>* stream) override;

  // One request's answer (exposed for tests).
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& request) const;

 private:
  const google::protobuf::DescriptorPool* const pool_;
  mutable absl::Mutex mu_;
  std::vector<std::string> services_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qwen::service

#endif  // QWEN_SERVICE_REFLECTION_V1_H_

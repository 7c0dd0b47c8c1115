#include "service/reflection_v1.h"

#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "service/grpc_status.h"

namespace qwen::service {
namespace {

namespace pb = ::google::protobuf;
namespace refl = ::grpc::reflection::v1;

// `file` and, depth first, every file it imports that `sent` does not hold yet.
void AddFileAndImports(const pb::FileDescriptor* file, std::set<std::string>* sent,
                       refl::FileDescriptorResponse* out) {
  if (!sent->insert(file->name()).second) return;
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(out->add_file_descriptor_proto());
  for (int i = 0; i < file->dependency_count(); ++i) {
    AddFileAndImports(file->dependency(i), sent, out);
  }
}

void SetError(const absl::Status& status, refl::ServerReflectionResponse* response) {
  const grpc::Status g = ToGrpcStatus(status);
  refl::ErrorResponse* e = response->mutable_error_response();
  e->set_error_code(static_cast<int32_t>(g.error_code()));
  e->set_error_message(g.error_message());
}

}  // namespace

ReflectionV1Service::ReflectionV1Service(const pb::DescriptorPool* pool) : pool_(pool) {}

void ReflectionV1Service::SetServices(std::vector<std::string> services) {
  absl::MutexLock lock(&mu_);
  services_ = std::move(services);
}

refl::ServerReflectionResponse ReflectionV1Service::Answer(
    const refl::ServerReflectionRequest& request) const {
  refl::ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  std::set<std::string> sent;
  switch (request.message_request_case()) {
    case refl::ServerReflectionRequest::kFileByFilename: {
      const pb::FileDescriptor* file = pool_->FindFileByName(request.file_by_filename());
      if (file == nullptr) {
        SetError(absl::NotFoundError(absl::StrCat("file not found: ", request.file_by_filename())),
                 &response);
      } else {
        AddFileAndImports(file, &sent, response.mutable_file_descriptor_response());
      }
      break;
    }
    case refl::ServerReflectionRequest::kFileContainingSymbol: {
      const pb::FileDescriptor* file =
          pool_->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) {
        SetError(absl::NotFoundError(
                     absl::StrCat("symbol not found: ", request.file_containing_symbol())),
                 &response);
      } else {
        AddFileAndImports(file, &sent, response.mutable_file_descriptor_response());
      }
      break;
    }
    case refl::ServerReflectionRequest::kFileContainingExtension: {
      const refl::ExtensionRequest& ext = request.file_containing_extension();
      const pb::Descriptor* type = pool_->FindMessageTypeByName(ext.containing_type());
      const pb::FieldDescriptor* field =
          type == nullptr ? nullptr : pool_->FindExtensionByNumber(type, ext.extension_number());
      if (field == nullptr) {
        SetError(absl::NotFoundError(absl::StrCat("extension ", ext.extension_number(), " of ",
                                                  ext.containing_type(), " not found")),
                 &response);
      } else {
        AddFileAndImports(field->file(), &sent, response.mutable_file_descriptor_response());
      }
      break;
    }
    case refl::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const std::string& name = request.all_extension_numbers_of_type();
      const pb::Descriptor* type = pool_->FindMessageTypeByName(name);
      if (type == nullptr) {
        SetError(absl::NotFoundError(absl::StrCat("type not found: ", name)), &response);
      } else {
        std::vector<const pb::FieldDescriptor*> extensions;
        pool_->FindAllExtensions(type, &extensions);
        refl::ExtensionNumberResponse* out = response.mutable_all_extension_numbers_response();
        out->set_base_type_name(name);
        for (const pb::FieldDescriptor* f : extensions) out->add_extension_number(f->number());
      }
      break;
    }
    case refl::ServerReflectionRequest::kListServices: {
      absl::MutexLock lock(&mu_);
      refl::ListServiceResponse* out = response.mutable_list_services_response();
      for (const std::string& s : services_) out->add_service()->set_name(s);
      break;
    }
    default:
      SetError(absl::UnimplementedError("the request sets none of the known message_request "
                                        "fields"),
               &response);
  }
  return response;
}

grpc::Status ReflectionV1Service::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<refl::ServerReflectionResponse, refl::ServerReflectionRequest>*
        stream) {
  refl::ServerReflectionRequest request;
  while (stream->Read(&request)) {
    if (!stream->Write(Answer(request))) break;
  }
  return grpc::Status::OK;
}

}  // namespace qwen::service

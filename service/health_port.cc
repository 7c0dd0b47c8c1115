#include "service/health_port.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace qwen::service {

absl::StatusOr<std::unique_ptr<LocalHealthServer>> LocalHealthServer::Start(
    int port, std::vector<std::string> services) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError("--health_port must be in [0, 65535]");
  }
  std::unique_ptr<LocalHealthServer> h(new LocalHealthServer());
  h->services_ = std::move(services);
  // The default health service is gRPC's own (grpc::EnableDefaultHealthCheckService, which the
  // front end turns on for every server it builds).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat("127.0.0.1:", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &h->port_);
  h->server_ = builder.BuildAndStart();
  if (h->server_ == nullptr || h->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("--health_port: cannot listen on ", address));
  }
  h->SetServing(false);
  return h;
}

LocalHealthServer::~LocalHealthServer() { Shutdown(absl::ZeroDuration()); }

void LocalHealthServer::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  for (const std::string& s : services_) health->SetServingStatus(s, serving);
}

void LocalHealthServer::Shutdown(absl::Duration deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    server_->GetHealthCheckService()->Shutdown();
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  server_->Wait();
}

}  // namespace qwen::service

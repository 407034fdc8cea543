#include "controller/config_service.h"

#include <utility>

#include "controller/internal/grpc_status.h"

namespace reptrace::controller {

using internal::ToGrpcStatus;

grpc::Status ConfigService::GetConfig(grpc::ServerContext*, const v1::GetConfigRequest*,
                                      v1::ConfigVersion* response) {
  auto version = store_.GetConfig();
  if (!version.ok()) return ToGrpcStatus(version.status());
  *response = std::move(*version);
  return grpc::Status::OK;
}

grpc::Status ConfigService::SetConfig(grpc::ServerContext*,
                                      const v1::SetConfigRequest* request,
                                      v1::ConfigVersion* response) {
  // An absent document would be stored as all defaults: tracing off, no trace kept.
  if (!request->has_config()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "config: missing (send the whole document)");
  }
  auto version =
      store_.SetConfig(request->config(), request->expected_version(), request->author());
  if (!version.ok()) return ToGrpcStatus(version.status());
  *response = std::move(*version);
  return grpc::Status::OK;
}

grpc::Status ConfigService::WatchConfig(grpc::ServerContext* context,
                                        const v1::WatchConfigRequest*,
                                        grpc::ServerWriter<v1::ConfigVersion>* writer) {
  auto current = store_.GetConfig();
  if (!current.ok()) return ToGrpcStatus(current.status());
  uint64_t sent = current->version();
  if (!writer->Write(*current)) return grpc::Status::CANCELLED;
  uint64_t heard = sent;  // the newest version announced that this watch has acted on
  while (!context->IsCancelled()) {
    const uint64_t newest = watcher_.WaitNewerThan(heard, kWatchTick);
    if (newest <= heard) {
      if (watcher_.stopped()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller is shutting down");
      }
      continue;
    }
    heard = newest;
    // Everything stored after what was sent, in order (announcements may have been
    // merged, or have overtaken each other).
    for (;;) {
      auto versions = store_.ConfigVersionsAfter(sent, kWatchBatch);
      if (!versions.ok()) return ToGrpcStatus(versions.status());
      for (const v1::ConfigVersion& version : *versions) {
        if (!writer->Write(version)) return grpc::Status::CANCELLED;
        sent = version.version();
      }
      if (versions->size() < static_cast<size_t>(kWatchBatch)) break;
    }
  }
  return grpc::Status::CANCELLED;
}

grpc::Status ConfigService::ListConfigHistory(grpc::ServerContext*,
                                              const v1::ListConfigHistoryRequest* request,
                                              v1::ListConfigHistoryResponse* response) {
  auto versions = store_.ListConfigHistory(request->limit());
  if (!versions.ok()) return ToGrpcStatus(versions.status());
  for (v1::ConfigVersion& version : *versions) *response->add_versions() = std::move(version);
  return grpc::Status::OK;
}

}  // namespace reptrace::controller

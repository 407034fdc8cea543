// reptrace.v1.ConfigService: the config document, its versions and history, stored by
// the Store; WatchConfig follows the changes made on any replica through a ConfigWatcher.
#ifndef REPTRACE_CONTROLLER_CONFIG_SERVICE_H_
#define REPTRACE_CONTROLLER_CONFIG_SERVICE_H_

#include "absl/time/time.h"
#include "controller/config_watcher.h"
#include "controller/store.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::controller {

class ConfigService final : public v1::ConfigService::Service {
 public:
  // `store` and `watcher` must outlive the service.
  ConfigService(Store& store, const ConfigWatcher& watcher)
      : store_(store), watcher_(watcher) {}

  grpc::Status GetConfig(grpc::ServerContext* context, const v1::GetConfigRequest* request,
                         v1::ConfigVersion* response) override;
  // INVALID_ARGUMENT for a missing or invalid config (the message names the field),
  // FAILED_PRECONDITION when expected_version is not the current version.
  grpc::Status SetConfig(grpc::ServerContext* context, const v1::SetConfigRequest* request,
                         v1::ConfigVersion* response) override;
  // The current version at once, then every later version in order, until the client
  // cancels (CANCELLED) or the watcher stops because the server is shutting down
  // (UNAVAILABLE: the client should watch again, on any replica).
  grpc::Status WatchConfig(grpc::ServerContext* context,
                           const v1::WatchConfigRequest* request,
                           grpc::ServerWriter<v1::ConfigVersion>* writer) override;
  grpc::Status ListConfigHistory(grpc::ServerContext* context,
                                 const v1::ListConfigHistoryRequest* request,
                                 v1::ListConfigHistoryResponse* response) override;

 private:
  // How long a watch waits for a new version before checking for cancellation.
  static constexpr absl::Duration kWatchTick = absl::Milliseconds(100);
  // Versions read at a time when a watch catches up.
  static constexpr int kWatchBatch = 100;

  Store& store_;
  const ConfigWatcher& watcher_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_CONFIG_SERVICE_H_

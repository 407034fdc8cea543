#include "controller/controller_server.h"

#include <algorithm>
#include <chrono>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "proto/grpc/health/v1/health.pb.h"

namespace reptrace::controller {

ControllerServer::ControllerServer(Store& store)
    : config_watcher_(store.conninfo()),
      ingest_(store, config_watcher_),
      query_(store),
      config_(store, config_watcher_) {}

ControllerServer::~ControllerServer() {
  if (!shut_down_) Shutdown(absl::ZeroDuration());
  Wait();
}

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const std::string& listen, Store& store, absl::Duration sampling_decision_wait) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", listen, "\" is not HOST:PORT"));
  }
  grpc::EnableDefaultHealthCheckService(true);
  // Links proto/grpc/health/v1/health.proto's descriptors in, so reflection can describe
  // the built-in health service (see that file).
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<ControllerServer> server(new ControllerServer(store));
  absl::StatusOr<std::unique_ptr<TraceSampler>> sampler =
      TraceSampler::Create(store, sampling_decision_wait);
  if (!sampler.ok()) return sampler.status();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  builder.RegisterService(&server->ingest_);
  builder.RegisterService(&server->query_);
  builder.RegisterService(&server->config_);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    server->server_.reset();
    server->shut_down_ = true;
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  server->sampler_ = std::move(*sampler);
  // A tick a quarter of the wait: a trace is decided at most 25 % after its wait ends.
  server->sampler_->StartLoop(
      server->config_watcher_,
      std::clamp(sampling_decision_wait / 4, absl::Milliseconds(10), absl::Seconds(1)));
  server->port_ = port;
  server->address_ = absl::StrCat(listen.substr(0, colon), ":", port);
  return server;
}

void ControllerServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  // A watch lasts until its client leaves: without this, every shutdown would wait the
  // whole grace for them. (It also ends the config pushers of the ingest streams.)
  config_watcher_.Stop();
  if (sampler_ != nullptr) sampler_->StopLoop();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void ControllerServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace reptrace::controller

// The controller's gRPC server: IngestService, QueryService, ConfigService,
// grpc.health.v1 and server reflection, on one listening address; and trace sampling
// (TraceSampler), which follows the config and decides quiet traces in the background.
#ifndef REPTRACE_CONTROLLER_CONTROLLER_SERVER_H_
#define REPTRACE_CONTROLLER_CONTROLLER_SERVER_H_

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/config_service.h"
#include "controller/config_watcher.h"
#include "controller/ingest_service.h"
#include "controller/query_service.h"
#include "controller/store.h"
#include "controller/trace_sampler.h"

namespace reptrace::controller {

class ControllerServer {
 public:
  // The largest message accepted. gRPC's default, 4 MiB, is less than a batch of a few
  // thousand spans with long names: a batch refused for its size would be resent by the
  // agent forever.
  static constexpr int kMaxReceiveMessageBytes = 256 << 20;
  // How long a trace must have gone without a new or relinked span before sampling
  // decides it (the --sampling_decision_wait flag's default; see controller/main.cc).
  static constexpr absl::Duration kDefaultSamplingDecisionWait = absl::Seconds(5);

  // Listens on `listen` ("HOST:PORT"; port 0 picks a free one), serving from `store`,
  // which must outlive the server, and samples traces with `sampling_decision_wait`.
  // UNAVAILABLE if the address cannot be bound or the sampler cannot reach the database.
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(
      const std::string& listen, Store& store,
      absl::Duration sampling_decision_wait = kDefaultSamplingDecisionWait);
  ~ControllerServer();  // Shutdown(zero grace) if still running
  ControllerServer(const ControllerServer&) = delete;
  ControllerServer& operator=(const ControllerServer&) = delete;

  // "HOST:PORT" with the port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Stops accepting calls and ends the config watches at once (UNAVAILABLE); other calls
  // still running after `grace` are cancelled.
  void Shutdown(absl::Duration grace);
  // Blocks until the server has shut down.
  void Wait();

 private:
  ControllerServer(Store& store);

  ConfigWatcher config_watcher_;  // its own database connection, LISTENing
  IngestService ingest_;          // pushes the config down every agent's stream
  QueryService query_;
  ConfigService config_;
  std::unique_ptr<TraceSampler> sampler_;  // started after the server, stopped before
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_CONTROLLER_SERVER_H_

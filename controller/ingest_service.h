// reptrace.v1.IngestService: one long-lived bidirectional stream per agent. Converts
// between gRPC and AgentSession, which holds the protocol's logic.
//
// The service is registered by hand rather than through the generated
// v1::IngestService::Service so that it receives each message's bytes: a batch that
// protobuf refuses (a string that is not UTF-8) is then taken apart span by span
// (internal/agent_message.h) instead of silently ending the stream, which the agent
// would take for an orderly end and answer by resending the same batch forever.
// The wire contract (method name, message types) is exactly the generated one.
//
// Config push: right after the hello the stream gets the current config version
// (Store::GetConfig), then every newer version the ConfigWatcher announces, whichever
// replica it was set on; the agent answers each with ConfigApplied, which AgentSession
// records. Each stream has a second thread that waits for announcements; its writes and
// the acknowledgements go through one mutex, since a stream takes one write at a time.
// Versions may be merged (an agent only needs the newest); a reconnecting agent is sent
// the current version again.
#ifndef REPTRACE_CONTROLLER_INGEST_SERVICE_H_
#define REPTRACE_CONTROLLER_INGEST_SERVICE_H_

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "controller/config_watcher.h"
#include "controller/store.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::controller {

class IngestService final : public grpc::Service {
 public:
  using Stream = grpc::ServerReaderWriter<v1::ControllerMessage, grpc::ByteBuffer>;

  // `store` and `watcher` must outlive the service.
  IngestService(Store& store, const ConfigWatcher& watcher);

  grpc::Status Connect(grpc::ServerContext* context, Stream* stream);

 private:
  class SerializedWriter;

  // Sends `stream` every config version newer than `sent` as the watcher announces it,
  // until `stop` is notified, the watcher stops, or a write fails.
  void PushConfigs(SerializedWriter* writer, uint64_t sent, const absl::Notification* stop,
                   const std::string& agent_id);
  // The newest config version, read from the store unless the one cached is already at
  // least `version` (one read per change, not one per agent stream).
  absl::StatusOr<v1::ConfigVersion> ConfigAtLeast(uint64_t version);

  // How long a pusher waits for an announcement before checking whether its stream ended,
  // and before retrying after a database error.
  static constexpr absl::Duration kPushTick = absl::Milliseconds(100);
  static constexpr absl::Duration kPushRetry = absl::Seconds(1);

  Store& store_;
  const ConfigWatcher& watcher_;
  absl::Mutex config_mu_;
  v1::ConfigVersion config_ ABSL_GUARDED_BY(config_mu_);  // the newest read; version 0: none
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_INGEST_SERVICE_H_

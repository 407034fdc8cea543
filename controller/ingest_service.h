// reptrace.v1.IngestService: one long-lived bidirectional stream per agent. Converts
// between gRPC and AgentSession, which holds the protocol's logic.
//
// The service is registered by hand rather than through the generated
// v1::IngestService::Service so that it receives each message's bytes: a batch that
// protobuf refuses (a string that is not UTF-8) is then taken apart span by span
// (internal/agent_message.h) instead of silently ending the stream, which the agent
// would take for an orderly end and answer by resending the same batch forever.
// The wire contract (method name, message types) is exactly the generated one.
#ifndef REPTRACE_CONTROLLER_INGEST_SERVICE_H_
#define REPTRACE_CONTROLLER_INGEST_SERVICE_H_

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "controller/store.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::controller {

class IngestService final : public grpc::Service {
 public:
  explicit IngestService(Store& store);

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ControllerMessage, grpc::ByteBuffer>* stream);

 private:
  Store& store_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_INGEST_SERVICE_H_

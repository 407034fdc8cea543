// reptrace.v1.IngestService: one long-lived bidirectional stream per agent. Converts
// between gRPC and AgentSession, which holds the protocol's logic.
#ifndef REPTRACE_CONTROLLER_INGEST_SERVICE_H_
#define REPTRACE_CONTROLLER_INGEST_SERVICE_H_

#include "controller/store.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::controller {

class IngestService final : public v1::IngestService::Service {
 public:
  explicit IngestService(Store& store) : store_(store) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream) override;

 private:
  Store& store_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_INGEST_SERVICE_H_

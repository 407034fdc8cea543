#include "controller/ingest_service.h"

#include "common/log.h"
#include "controller/agent_session.h"
#include "controller/internal/grpc_status.h"

namespace reptrace::controller {

using internal::ToGrpcStatus;

grpc::Status IngestService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream) {
  v1::AgentMessage message;
  if (!stream->Read(&message)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the ingest stream ended before its hello");
  }
  AgentSession session(store_);
  absl::Status status = session.Start(message);
  if (!status.ok()) {
    LogWarning("ingest stream from %s refused: %s", context->peer(), status.ToString());
    return ToGrpcStatus(status);
  }
  while (stream->Read(&message)) {
    auto ack = session.Handle(message);
    if (!ack.ok()) {
      LogWarning("agent %s: ending stream: %s", session.agent_id(), ack.status().ToString());
      return ToGrpcStatus(ack.status());
    }
    if (!ack->has_value()) continue;
    v1::ControllerMessage reply;
    *reply.mutable_ack() = **ack;
    if (!stream->Write(reply)) break;
  }
  return grpc::Status::OK;
}

}  // namespace reptrace::controller

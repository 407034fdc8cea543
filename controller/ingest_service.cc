#include "controller/ingest_service.h"

#include <string>
#include <vector>

#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/support/method_handler.h>

#include "common/log.h"
#include "controller/agent_session.h"
#include "controller/internal/agent_message.h"
#include "controller/internal/grpc_status.h"

namespace reptrace::controller {
namespace {

using internal::ToGrpcStatus;

constexpr char kConnectMethod[] = "/reptrace.v1.IngestService/Connect";
// About a 1000-span batch, parsed.
constexpr size_t kArenaFirstBlockBytes = 1 << 20;

// Reads the next message: false at the end of the stream; an error if it cannot be
// parsed at all.
absl::StatusOr<bool> ReadMessage(
    grpc::ServerReaderWriter<v1::ControllerMessage, grpc::ByteBuffer>* stream,
    google::protobuf::Arena* arena, internal::ParsedAgentMessage* out, std::string* bytes) {
  grpc::ByteBuffer buffer;
  if (!stream->Read(&buffer)) return false;
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) {
    return absl::InvalidArgumentError("an agent message cannot be read");
  }
  bytes->clear();  // keeps the memory of the last message's bytes
  bytes->reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    bytes->append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  arena->Reset();  // the last message is done with
  auto parsed = internal::ParseAgentMessage(*bytes, arena);
  if (!parsed.ok()) return parsed.status();
  *out = std::move(*parsed);
  return true;
}

}  // namespace

IngestService::IngestService(Store& store) : store_(store) {
  AddMethod(new grpc::internal::RpcServiceMethod(
      kConnectMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
      new grpc::internal::BidiStreamingHandler<IngestService, grpc::ByteBuffer,
                                               v1::ControllerMessage>(
          [](IngestService* service, grpc::ServerContext* context,
             grpc::ServerReaderWriter<v1::ControllerMessage, grpc::ByteBuffer>* stream) {
            return service->Connect(context, stream);
          },
          this)));
}

grpc::Status IngestService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ControllerMessage, grpc::ByteBuffer>* stream) {
  internal::ParsedAgentMessage parsed;
  std::string bytes;
  // One batch's messages normally fit the first block, which Reset keeps: parsing a
  // batch then allocates nothing.
  std::vector<char> first_block(kArenaFirstBlockBytes);
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = first_block.data();
  arena_options.initial_block_size = first_block.size();
  google::protobuf::Arena arena(arena_options);
  absl::StatusOr<bool> more = ReadMessage(stream, &arena, &parsed, &bytes);
  if (!more.ok() || !*more) {
    const absl::Status status =
        more.ok() ? absl::InvalidArgumentError("the ingest stream ended before its hello")
                  : more.status();
    LogWarning("ingest stream from %s refused: %s", context->peer(), status.ToString());
    return ToGrpcStatus(status);
  }
  AgentSession session(store_);
  absl::Status status = session.Start(*parsed.message);
  if (!status.ok()) {
    LogWarning("ingest stream from %s refused: %s", context->peer(), status.ToString());
    return ToGrpcStatus(status);
  }
  while (true) {
    more = ReadMessage(stream, &arena, &parsed, &bytes);
    if (!more.ok()) {
      LogWarning("agent %s: ending stream: %s", session.agent_id(), more.status().ToString());
      return ToGrpcStatus(more.status());
    }
    if (!*more) break;
    auto ack = session.Handle(*parsed.message, parsed.spans_unparseable);
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

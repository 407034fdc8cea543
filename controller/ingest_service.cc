#include "controller/ingest_service.h"

#include <algorithm>
#include <string>
#include <thread>
#include <utility>
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

// A stream's writes from the session's thread (acks) and its pusher (configs), one at a
// time.
class IngestService::SerializedWriter {
 public:
  explicit SerializedWriter(Stream* stream) : stream_(stream) {}
  bool Write(const v1::ControllerMessage& message) {
    absl::MutexLock lock(&mu_);
    return stream_->Write(message);
  }

 private:
  absl::Mutex mu_;
  Stream* const stream_ ABSL_PT_GUARDED_BY(mu_);
};

IngestService::IngestService(Store& store, const ConfigWatcher& watcher)
    : store_(store), watcher_(watcher) {
  AddMethod(new grpc::internal::RpcServiceMethod(
      kConnectMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
      new grpc::internal::BidiStreamingHandler<IngestService, grpc::ByteBuffer,
                                               v1::ControllerMessage>(
          [](IngestService* service, grpc::ServerContext* context, Stream* stream) {
            return service->Connect(context, stream);
          },
          this)));
}

absl::StatusOr<v1::ConfigVersion> IngestService::ConfigAtLeast(uint64_t version) {
  absl::MutexLock lock(&config_mu_);
  if (config_.version() < version) {
    absl::StatusOr<v1::ConfigVersion> newest = store_.GetConfig();
    if (!newest.ok()) return newest.status();
    if (newest->version() > config_.version()) config_ = std::move(*newest);
  }
  return config_;
}

void IngestService::PushConfigs(SerializedWriter* writer, uint64_t sent,
                                const absl::Notification* stop, const std::string& agent_id) {
  while (!stop->HasBeenNotified()) {
    const uint64_t newest = watcher_.WaitNewerThan(sent, kPushTick);
    if (newest <= sent) {
      if (watcher_.stopped()) return;  // the server is shutting down
      continue;
    }
    absl::StatusOr<v1::ConfigVersion> config = ConfigAtLeast(newest);
    if (!config.ok()) {
      LogWarning("agent %s: config version %d not pushed: %s", agent_id, newest,
                 config.status().ToString());
      stop->WaitForNotificationWithTimeout(kPushRetry);
      continue;
    }
    if (config->version() <= sent) {
      // Announced but not readable yet (cannot happen with one database): try again.
      stop->WaitForNotificationWithTimeout(kPushTick);
      continue;
    }
    v1::ControllerMessage message;
    *message.mutable_config() = *std::move(config);
    if (!writer->Write(message)) return;  // the stream is over; the session notices
    sent = message.config().version();
  }
}

grpc::Status IngestService::Connect(grpc::ServerContext* context, Stream* stream) {
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
  SerializedWriter writer(stream);
  // The newest version the watcher has heard of (read from the store only if the shared
  // copy is older): a version announced later is pushed by the pusher below.
  absl::StatusOr<v1::ConfigVersion> current =
      ConfigAtLeast(std::max<uint64_t>(watcher_.version(), 1));
  if (!current.ok()) {
    LogWarning("agent %s: ending stream: %s", session.agent_id(), current.status().ToString());
    return ToGrpcStatus(current.status());
  }
  v1::ControllerMessage first_config;
  *first_config.mutable_config() = *std::move(current);
  if (!writer.Write(first_config)) return grpc::Status::OK;
  absl::Notification stop_pushing;
  std::thread pusher([&, sent = first_config.config().version()] {
    PushConfigs(&writer, sent, &stop_pushing, session.agent_id());
  });
  struct JoinPusher {
    absl::Notification& stop;
    std::thread& thread;
    ~JoinPusher() {
      stop.Notify();
      thread.join();
    }
  } join_pusher{stop_pushing, pusher};

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
    if (!writer.Write(reply)) break;
  }
  return grpc::Status::OK;
}

}  // namespace reptrace::controller

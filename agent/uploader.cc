#include "agent/uploader.h"

#include <uuid/uuid.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/version.h"
#include "google/protobuf/io/coded_stream.h"

namespace reptrace {

std::string NewAgentId() {
  uuid_t uuid;
  uuid_generate(uuid);
  char text[37];
  uuid_unparse_lower(uuid, text);
  return text;
}

namespace {

// The stream is IngestService.Connect writing the AgentMessages' bytes (grpc::ByteBuffer)
// rather than messages, so that a batch, already wire bytes, goes out as it is: written as
// a v1::AgentMessage, it was copied into the message and again by gRPC's serializer. The
// call is made as the generated stub makes it (reptrace.grpc.pb.cc), with the ByteBuffer
// serialization gRPC has built in.
using AgentStream = grpc::ClientReaderWriter<grpc::ByteBuffer, v1::ControllerMessage>;

std::unique_ptr<AgentStream> OpenAgentStream(const std::shared_ptr<grpc::Channel>& channel,
                                             grpc::ClientContext* context) {
  static const std::string* const kConnect =
      new std::string(absl::StrCat("/", v1::IngestService::service_full_name(), "/Connect"));
  const grpc::internal::RpcMethod method(kConnect->c_str(),
                                         grpc::internal::RpcMethod::BIDI_STREAMING, channel);
  return std::unique_ptr<AgentStream>(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, v1::ControllerMessage>::Create(
          channel.get(), method, context));
}

grpc::ByteBuffer MessageBytes(const v1::AgentMessage& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// A slice's reference to the batch whose bytes it is.
void ReleaseBatch(void* batch) { delete static_cast<std::shared_ptr<const SealedBatch>*>(batch); }

}  // namespace

grpc::ByteBuffer BatchMessage(std::shared_ptr<const SealedBatch> batch,
                              const v1::AgentCounters& counters) {
  using google::protobuf::io::CodedOutputStream;
  // The batch field is the batch's bytes (its batch_id and spans) followed by its counters,
  // the SpanBatch's last field, as protobuf orders them.
  v1::SpanBatch counters_only;
  *counters_only.mutable_counters() = counters;
  const std::string counters_field = counters_only.SerializeAsString();
  constexpr size_t kMaxVarintBytes = 10;
  uint8_t head[1 + kMaxVarintBytes];  // the field's tag and length
  head[0] = (v1::AgentMessage::kBatchFieldNumber << 3) | 2;  // length-delimited
  const uint8_t* head_end =
      CodedOutputStream::WriteVarint64ToArray(batch->size + counters_field.size(), head + 1);
  const absl::string_view wire = batch->wire();
  // gRPC only reads the bytes (a slice's buffer is not const in its API).
  const grpc::Slice slices[] = {
      grpc::Slice(head, static_cast<size_t>(head_end - head)),
      grpc::Slice(const_cast<char*>(wire.data()), wire.size(), &ReleaseBatch,
                  new std::shared_ptr<const SealedBatch>(std::move(batch))),
      grpc::Slice(counters_field)};
  return grpc::ByteBuffer(slices, 3);
}

Uploader::Uploader(UploaderOptions options, SpanBuffer* buffer, CounterSet* counters,
                   ConfigHolder* config)
    : options_(std::move(options)), buffer_(buffer), counters_(counters), config_(config) {}

Uploader::~Uploader() {
  if (thread_.joinable()) Stop(absl::ZeroDuration());
}

void Uploader::Start() {
  thread_ = std::thread([this] {
    absl::Duration backoff = options_.initial_backoff;
    while (!Done()) {
      const uint64_t acked_before = counters_->batches_acked.load();
      absl::Status status = RunStream();
      if (status.ok() || Done()) break;
      if (counters_->batches_acked.load() != acked_before) backoff = options_.initial_backoff;
      LogWarning("controller stream to %s failed: %s; reconnecting in %s", options_.controller,
                 status.ToString(), absl::FormatDuration(backoff));
      SleepUnlessStopping(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  });
}

bool Uploader::Done() const {
  absl::MutexLock lock(&mu_);
  return stopping_ && (buffer_->empty() || absl::Now() >= flush_deadline_);
}

void Uploader::SleepUnlessStopping(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  const absl::Time until = absl::Now() + d;
  // A stopping uploader still retries while it holds spans, but never sleeps past its
  // flush deadline.
  while (true) {
    if (stopping_ && buffer_->empty()) return;
    const absl::Time wake = stopping_ ? std::min(until, flush_deadline_) : until;
    if (absl::Now() >= wake) return;
    stop_cv_.WaitWithDeadline(&mu_, wake);
  }
}

absl::Status Uploader::RunStream() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.initial_backoff)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.initial_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.max_backoff)));
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      options_.controller, grpc::InsecureChannelCredentials(), args);

  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && absl::Now() >= flush_deadline_) return absl::OkStatus();
    current_context_ = &context;
  }
  auto forget_context = [&] {
    absl::MutexLock lock(&mu_);
    current_context_ = nullptr;
  };
  std::unique_ptr<AgentStream> stream = OpenAgentStream(channel, &context);

  v1::AgentMessage hello;
  hello.mutable_hello()->set_node(options_.node);
  hello.mutable_hello()->set_agent_version(kVersion);
  hello.mutable_hello()->set_agent_id(options_.agent_id);
  hello.mutable_hello()->set_hostname(options_.hostname);
  if (!stream->Write(MessageBytes(hello))) {
    grpc::Status st = stream->Finish();
    forget_context();
    return absl::UnavailableError(absl::StrCat("hello not sent: ", st.error_message()));
  }
  streams_opened_.fetch_add(1);
  buffer_->RewindForResend();

  std::atomic<bool> broken{false};
  // The config version to acknowledge, 0 = none: the reader cannot write (the sending
  // thread does all the writes), so it leaves the version here and wakes the sender.
  std::atomic<uint64_t> config_to_ack{0};
  std::thread reader([&] {
    v1::ControllerMessage message;
    while (stream->Read(&message)) {
      if (message.has_ack()) {
        buffer_->Ack(message.ack().batch_id());
      } else if (message.has_config()) {
        // Published to the hooked processes (the config page), then acknowledged; a
        // version the page refuses is not acknowledged (the agent's CONFIG stays behind).
        absl::StatusOr<bool> changed = config_->Set(message.config());
        if (!changed.ok()) {
          LogError("config version %d not applied: %s", message.config().version(),
                   changed.status().ToString());
          continue;
        }
        if (*changed) {
          LogInfo("config version %d applied (set by %s)", message.config().version(),
                  message.config().author());
        }
        config_to_ack.store(message.config().version());
        buffer_->Wake();
      }
    }
    broken.store(true);
    buffer_->Wake();
  });
  connected_.store(true);

  bool failed = false;
  absl::Time next_counters = absl::Now() + options_.counters_interval;
  while (true) {
    if (broken.load()) {
      failed = true;
      break;
    }
    if (Done()) break;
    const absl::Duration wait =
        std::clamp(next_counters - absl::Now(), absl::ZeroDuration(), absl::Milliseconds(50));
    if (const uint64_t version = config_to_ack.exchange(0); version != 0) {
      v1::AgentMessage message;
      message.mutable_config_applied()->set_version(version);
      if (!stream->Write(MessageBytes(message))) {
        failed = true;
        break;
      }
    }
    if (std::shared_ptr<const SealedBatch> batch = buffer_->WaitNextToSend(wait)) {
      if (!stream->Write(BatchMessage(std::move(batch), counters_->Snapshot()))) {
        failed = true;
        break;
      }
    }
    if (absl::Now() >= next_counters) {
      v1::AgentMessage message;
      *message.mutable_counters() = counters_->Snapshot();
      if (!stream->Write(MessageBytes(message))) {
        failed = true;
        break;
      }
      next_counters = absl::Now() + options_.counters_interval;
    }
  }
  connected_.store(false);
  if (!failed) stream->WritesDone();
  // Every batch we care about is acknowledged (or the deadline passed): end the call.
  context.TryCancel();
  reader.join();
  grpc::Status st = stream->Finish();
  forget_context();
  if (!failed) return absl::OkStatus();
  if (st.ok()) return absl::UnavailableError("the controller ended the stream");
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

void Uploader::Stop(absl::Duration flush_timeout) {
  buffer_->SealNow();
  absl::Time deadline;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    flush_deadline_ = absl::Now() + flush_timeout;
    deadline = flush_deadline_;
    stop_cv_.SignalAll();
  }
  buffer_->Wake();
  if (!thread_.joinable()) return;
  // A Write() blocked on flow control, or a connect that hangs, would outlast the
  // deadline: cancel the call then.
  absl::Notification joined;
  std::thread watchdog([&] {
    if (joined.WaitForNotificationWithDeadline(deadline + absl::Milliseconds(200))) return;
    absl::MutexLock lock(&mu_);
    if (current_context_ != nullptr) current_context_->TryCancel();
  });
  thread_.join();
  joined.Notify();
  watchdog.join();
}

}  // namespace reptrace

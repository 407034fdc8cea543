#include "agent/uploader.h"

#include <uuid/uuid.h>

#include <algorithm>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/version.h"
#include "google/protobuf/unknown_field_set.h"

namespace reptrace {

std::string NewAgentId() {
  uuid_t uuid;
  uuid_generate(uuid);
  char text[37];
  uuid_unparse_lower(uuid, text);
  return text;
}

v1::AgentMessage BatchMessage(const SealedBatch& batch, const v1::AgentCounters& counters) {
  // The batch is already wire bytes (its batch_id and spans): the message carries them
  // as an unknown field with the number of its `batch` field, and serializing it writes
  // exactly what a message with that field set would, without parsing and serializing
  // every span again. The counters are the batch's last field, as protobuf orders them.
  v1::SpanBatch counters_only;
  *counters_only.mutable_counters() = counters;
  v1::AgentMessage message;
  std::string* field = message.GetReflection()->MutableUnknownFields(&message)
                           ->AddLengthDelimited(v1::AgentMessage::kBatchFieldNumber);
  field->reserve(batch.wire.size() + counters_only.ByteSizeLong());
  field->append(batch.wire);
  counters_only.AppendToString(field);
  return message;
}

Uploader::Uploader(UploaderOptions options, SpanBuffer* buffer, CounterSet* counters)
    : options_(std::move(options)), buffer_(buffer), counters_(counters) {}

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
  std::unique_ptr<v1::IngestService::Stub> stub = v1::IngestService::NewStub(channel);

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
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream =
      stub->Connect(&context);

  v1::AgentMessage hello;
  hello.mutable_hello()->set_node(options_.node);
  hello.mutable_hello()->set_agent_version(kVersion);
  hello.mutable_hello()->set_agent_id(options_.agent_id);
  hello.mutable_hello()->set_hostname(options_.hostname);
  if (!stream->Write(hello)) {
    grpc::Status st = stream->Finish();
    forget_context();
    return absl::UnavailableError(absl::StrCat("hello not sent: ", st.error_message()));
  }
  streams_opened_.fetch_add(1);
  buffer_->RewindForResend();

  std::atomic<bool> broken{false};
  std::thread reader([&] {
    v1::ControllerMessage message;
    while (stream->Read(&message)) {
      if (message.has_ack()) buffer_->Ack(message.ack().batch_id());
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
    if (std::shared_ptr<const SealedBatch> batch = buffer_->WaitNextToSend(wait)) {
      if (!stream->Write(BatchMessage(*batch, counters_->Snapshot()))) {
        failed = true;
        break;
      }
    }
    if (absl::Now() >= next_counters) {
      v1::AgentMessage message;
      *message.mutable_counters() = counters_->Snapshot();
      if (!stream->Write(message)) {
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

#include "controller/agent_session.h"

#include <utility>

#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/span_validation.h"

namespace reptrace::controller {

AgentSession::~AgentSession() { Finish(); }

absl::Status AgentSession::Start(const v1::AgentMessage& first) {
  if (!first.has_hello()) {
    return absl::InvalidArgumentError(
        "the first message of an ingest stream must be hello");
  }
  if (first.hello().agent_id().empty() || first.hello().node().empty()) {
    return absl::InvalidArgumentError("hello must carry a non-empty agent_id and node");
  }
  // writer_ is set only once the agent is recorded, so that a refused session never
  // marks anything disconnected.
  ASSIGN_OR_RETURN(std::unique_ptr<SpanWriter> writer, store_.NewWriter());
  const int64_t now_ns = absl::GetCurrentTimeNanos();
  RETURN_IF_ERROR(writer->AgentConnected(first.hello(), now_ns));
  writer_ = std::move(writer);
  connected_at_ns_ = now_ns;
  hello_ = first.hello();
  LogInfo("agent %s connected (node %s, version %s)", hello_.agent_id(), hello_.node(),
          hello_.agent_version());
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::BatchAck>> AgentSession::Handle(
    const v1::AgentMessage& message, int spans_unparseable) {
  if (writer_ == nullptr || finished_) {
    return absl::FailedPreconditionError("the session has not started or is over");
  }
  switch (message.msg_case()) {
    case v1::AgentMessage::kBatch: {
      ASSIGN_OR_RETURN(v1::BatchAck ack, HandleBatch(message.batch(), spans_unparseable));
      return std::optional<v1::BatchAck>(std::move(ack));
    }
    case v1::AgentMessage::kCounters:
      RETURN_IF_ERROR(writer_->AgentCounters(hello_.agent_id(), message.counters(),
                                             absl::GetCurrentTimeNanos()));
      return std::optional<v1::BatchAck>();
    case v1::AgentMessage::kConfigApplied:
      RETURN_IF_ERROR(writer_->AgentConfigApplied(
          hello_.agent_id(), message.config_applied().version(), absl::GetCurrentTimeNanos()));
      LogInfo("agent %s applied config version %d", hello_.agent_id(),
              message.config_applied().version());
      return std::optional<v1::BatchAck>();
    case v1::AgentMessage::kHello:
      return absl::InvalidArgumentError("hello may only be the first message of a stream");
    case v1::AgentMessage::MSG_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("empty agent message");
}

absl::StatusOr<v1::BatchAck> AgentSession::HandleBatch(const v1::SpanBatch& batch,
                                                       int spans_unparseable) {
  // Nearly always every span is valid: then the batch is stored as it came, not copied.
  ValidationResult checked;
  const v1::SpanBatch* valid = &batch;
  if (!AllSpansValid(batch)) {
    checked = ValidateBatch(batch);
    valid = &checked.valid;
  }
  if (spans_unparseable > 0) {
    if (checked.dropped == 0) checked.first_problem = "a span does not parse (not UTF-8?)";
    checked.dropped += spans_unparseable;
  }
  if (checked.dropped > 0) {
    LogWarning("agent %s batch %d: dropped %d malformed span(s); first: %s",
               hello_.agent_id(), batch.batch_id(), checked.dropped, checked.first_problem);
  }
  ASSIGN_OR_RETURN(WriteOutcome outcome,
                   writer_->WriteBatch(hello_.agent_id(), *valid, checked.dropped));
  v1::BatchAck ack;
  ack.set_batch_id(batch.batch_id());
  ack.set_duplicate(outcome.duplicate);
  return ack;
}

void AgentSession::Finish() {
  if (finished_ || writer_ == nullptr) {
    finished_ = true;
    return;
  }
  finished_ = true;
  absl::Status status =
      writer_->AgentDisconnected(hello_.agent_id(), connected_at_ns_,
                                 absl::GetCurrentTimeNanos());
  if (!status.ok()) {
    LogWarning("agent %s: %s", hello_.agent_id(), status.ToString());
  }
  LogInfo("agent %s disconnected", hello_.agent_id());
}

}  // namespace reptrace::controller

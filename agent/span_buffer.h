// The agent's bounded store of spans not yet acknowledged by the controller.
//
// Spans are grouped into batches: a batch is sealed when it holds `batch_max_spans`
// spans, or when its first span is `batch_interval` old. Sealed batches get increasing ids
// from 1 and stay until the controller acknowledges them. At most `max_spans` spans
// (sealed and open), taking at most `max_bytes` of memory (ApproximateMemory), are held;
// a span added beyond either is dropped and counted (spans_dropped). Thread-safe.
//
// Sending: NextToSend() hands out each sealed, unacknowledged batch once per stream, in id
// order (counting batches_sent, and batches_resent when the batch had been handed out
// before). After a reconnect, RewindForResend() makes every unacknowledged batch due again.
#ifndef REPTRACE_AGENT_SPAN_BUFFER_H_
#define REPTRACE_AGENT_SPAN_BUFFER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/counter_set.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

// The heap `span` takes in a batch, estimated from its fields (within a few percent of
// what glibc's malloc counts; protobuf's SpaceUsedLong() walks the message by reflection,
// costs more than building the span did, and leaves out malloc's headers).
size_t ApproximateMemory(const v1::Span& span);

struct SpanBufferOptions {
  size_t max_spans = 100000;
  size_t batch_max_spans = 500;
  absl::Duration batch_interval = absl::Milliseconds(200);
  size_t max_bytes = size_t{32} << 20;
};

class SpanBuffer {
 public:
  SpanBuffer(SpanBufferOptions options, CounterSet* counters);
  SpanBuffer(const SpanBuffer&) = delete;
  SpanBuffer& operator=(const SpanBuffer&) = delete;

  // Adds `span` to the open batch (opened at `now` if new); false if it was dropped.
  bool Add(v1::Span span, absl::Time now);
  // Seals the open batch if it is non-empty and at least batch_interval old at `now`.
  void SealDue(absl::Time now);
  // Seals the open batch if it is non-empty.
  void SealNow();

  // The next sealed batch not yet handed out on the current stream, or nullptr. The buffer
  // never changes a sealed batch; its one consumer (the uploader's thread) may set its
  // counters field before sending it.
  std::shared_ptr<v1::SpanBatch> NextToSend();
  // Like NextToSend(), but first seals a due batch (by absl::Now()) and waits up to
  // `timeout` for one; returns nullptr on timeout or Wake().
  std::shared_ptr<v1::SpanBatch> WaitNextToSend(absl::Duration timeout);
  // Makes waiters of WaitNextToSend() return.
  void Wake();

  // The controller stored `batch_id`: forget it. Unknown ids are ignored.
  void Ack(uint64_t batch_id);
  // A new stream: every unacknowledged batch is due again, in order.
  void RewindForResend();

  size_t unacked_batches() const;
  size_t spans_held() const;          // sealed and open
  size_t bytes_held() const;          // their ApproximateMemory()
  bool empty() const;                 // nothing sealed, nothing open

 private:
  struct Batch {
    std::shared_ptr<v1::SpanBatch> batch;
    size_t bytes = 0;         // ApproximateMemory of its spans
    bool handed_out = false;  // on any stream so far
  };

  void SealLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SpanBufferOptions options_;
  CounterSet* const counters_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Batch> sealed_ ABSL_GUARDED_BY(mu_);  // ordered by id
  std::vector<v1::Span> open_ ABSL_GUARDED_BY(mu_);
  absl::Time open_since_ ABSL_GUARDED_BY(mu_);
  size_t sealed_spans_ ABSL_GUARDED_BY(mu_) = 0;
  size_t open_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t sealed_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_batch_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_to_send_ ABSL_GUARDED_BY(mu_) = 1;  // lowest id not handed out on this stream
  uint64_t wake_generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_BUFFER_H_

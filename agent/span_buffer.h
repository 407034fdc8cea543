// The agent's bounded store of spans not yet acknowledged by the controller.
//
// Spans are grouped into batches: a batch is sealed when it holds `batch_max_spans`
// spans, or when its first span is `batch_interval` old. Sealed batches get increasing ids
// from 1 and stay until the controller acknowledges them. At most `max_spans` spans
// (sealed and open), taking at most `max_bytes` of memory (bytes_held()), are held;
// a span added beyond either is dropped and counted (spans_dropped). Thread-safe.
//
// A span is kept as its wire bytes, appended to its batch's one buffer when it is added:
// a batch is then one allocation, serialized once, sent as it is and freed at once (held
// as messages, each span was a dozen allocations, moved twice, serialized on sending and
// freed one field at a time when acknowledged: most of the agent's CPU per span). The
// buffer is allocated uninitialized (a std::string zeroes the room it reserves: a byte of
// memset per byte of batch) and handed to the sealed batch as it is.
//
// Sending: NextToSend() hands out each sealed, unacknowledged batch once per stream, in id
// order (counting batches_sent, and batches_resent when the batch had been handed out
// before). After a reconnect, RewindForResend() makes every unacknowledged batch due again.
#ifndef REPTRACE_AGENT_SPAN_BUFFER_H_
#define REPTRACE_AGENT_SPAN_BUFFER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/counter_set.h"
#include "agent/span_record.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

// A sealed batch: the wire bytes of a v1::SpanBatch holding its batch_id and its spans
// (everything but the counters, which the uploader adds as it sends it).
struct SealedBatch {
  uint64_t batch_id = 0;
  size_t spans = 0;
  // The first `size` bytes of `bytes` (which may hold more).
  std::unique_ptr<char[]> bytes;
  size_t size = 0;

  absl::string_view wire() const { return absl::string_view(bytes.get(), size); }
};

// The v1::SpanBatch a sealed batch is, with `counters`, as the controller receives it.
v1::SpanBatch ToSpanBatch(const SealedBatch& batch);

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
  bool Add(const SpanRecord& span, absl::Time now);
  // Seals the open batch if it is non-empty and at least batch_interval old at `now`.
  void SealDue(absl::Time now);
  // Seals the open batch if it is non-empty.
  void SealNow();

  // The next sealed batch not yet handed out on the current stream, or nullptr. The buffer
  // never changes a sealed batch.
  std::shared_ptr<const SealedBatch> NextToSend();
  // Like NextToSend(), but first seals a due batch (by absl::Now()) and waits up to
  // `timeout` for one; returns nullptr on timeout or Wake().
  std::shared_ptr<const SealedBatch> WaitNextToSend(absl::Duration timeout);
  // Makes waiters of WaitNextToSend() return.
  void Wake();

  // The controller stored `batch_id`: forget it. Unknown ids are ignored.
  void Ack(uint64_t batch_id);
  // A new stream: every unacknowledged batch is due again, in order.
  void RewindForResend();

  size_t unacked_batches() const;
  size_t spans_held() const;          // sealed and open
  // The heap they take: each batch's buffer and the buffer's records of it, as glibc's
  // malloc counts them (headers and rounding included).
  size_t bytes_held() const;
  bool empty() const;                 // nothing sealed, nothing open

 private:
  struct Batch {
    std::shared_ptr<const SealedBatch> batch;
    size_t bytes = 0;         // the heap it takes
    bool handed_out = false;  // on any stream so far
  };

  void SealLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SpanBufferOptions options_;
  CounterSet* const counters_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Batch> sealed_ ABSL_GUARDED_BY(mu_);  // ordered by id
  // The open batch: its batch_id field and its spans' wire bytes, the first open_used_
  // of the open_capacity_ bytes of open_ (nullptr between batches).
  std::unique_ptr<char[]> open_ ABSL_GUARDED_BY(mu_);
  size_t open_capacity_ ABSL_GUARDED_BY(mu_) = 0;
  size_t open_used_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t open_id_ ABSL_GUARDED_BY(mu_) = 0;
  size_t open_spans_ ABSL_GUARDED_BY(mu_) = 0;
  size_t last_batch_used_ ABSL_GUARDED_BY(mu_) = 0;  // the bytes of the last batch sealed
  // Where Add() writes a span before it is copied into the open batch.
  std::unique_ptr<char[]> scratch_ ABSL_GUARDED_BY(mu_);
  size_t scratch_capacity_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time open_since_ ABSL_GUARDED_BY(mu_);
  size_t sealed_spans_ ABSL_GUARDED_BY(mu_) = 0;
  size_t sealed_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_batch_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_to_send_ ABSL_GUARDED_BY(mu_) = 1;  // lowest id not handed out on this stream
  uint64_t wake_generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_BUFFER_H_

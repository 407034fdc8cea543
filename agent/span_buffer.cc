#include "agent/span_buffer.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace reptrace {

namespace {

// Sizes as glibc's malloc hands them out on x86-64: the request plus an 8-byte header,
// rounded up to 16 bytes.
constexpr size_t Chunk(size_t request) { return (request + 8 + 15) & ~size_t{15}; }

// A string's buffer, when it is longer than the small-string buffer (15 characters in
// libstdc++).
size_t BufferBytes(const std::string& s) {
  return s.capacity() > 15 ? Chunk(s.capacity() + 1) : 0;
}

// A set string field: protobuf 3.21 allocates its std::string apart.
size_t FieldBytes(const std::string& s) {
  return s.empty() ? 0 : Chunk(sizeof(std::string)) + BufferBytes(s);
}

}  // namespace

size_t ApproximateMemory(const v1::Span& span) {
  // What the heap holds for a span in a batch (which allocates each span apart): the span,
  // its set string fields, its endpoints, and its attributes map (a table, and a node per
  // entry holding key and value). The map's sizes are protobuf's internals, measured;
  // agent/span_buffer_test.cc checks the whole against what mallinfo2 counts.
  constexpr size_t kMapTable = 96;
  // A node: a link and the key and value strings in one allocation.
  constexpr size_t kMapNode = Chunk(2 * sizeof(std::string) + sizeof(void*));
  size_t bytes = Chunk(sizeof(v1::Span)) + sizeof(void*);  // and its slot in the batch
  bytes += FieldBytes(span.service()) + FieldBytes(span.node()) + FieldBytes(span.process()) +
           FieldBytes(span.name()) + FieldBytes(span.status_message());
  for (const v1::Endpoint* end : {&span.local(), &span.peer()}) {
    if (end == &v1::Endpoint::default_instance()) continue;  // not set
    bytes += Chunk(sizeof(v1::Endpoint)) + FieldBytes(end->ip());
  }
  if (!span.attributes().empty()) {
    bytes += kMapTable;
    for (const auto& [key, value] : span.attributes()) {
      bytes += kMapNode + BufferBytes(key) + BufferBytes(value);
    }
  }
  return bytes;
}

SpanBuffer::SpanBuffer(SpanBufferOptions options, CounterSet* counters)
    : options_(options), counters_(counters) {}

bool SpanBuffer::Add(v1::Span span, absl::Time now) {
  const size_t bytes = ApproximateMemory(span);
  absl::MutexLock lock(&mu_);
  if (sealed_spans_ + open_.size() >= options_.max_spans ||
      sealed_bytes_ + open_bytes_ + bytes > options_.max_bytes) {
    counters_->spans_dropped.fetch_add(1);
    return false;
  }
  if (open_.empty()) open_since_ = now;
  open_.push_back(std::move(span));
  open_bytes_ += bytes;
  if (open_.size() >= options_.batch_max_spans) SealLocked();
  return true;
}

void SpanBuffer::SealLocked() {
  if (open_.empty()) return;
  auto batch = std::make_shared<v1::SpanBatch>();
  batch->set_batch_id(next_batch_id_++);
  batch->mutable_spans()->Reserve(static_cast<int>(open_.size()));
  for (v1::Span& span : open_) *batch->add_spans() = std::move(span);
  sealed_spans_ += open_.size();
  sealed_bytes_ += open_bytes_;
  open_.clear();
  sealed_.push_back(Batch{std::move(batch), open_bytes_, false});
  open_bytes_ = 0;
  cv_.SignalAll();
}

void SpanBuffer::SealDue(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (!open_.empty() && now - open_since_ >= options_.batch_interval) SealLocked();
}

void SpanBuffer::SealNow() {
  absl::MutexLock lock(&mu_);
  SealLocked();
}

std::shared_ptr<v1::SpanBatch> SpanBuffer::NextToSend() {
  absl::MutexLock lock(&mu_);
  for (Batch& b : sealed_) {
    if (b.batch->batch_id() < next_to_send_) continue;
    next_to_send_ = b.batch->batch_id() + 1;
    counters_->batches_sent.fetch_add(1);
    if (b.handed_out) counters_->batches_resent.fetch_add(1);
    b.handed_out = true;
    return b.batch;
  }
  return nullptr;
}

std::shared_ptr<v1::SpanBatch> SpanBuffer::WaitNextToSend(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t generation = wake_generation_;
    while (true) {
      const absl::Time now = absl::Now();
      if (!open_.empty() && now - open_since_ >= options_.batch_interval) SealLocked();
      const bool due = !sealed_.empty() && sealed_.back().batch->batch_id() >= next_to_send_;
      if (due || wake_generation_ != generation || now >= deadline) break;
      absl::Time wake_at = deadline;
      if (!open_.empty()) wake_at = std::min(wake_at, open_since_ + options_.batch_interval);
      cv_.WaitWithDeadline(&mu_, wake_at);
    }
  }
  return NextToSend();
}

void SpanBuffer::Wake() {
  absl::MutexLock lock(&mu_);
  ++wake_generation_;
  cv_.SignalAll();
}

void SpanBuffer::Ack(uint64_t batch_id) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(sealed_.begin(), sealed_.end(),
                         [&](const Batch& b) { return b.batch->batch_id() == batch_id; });
  if (it == sealed_.end()) return;
  sealed_spans_ -= static_cast<size_t>(it->batch->spans_size());
  sealed_bytes_ -= it->bytes;
  sealed_.erase(it);
  counters_->batches_acked.fetch_add(1);
  cv_.SignalAll();
}

void SpanBuffer::RewindForResend() {
  absl::MutexLock lock(&mu_);
  next_to_send_ = sealed_.empty() ? next_batch_id_ : sealed_.front().batch->batch_id();
}

size_t SpanBuffer::unacked_batches() const {
  absl::MutexLock lock(&mu_);
  return sealed_.size();
}

size_t SpanBuffer::spans_held() const {
  absl::MutexLock lock(&mu_);
  return sealed_spans_ + open_.size();
}

size_t SpanBuffer::bytes_held() const {
  absl::MutexLock lock(&mu_);
  return sealed_bytes_ + open_bytes_;
}

bool SpanBuffer::empty() const {
  absl::MutexLock lock(&mu_);
  return sealed_.empty() && open_.empty();
}

}  // namespace reptrace

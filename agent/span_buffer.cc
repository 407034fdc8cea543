#include "agent/span_buffer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/time/clock.h"
#include "agent/span_wire.h"
#include "google/protobuf/io/coded_stream.h"

namespace reptrace {

namespace {

// Sizes as glibc's malloc hands them out on x86-64: the request plus an 8-byte header,
// rounded up to 16 bytes.
constexpr size_t Chunk(size_t request) { return (request + 8 + 15) & ~size_t{15}; }

// The heap a string with `capacity` takes (none within libstdc++'s 15-character
// small-string buffer).
constexpr size_t StringHeap(size_t capacity) { return capacity > 15 ? Chunk(capacity + 1) : 0; }

// The capacity libstdc++ gives a string of `capacity` that must hold `needed`: at least
// double (std::string::_M_create).
size_t GrownCapacity(size_t capacity, size_t needed) {
  if (needed <= capacity) return capacity;
  return std::max(needed, 2 * capacity);
}

// A sealed batch's own records: its shared SealedBatch (control block included) and its
// slot in the deque.
constexpr size_t kBatchOverhead = Chunk(sizeof(SealedBatch) + 16) + 32;

// Wire format of the SpanBatch fields the buffer writes.
constexpr uint8_t kBatchIdTag = (1 << 3) | 0;  // batch_id, varint
constexpr uint8_t kSpansTag = (2 << 3) | 2;    // spans, length-delimited
constexpr size_t kMaxVarint64 = 10;

}  // namespace

v1::SpanBatch ToSpanBatch(const SealedBatch& batch) {
  v1::SpanBatch message;
  if (!message.ParseFromString(batch.wire)) message.Clear();
  return message;
}

SpanBuffer::SpanBuffer(SpanBufferOptions options, CounterSet* counters)
    : options_(options), counters_(counters) {}

bool SpanBuffer::Add(const SpanRecord& span, absl::Time now) {
  using google::protobuf::io::CodedOutputStream;
  const size_t span_bytes = SpanWireSize(span);
  const size_t entry_bytes =
      1 + CodedOutputStream::VarintSize64(span_bytes) + span_bytes;
  absl::MutexLock lock(&mu_);
  // The open batch's heap once the span is in: its string, grown as libstdc++ grows it,
  // with room for the batch_id field written in front of it when it is sealed.
  const size_t open_needed =
      (open_spans_ == 0 ? 1 + kMaxVarint64 : open_.size()) + entry_bytes;
  const size_t open_bytes =
      StringHeap(GrownCapacity(open_.capacity(), open_needed)) + kBatchOverhead;
  if (sealed_spans_ + open_spans_ >= options_.max_spans ||
      sealed_bytes_ + open_bytes > options_.max_bytes) {
    counters_->spans_dropped.fetch_add(1);
    return false;
  }
  if (open_spans_ == 0) {
    open_since_ = now;
    // Room for the batch_id field, filled in (right-aligned) when the batch is sealed.
    open_.assign(1 + kMaxVarint64, '\0');
  }
  const size_t at = open_.size();
  open_.resize(at + entry_bytes);
  auto* out = reinterpret_cast<uint8_t*>(&open_[at]);
  *out++ = kSpansTag;
  out = CodedOutputStream::WriteVarint64ToArray(span_bytes, out);
  WriteSpanWire(span, out);
  ++open_spans_;
  if (open_spans_ >= options_.batch_max_spans) SealLocked();
  return true;
}

void SpanBuffer::SealLocked() {
  if (open_spans_ == 0) return;
  auto batch = std::make_shared<SealedBatch>();
  batch->batch_id = next_batch_id_++;
  batch->spans = open_spans_;
  // The batch_id field goes right before the spans, in the room left for it: the batch is
  // its string from there, without a copy.
  uint8_t field[1 + kMaxVarint64];
  field[0] = kBatchIdTag;
  const size_t field_bytes =
      google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(batch->batch_id,
                                                                     field + 1) -
      field;
  const size_t skip = 1 + kMaxVarint64 - field_bytes;
  std::memcpy(&open_[skip], field, field_bytes);
  const size_t bytes = StringHeap(open_.capacity()) + kBatchOverhead;
  batch->wire = std::move(open_);
  batch->wire.erase(0, skip);  // a memmove within the same allocation
  open_ = std::string();
  sealed_spans_ += open_spans_;
  sealed_bytes_ += bytes;
  open_spans_ = 0;
  sealed_.push_back(Batch{std::move(batch), bytes, false});
  cv_.SignalAll();
}

void SpanBuffer::SealDue(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (open_spans_ > 0 && now - open_since_ >= options_.batch_interval) SealLocked();
}

void SpanBuffer::SealNow() {
  absl::MutexLock lock(&mu_);
  SealLocked();
}

std::shared_ptr<const SealedBatch> SpanBuffer::NextToSend() {
  absl::MutexLock lock(&mu_);
  for (Batch& b : sealed_) {
    if (b.batch->batch_id < next_to_send_) continue;
    next_to_send_ = b.batch->batch_id + 1;
    counters_->batches_sent.fetch_add(1);
    if (b.handed_out) counters_->batches_resent.fetch_add(1);
    b.handed_out = true;
    return b.batch;
  }
  return nullptr;
}

std::shared_ptr<const SealedBatch> SpanBuffer::WaitNextToSend(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t generation = wake_generation_;
    while (true) {
      const absl::Time now = absl::Now();
      if (open_spans_ > 0 && now - open_since_ >= options_.batch_interval) SealLocked();
      const bool due = !sealed_.empty() && sealed_.back().batch->batch_id >= next_to_send_;
      if (due || wake_generation_ != generation || now >= deadline) break;
      absl::Time wake_at = deadline;
      if (open_spans_ > 0) wake_at = std::min(wake_at, open_since_ + options_.batch_interval);
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
                         [&](const Batch& b) { return b.batch->batch_id == batch_id; });
  if (it == sealed_.end()) return;
  sealed_spans_ -= it->batch->spans;
  sealed_bytes_ -= it->bytes;
  sealed_.erase(it);
  counters_->batches_acked.fetch_add(1);
  cv_.SignalAll();
}

void SpanBuffer::RewindForResend() {
  absl::MutexLock lock(&mu_);
  next_to_send_ = sealed_.empty() ? next_batch_id_ : sealed_.front().batch->batch_id;
}

size_t SpanBuffer::unacked_batches() const {
  absl::MutexLock lock(&mu_);
  return sealed_.size();
}

size_t SpanBuffer::spans_held() const {
  absl::MutexLock lock(&mu_);
  return sealed_spans_ + open_spans_;
}

size_t SpanBuffer::bytes_held() const {
  absl::MutexLock lock(&mu_);
  const size_t open_bytes =
      open_spans_ > 0 ? StringHeap(open_.capacity()) + kBatchOverhead : 0;
  return sealed_bytes_ + open_bytes;
}

bool SpanBuffer::empty() const {
  absl::MutexLock lock(&mu_);
  return sealed_.empty() && open_spans_ == 0;
}

}  // namespace reptrace

#include "agent/span_buffer.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/time/clock.h"
#include "agent/span_wire.h"
#include "google/protobuf/io/coded_stream.h"

namespace reptrace {

namespace {

// Sizes as glibc's malloc hands them out on x86-64: the request plus an 8-byte header,
// rounded up to 16 bytes.
constexpr size_t Chunk(size_t request) { return (request + 8 + 15) & ~size_t{15}; }

// The heap a batch buffer of `capacity` bytes takes (new char[capacity] is a malloc of it).
constexpr size_t BufferHeap(size_t capacity) { return capacity > 0 ? Chunk(capacity) : 0; }

// The capacity the open batch grows to from `capacity` to hold `needed`: at least double,
// as a std::string grows.
size_t GrownCapacity(size_t capacity, size_t needed) {
  if (needed <= capacity) return capacity;
  return std::max(needed, 2 * capacity);
}

// Uninitialized room (std::make_unique<char[]> would zero it, and it is all written over).
std::unique_ptr<char[]> NewBuffer(size_t capacity) {
  return std::unique_ptr<char[]>(new char[capacity]);
}

// A sealed batch's own records: its shared SealedBatch (control block included) and its
// slot in the deque.
constexpr size_t kBatchOverhead = Chunk(sizeof(SealedBatch) + 16) + 32;

// Wire format of the SpanBatch fields the buffer writes.
constexpr uint8_t kBatchIdTag = (1 << 3) | 0;  // batch_id, varint
constexpr uint8_t kSpansTag = (2 << 3) | 2;    // spans, length-delimited

}  // namespace

v1::SpanBatch ToSpanBatch(const SealedBatch& batch) {
  v1::SpanBatch message;
  if (!message.ParseFromArray(batch.bytes.get(), static_cast<int>(batch.size))) message.Clear();
  return message;
}

SpanBuffer::SpanBuffer(SpanBufferOptions options, CounterSet* counters)
    : options_(options), counters_(counters) {}

bool SpanBuffer::Add(const SpanRecord& span, absl::Time now) {
  using google::protobuf::io::CodedOutputStream;
  const size_t bound = SpanWireSizeBound(span);
  absl::MutexLock lock(&mu_);
  // The span is written once, into scratch_, whose end gives its size, and copied into the
  // batch if it fits: computing the size apart, field by field, cost a third of writing it.
  if (bound > scratch_capacity_) {
    scratch_capacity_ = std::max(bound, 2 * scratch_capacity_);
    scratch_ = NewBuffer(scratch_capacity_);
  }
  auto* span_begin = reinterpret_cast<uint8_t*>(scratch_.get());
  const size_t span_bytes = static_cast<size_t>(WriteSpanWire(span, span_begin) - span_begin);
  const size_t entry_bytes = 1 + CodedOutputStream::VarintSize64(span_bytes) + span_bytes;
  // The open batch's heap once the span is in.
  const size_t batch_id_field = 1 + CodedOutputStream::VarintSize64(next_batch_id_);
  const size_t open_needed = (open_spans_ == 0 ? batch_id_field : open_used_) + entry_bytes;
  // A new batch is given at once the room the last one took, and a little more: grown from
  // nothing by doubling, a batch's bytes were copied about twice over. Not when that room
  // would not fit in the bound: the span is then dropped only if its own bytes do not fit.
  size_t open_capacity = GrownCapacity(open_capacity_, open_needed);
  if (open_spans_ == 0) {
    const size_t room = std::max(open_needed, last_batch_used_ + last_batch_used_ / 8);
    if (sealed_bytes_ + BufferHeap(room) + kBatchOverhead <= options_.max_bytes) {
      open_capacity = room;
    }
  }
  const size_t open_bytes = BufferHeap(open_capacity) + kBatchOverhead;
  if (sealed_spans_ + open_spans_ >= options_.max_spans ||
      sealed_bytes_ + open_bytes > options_.max_bytes) {
    counters_->spans_dropped.fetch_add(1);
    return false;
  }
  if (open_spans_ == 0) {
    // The batch takes its id now, so that its batch_id field can go first: batches are
    // sealed in the order they are opened, so the ids still increase as they are sealed.
    open_since_ = now;
    open_id_ = next_batch_id_++;
    open_ = NewBuffer(open_capacity);
    open_capacity_ = open_capacity;
    auto* out = reinterpret_cast<uint8_t*>(open_.get());
    *out++ = kBatchIdTag;
    open_used_ = CodedOutputStream::WriteVarint64ToArray(open_id_, out) -
                 reinterpret_cast<uint8_t*>(open_.get());
  } else if (open_capacity > open_capacity_) {
    std::unique_ptr<char[]> grown = NewBuffer(open_capacity);
    std::memcpy(grown.get(), open_.get(), open_used_);
    open_ = std::move(grown);
    open_capacity_ = open_capacity;
  }
  auto* out = reinterpret_cast<uint8_t*>(open_.get() + open_used_);
  *out++ = kSpansTag;
  out = CodedOutputStream::WriteVarint64ToArray(span_bytes, out);
  std::memcpy(out, span_begin, span_bytes);
  open_used_ += entry_bytes;
  ++open_spans_;
  if (open_spans_ >= options_.batch_max_spans) SealLocked();
  return true;
}

void SpanBuffer::SealLocked() {
  if (open_spans_ == 0) return;
  auto batch = std::make_shared<SealedBatch>();
  batch->batch_id = open_id_;
  batch->spans = open_spans_;
  const size_t bytes = BufferHeap(open_capacity_) + kBatchOverhead;
  last_batch_used_ = open_used_;
  batch->bytes = std::move(open_);
  batch->size = open_used_;
  open_capacity_ = 0;
  open_used_ = 0;
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
  // No signal: an ack makes no batch due, so WaitNextToSend() would only wait again (it
  // was a wake-up of the sending thread per batch, for nothing).
}

void SpanBuffer::RewindForResend() {
  absl::MutexLock lock(&mu_);
  if (!sealed_.empty()) {
    next_to_send_ = sealed_.front().batch->batch_id;
  } else {
    next_to_send_ = open_spans_ > 0 ? open_id_ : next_batch_id_;
  }
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
      open_spans_ > 0 ? BufferHeap(open_capacity_) + kBatchOverhead : 0;
  return sealed_bytes_ + open_bytes;
}

bool SpanBuffer::empty() const {
  absl::MutexLock lock(&mu_);
  return sealed_.empty() && open_spans_ == 0;
}

}  // namespace reptrace

#include "agent/span_buffer.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace reptrace {

SpanBuffer::SpanBuffer(SpanBufferOptions options, CounterSet* counters)
    : options_(options), counters_(counters) {}

bool SpanBuffer::Add(v1::Span span, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (sealed_spans_ + open_.size() >= options_.max_spans) {
    counters_->spans_dropped.fetch_add(1);
    return false;
  }
  if (open_.empty()) open_since_ = now;
  open_.push_back(std::move(span));
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
  open_.clear();
  sealed_.push_back(Batch{std::move(batch), false});
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

bool SpanBuffer::empty() const {
  absl::MutexLock lock(&mu_);
  return sealed_.empty() && open_.empty();
}

}  // namespace reptrace

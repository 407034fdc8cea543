// EventRing: a bounded, lock-free multi-producer queue of fixed-size EventRecords.
//
// Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence number; a producer
// claims a cell with one compare-and-swap on the enqueue position, copies the record in
// and publishes it by bumping the cell's sequence. Push never blocks, never allocates and
// never takes a lock: a full ring makes TryPush return false and the caller counts a drop.
// Pop is safe from several consumers too (the hook has one shipper thread; at exit the
// flush may race with it harmlessly).
//
// The cells are mmap'ed on the first Init() (not at construction), so a process that never
// makes a traced connection pays nothing. The object itself is constant-initialised, so a
// global EventRing is usable from the first instruction of the process.
#ifndef REPTRACE_HOOK_EVENT_RING_H_
#define REPTRACE_HOOK_EVENT_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/event_record.h"

namespace reptrace::hook {

class EventRing {
 public:
  static constexpr size_t kDefaultCapacity = 8192;

  // `capacity` must be a power of two.
  constexpr explicit EventRing(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  EventRing(const EventRing&) = delete;
  EventRing& operator=(const EventRing&) = delete;
  ~EventRing() = default;  // the mapping lives as long as the process (see Release)

  // Maps the cells if not done yet. Thread-safe; false if the memory could not be mapped.
  bool Init();
  bool initialized() const { return cells_.load(std::memory_order_acquire) != nullptr; }

  // Copies `record` into the ring; false if the ring is full or not initialised.
  bool TryPush(const EventRecord& record);

  // In-place push, for the hot path (no record built on the stack, no 248-byte copy):
  // TryClaim reserves a cell and returns its record for the caller to fill, or nullptr
  // if the ring is full or not initialised; Commit(claim) publishes it. Every claim must
  // be committed promptly: the consumer waits at an uncommitted cell.
  class Claim {
   public:
    EventRecord* record() const { return record_; }

   private:
    friend class EventRing;
    EventRecord* record_ = nullptr;
    std::atomic<uint64_t>* sequence_ = nullptr;
    uint64_t pos_ = 0;
  };
  EventRecord* TryClaim(Claim* claim);
  void Commit(const Claim& claim);
  // Moves the oldest record into `*out`; false if the ring is empty.
  bool TryPop(EventRecord* out);

  // Forgets every queued record. Only when no other thread touches the ring (the child
  // side of fork(), a test).
  void Reset();
  // Unmaps the cells (tests). Same precondition as Reset.
  void Release();

  size_t capacity() const { return capacity_; }

 private:
  struct Cell {
    std::atomic<uint64_t> sequence;
    EventRecord record;
  };

  void InitSequences(Cell* cells) const;

  const size_t capacity_;
  std::atomic<Cell*> cells_{nullptr};
  alignas(64) std::atomic<uint64_t> enqueue_pos_{0};
  alignas(64) std::atomic<uint64_t> dequeue_pos_{0};
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_EVENT_RING_H_

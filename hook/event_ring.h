// EventRing: a bounded, lock-free multi-producer queue of records (common/event_record.h).
//
// Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence number; a producer
// claims a cell with one compare-and-swap on the enqueue position, copies the record in
// and publishes it by bumping the cell's sequence. Push never blocks, never allocates and
// never takes a lock: a full ring makes TryPush return false and the caller counts a drop.
// Every cell has room for the largest record (an EventRecord); a record's header.size
// says how much of its cell it uses, and only that much is copied out. A cell is 256 bytes
// with its sequence number, so a 48-byte DataRecord written at its start touches one
// cache line of it.
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

  // The room of one cell: the largest record.
  static constexpr size_t kCellBytes = kMaxRecordSize;

  // Copies the `size` bytes of `record` (a record: header first, size <= kCellBytes) into
  // the ring; false if the ring is full or not initialised.
  bool TryPush(const void* record, size_t size);
  bool TryPush(const EventRecord& record) { return TryPush(&record, sizeof(record)); }

  // In-place push, for the hot path (no record built on the stack, no copy): TryClaim
  // reserves a cell and returns its kCellBytes bytes (8-aligned, holding a stale record)
  // for the caller to write a record into, or nullptr if the ring is full or not
  // initialised; Commit(claim) publishes it. Every claim must be committed promptly, with
  // a valid header: the consumer waits at an uncommitted cell.
  class Claim {
   private:
    friend class EventRing;
    std::atomic<uint64_t>* sequence_ = nullptr;
    uint64_t pos_ = 0;
  };
  void* TryClaim(Claim* claim) {  // inline: it is most of a traced call's ring work
    Cell* cells = cells_.load(std::memory_order_acquire);
    if (cells == nullptr) return nullptr;
    const uint64_t mask = capacity_ - 1;
    uint64_t pos = enqueue_pos_.load(std::memory_order_relaxed);
    Cell* cell;
    for (;;) {
      cell = &cells[pos & mask];
      const uint64_t seq = cell->sequence.load(std::memory_order_acquire);
      const int64_t dif = static_cast<int64_t>(seq) - static_cast<int64_t>(pos);
      if (dif == 0) {
        if (enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return nullptr;  // full
      } else {
        pos = enqueue_pos_.load(std::memory_order_relaxed);
      }
    }
    claim->sequence_ = &cell->sequence;
    claim->pos_ = pos;
    return cell->bytes;
  }
  void Commit(const Claim& claim) {
    claim.sequence_->store(claim.pos_ + 1, std::memory_order_release);
  }
  // Moves the oldest record into `out` (kCellBytes of room): its header.size bytes (a
  // size that is not a record's is taken as kCellBytes). Returns that size, 0 if the ring
  // is empty.
  size_t TryPop(void* out);
  bool TryPop(EventRecord* out) { return TryPop(static_cast<void*>(out)) != 0; }

  // Records pushed since Init() or Reset() (a push that found the ring full is not one).
  uint64_t pushed() const { return enqueue_pos_.load(std::memory_order_relaxed); }

  // Forgets every queued record. Only when no other thread touches the ring (the child
  // side of fork(), a test).
  void Reset();
  // Unmaps the cells (tests). Same precondition as Reset.
  void Release();

  size_t capacity() const { return capacity_; }

 private:
  struct Cell {
    std::atomic<uint64_t> sequence;
    alignas(8) unsigned char bytes[kCellBytes];
  };
  static_assert(sizeof(Cell) == 256, "a cell is 4 cache lines; records start at a line's 8th byte");

  void InitSequences(Cell* cells) const;

  const size_t capacity_;
  std::atomic<Cell*> cells_{nullptr};
  alignas(64) std::atomic<uint64_t> enqueue_pos_{0};
  alignas(64) std::atomic<uint64_t> dequeue_pos_{0};
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_EVENT_RING_H_

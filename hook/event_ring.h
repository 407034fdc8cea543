// EventRing: the producer side of the ring a hooked process shares with the agent
// (common/shared_ring.h: layout, and why), a bounded, lock-free multi-producer queue.
//
// Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence number; a producer
// claims a cell with one compare-and-swap on the enqueue position, writes the record in
// place and publishes it by bumping the cell's sequence. Push never blocks, never allocates
// and never takes a lock: a full ring makes TryClaim return nullptr and the caller counts a
// drop. A record's header.size says how much of its cell it uses. A 48-byte DataRecord
// written at a cell's start touches one cache line of it.
//
// The memory is attached later (Attach: the agent link's memfd; Init: anonymous shared
// memory, for tests), so a process that never makes a traced connection pays nothing, and
// the object itself is constant-initialised, usable from the first instruction of the
// process. The agent reads with common/shared_ring.h's RingReader.
#ifndef REPTRACE_HOOK_EVENT_RING_H_
#define REPTRACE_HOOK_EVENT_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/event_record.h"
#include "common/shared_ring.h"

namespace reptrace::hook {

class EventRing {
 public:
  // 4096 cells of 256 bytes: 1 MiB per traced process, shared with the agent (and counted
  // in both). The agent drains a ring at least every 10 ms (every 1 ms while records
  // come), so it absorbs a burst of about 400 000 records a second arriving after a quiet
  // spell; at 8192 cells the flood benchmark's agent held 16 MiB of rings for 8 processes.
  static constexpr uint32_t kDefaultCapacity = 4096;

  // `capacity` must satisfy RingCapacityValid.
  constexpr explicit EventRing(uint32_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  EventRing(const EventRing&) = delete;
  EventRing& operator=(const EventRing&) = delete;
  ~EventRing() = default;  // the memory lives as long as the process (see Release)

  // Bytes of memory Attach needs.
  size_t bytes() const { return RingBytes(capacity_); }

  // Formats `memory` (bytes() long, mapped shared, zero-filled: a fresh memfd) as an empty
  // ring of process `pid` and makes it the ring pushes go to. Returns the memory it
  // replaces (nullptr if none): another thread may still be inside a claim on it, so the
  // caller must not unmap it.
  void* Attach(void* memory, uint32_t pid);
  // Stops using the ring memory and returns it (pushes fail until the next Attach). Only
  // when no other thread pushes (the child side of fork(), a test).
  void* Detach();
  // Attaches anonymous shared memory if nothing is attached (tests). Thread-safe.
  bool Init();
  bool initialized() const { return header_.load(std::memory_order_acquire) != nullptr; }
  RingHeader* header() const { return header_.load(std::memory_order_acquire); }

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
  // a valid header: the reader waits at an uncommitted cell.
  class Claim {
   public:
    // The claimed cell's position: the number of records pushed before it.
    uint64_t position() const { return pos_; }

   private:
    friend class EventRing;
    RingCell* cell_ = nullptr;
    uint64_t pos_ = 0;
    uint64_t index_ = 0;
  };
  void* TryClaim(Claim* claim) {  // inline: it is most of a traced call's ring work
    RingHeader* header = header_.load(std::memory_order_acquire);
    if (header == nullptr) return nullptr;
    RingCell* cells = RingCells(header);
    const uint64_t mask = capacity_ - 1;
    uint64_t pos = header->enqueue_pos.load(std::memory_order_relaxed);
    RingCell* cell;
    for (;;) {
      cell = &cells[pos & mask];
      const uint64_t seq = LoadSequence(*cell, pos & mask);
      const int64_t dif = static_cast<int64_t>(seq) - static_cast<int64_t>(pos);
      if (dif == 0) {
        if (header->enqueue_pos.compare_exchange_weak(pos, pos + 1,
                                                      std::memory_order_relaxed)) {
          break;
        }
      } else if (dif < 0) {
        return nullptr;  // full
      } else {
        pos = header->enqueue_pos.load(std::memory_order_relaxed);
      }
    }
    claim->cell_ = cell;
    claim->pos_ = pos;
    claim->index_ = pos & mask;
    return cell->bytes;
  }
  void Commit(const Claim& claim) { StoreSequence(*claim.cell_, claim.index_, claim.pos_ + 1); }
  // Counts a push that found no room in the ring's header, where the agent reads it.
  // Returns how many were counted before it, or UINT64_MAX if there is no ring to count it
  // in.
  uint64_t CountDrop() {
    RingHeader* header = header_.load(std::memory_order_acquire);
    if (header == nullptr) return UINT64_MAX;
    return header->dropped.fetch_add(1, std::memory_order_relaxed);
  }

  // Counts a record the rate limit refused; false if there is no ring to count it in.
  bool CountRateLimited(uint64_t n = 1) {
    RingHeader* header = header_.load(std::memory_order_acquire);
    if (header == nullptr) return false;
    header->rate_limited.fetch_add(n, std::memory_order_relaxed);
    return true;
  }

  // Records pushed and pushes refused since the ring was attached.
  uint64_t pushed() const;
  uint64_t dropped() const;

  // Forgets every queued record. Only when no other thread touches the ring (a test).
  void Reset();
  // Detaches and unmaps the memory Init() mapped (tests). Same precondition as Reset.
  void Release();

  uint32_t capacity() const { return capacity_; }

 private:
  const uint32_t capacity_;
  std::atomic<RingHeader*> header_{nullptr};
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_EVENT_RING_H_

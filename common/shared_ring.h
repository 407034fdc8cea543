// The ring a hooked process shares with reptrace-agent (wire version 3).
//
// libreptrace.so writes its records (common/event_record.h) into a ring in a memfd that it
// maps MAP_SHARED and hands to the agent once, with its HelloRecord (SCM_RIGHTS on the
// agent's Unix socket). The agent maps the same memory and drains it: no thread in the
// traced program, no system call per record or batch, and what a process wrote before it
// exited is still there for the agent to read after its socket closed.
//
// Layout: a RingHeader in the first kRingHeaderBytes, then `capacity` RingCells. It is
// Dmitry Vyukov's bounded MPMC queue with the consumer side reduced to one reader: each
// cell carries a sequence number (stored relative to the cell's index, see RingCell); a producer claims cell `pos` when its sequence is `pos`
// (a compare-and-swap on enqueue_pos), writes its record and publishes it by storing
// `pos + 1`; the reader takes the record when the sequence is `pos + 1` and frees the cell
// by storing `pos + capacity`. The atomics are lock-free and address-free, so they work
// across the two mappings.
//
// The memfd is sealed against shrinking and growing before it is handed over, so the agent
// never faults on a truncated file. The agent trusts nothing else in it: RingReader keeps
// its own position, reads each cell's sequence once, bounds every size and never loops on
// values the process wrote.
//
// Dependency-free (the hook includes it): no Abseil, no allocation.
#ifndef REPTRACE_COMMON_SHARED_RING_H_
#define REPTRACE_COMMON_SHARED_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/event_record.h"

namespace reptrace {

inline constexpr uint64_t kRingMagic = 0x31474e4952545052ull;  // "RPTRING1" in memory
inline constexpr size_t kRingHeaderBytes = 4096;
inline constexpr uint32_t kMinRingCapacity = 8;
inline constexpr uint32_t kMaxRingCapacity = 1u << 16;

struct RingHeader {
  uint64_t magic;         // kRingMagic
  uint32_t capacity;      // cells, a power of two in [kMinRingCapacity, kMaxRingCapacity]
  uint32_t cell_bytes;    // sizeof(RingCell)
  uint32_t pid;           // the process that made it
  // Which agent connection of the process the ring is being handed to (0, 1, ...): set by
  // the hook right before it sends the hello; the reader keeps the value it finds.
  uint32_t link_epoch;
  alignas(64) std::atomic<uint64_t> enqueue_pos;  // producers' claims: records pushed
  alignas(64) std::atomic<uint64_t> dequeue_pos;  // the reader's position (information only)
  alignas(64) std::atomic<uint64_t> dropped;      // pushes refused: ring full or not ready
  // When the hook loses an agent connection (the program closed our socket, the agent went
  // away) while the ring lives on for the next one: (epoch << 48) | position, the epoch of
  // the next connection and the first record that is that connection's (it follows the
  // re-announcements of the connections the lost agent knew). A reader of an earlier
  // epoch reads nothing from that position on.
  alignas(64) std::atomic<uint64_t> handover;
  // Data records the process did not make: its max_events_per_second token bucket was
  // empty (hook/settings.h). A reader of an older hook finds 0 here (a fresh memfd).
  alignas(64) std::atomic<uint64_t> rate_limited;
};
static_assert(sizeof(RingHeader) <= kRingHeaderBytes, "the header fits its page");
inline constexpr int kHandoverEpochShift = 48;
inline constexpr uint64_t kHandoverPositionMask = (uint64_t{1} << kHandoverEpochShift) - 1;
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

struct RingCell {
  // The Vyukov sequence number minus the cell's index (pos & (capacity - 1)): so a fresh,
  // zero-filled memfd is an empty ring at once, and making one touches none of its pages
  // (they fault in as the ring is first used). Read and written through the two helpers.
  std::atomic<uint64_t> sequence;
  alignas(8) unsigned char bytes[kMaxRecordSize];
};

inline uint64_t LoadSequence(const RingCell& cell, uint64_t index) {
  return cell.sequence.load(std::memory_order_acquire) + index;
}
inline void StoreSequence(RingCell& cell, uint64_t index, uint64_t sequence) {
  cell.sequence.store(sequence - index, std::memory_order_release);
}
static_assert(sizeof(RingCell) == 256, "a cell is 4 cache lines; records start at byte 8");

constexpr bool RingCapacityValid(uint64_t capacity) {
  return capacity >= kMinRingCapacity && capacity <= kMaxRingCapacity &&
         (capacity & (capacity - 1)) == 0;
}

constexpr size_t RingBytes(uint32_t capacity) {
  return kRingHeaderBytes + size_t{capacity} * sizeof(RingCell);
}

inline RingCell* RingCells(RingHeader* header) {
  return reinterpret_cast<RingCell*>(reinterpret_cast<unsigned char*>(header) +
                                     kRingHeaderBytes);
}

// Formats `memory` (RingBytes(capacity)) as an empty ring. `zero_filled`: the cells are all
// zero already (a fresh memfd or anonymous mapping) and are not touched.
inline void FormatRing(void* memory, uint32_t capacity, uint32_t pid, bool zero_filled) {
  auto* header = static_cast<RingHeader*>(memory);
  header->magic = kRingMagic;
  header->capacity = capacity;
  header->cell_bytes = sizeof(RingCell);
  header->pid = pid;
  header->link_epoch = 0;
  header->enqueue_pos.store(0, std::memory_order_relaxed);
  header->dequeue_pos.store(0, std::memory_order_relaxed);
  header->dropped.store(0, std::memory_order_relaxed);
  header->handover.store(0, std::memory_order_relaxed);
  if (!zero_filled) {
    RingCell* cells = RingCells(header);
    for (uint32_t i = 0; i < capacity; ++i) cells[i].sequence.store(0, std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_release);
}

// Whether the first `size` bytes at `memory` are a ring this code can read: the magic, a
// valid capacity whose ring fits exactly, the cell size. Read once: the caller keeps the
// capacity it got here, never the header's later value.
inline bool RingLayoutValid(const void* memory, size_t size, uint32_t* capacity) {
  if (size < kRingHeaderBytes) return false;
  const auto* header = static_cast<const RingHeader*>(memory);
  const uint32_t cap = header->capacity;
  if (header->magic != kRingMagic || header->cell_bytes != sizeof(RingCell) ||
      !RingCapacityValid(cap) || RingBytes(cap) != size) {
    return false;
  }
  *capacity = cap;
  return true;
}

// The one reader of a ring. Not thread-safe (one reader per ring).
class RingReader {
 public:
  RingReader() = default;
  // `header`: a mapping of RingBytes(capacity) bytes; `capacity` as RingLayoutValid gave it.
  // Starts where the header says the last reader stopped (a ring handed to a restarted
  // agent); a wrong value there only makes Pop find nothing.
  RingReader(RingHeader* header, uint32_t capacity)
      : header_(header), cells_(RingCells(header)), mask_(capacity - 1),
        pos_(header->dequeue_pos.load(std::memory_order_relaxed)),
        epoch_(*static_cast<volatile uint32_t*>(&header->link_epoch)) {}

  // Copies the next record into `out` (kMaxRecordSize bytes of room) and frees its cell:
  // the header's size if it is a possible record size, else the whole cell (the decoder
  // then rejects it). Returns the size copied, 0 if the next cell is not published yet.
  size_t Pop(void* out) {
    if (header_ == nullptr) return 0;
    const uint64_t handover = header_->handover.load(std::memory_order_acquire);
    if ((handover >> kHandoverEpochShift) > epoch_ &&
        pos_ >= (handover & kHandoverPositionMask)) {
      return 0;  // the rest is the next agent connection's
    }
    const uint64_t index = pos_ & mask_;
    RingCell& cell = cells_[index];
    if (LoadSequence(cell, index) != pos_ + 1) return 0;
    RecordHeader head;
    std::memcpy(&head, cell.bytes, sizeof(head));
    const size_t size =
        head.size >= sizeof(RecordHeader) && head.size <= kMaxRecordSize ? head.size
                                                                         : kMaxRecordSize;
    std::memcpy(out, cell.bytes, size);
    StoreSequence(cell, index, pos_ + mask_ + 1);
    ++pos_;
    header_->dequeue_pos.store(pos_, std::memory_order_relaxed);
    return size;
  }

  // Records taken so far.
  uint64_t position() const { return pos_; }
  // What the producers say they pushed and dropped (the process can write anything there:
  // for counters only).
  uint64_t pushed() const {
    return header_ ? header_->enqueue_pos.load(std::memory_order_relaxed) : 0;
  }
  uint64_t dropped() const {
    return header_ ? header_->dropped.load(std::memory_order_relaxed) : 0;
  }
  uint64_t rate_limited() const {
    return header_ ? header_->rate_limited.load(std::memory_order_relaxed) : 0;
  }

 private:
  RingHeader* header_ = nullptr;
  RingCell* cells_ = nullptr;
  uint64_t mask_ = 0;
  uint64_t pos_ = 0;
  uint32_t epoch_ = 0;
};

}  // namespace reptrace

#endif  // REPTRACE_COMMON_SHARED_RING_H_

#include "hook/event_ring.h"

#include <sys/mman.h>

#include <cstring>

namespace reptrace::hook {

void EventRing::InitSequences(Cell* cells) const {
  for (size_t i = 0; i < capacity_; ++i) {
    cells[i].sequence.store(i, std::memory_order_relaxed);
  }
}

bool EventRing::Init() {
  if (cells_.load(std::memory_order_acquire) != nullptr) return true;
  void* mem = mmap(nullptr, capacity_ * sizeof(Cell), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  Cell* cells = static_cast<Cell*>(mem);  // zero-filled: a valid bit pattern for Cell
  InitSequences(cells);
  Cell* expected = nullptr;
  if (!cells_.compare_exchange_strong(expected, cells, std::memory_order_acq_rel)) {
    munmap(mem, capacity_ * sizeof(Cell));  // another thread won the race
  }
  return true;
}

bool EventRing::TryPush(const void* record, size_t size) {
  Claim claim;
  void* slot = TryClaim(&claim);
  if (slot == nullptr) return false;
  std::memcpy(slot, record, size <= kCellBytes ? size : kCellBytes);
  Commit(claim);
  return true;
}

size_t EventRing::TryPop(void* out) {
  Cell* cells = cells_.load(std::memory_order_acquire);
  if (cells == nullptr) return 0;
  const uint64_t mask = capacity_ - 1;
  uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
  Cell* cell;
  for (;;) {
    cell = &cells[pos & mask];
    const uint64_t seq = cell->sequence.load(std::memory_order_acquire);
    const int64_t dif = static_cast<int64_t>(seq) - static_cast<int64_t>(pos + 1);
    if (dif == 0) {
      if (dequeue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
    } else if (dif < 0) {
      return 0;  // empty (or the producer of this cell has not published yet)
    } else {
      pos = dequeue_pos_.load(std::memory_order_relaxed);
    }
  }
  RecordHeader header;
  std::memcpy(&header, cell->bytes, sizeof(header));
  const size_t size = header.size >= sizeof(RecordHeader) && header.size <= kCellBytes
                          ? header.size
                          : kCellBytes;
  std::memcpy(out, cell->bytes, size);
  cell->sequence.store(pos + mask + 1, std::memory_order_release);
  return size;
}

void EventRing::Reset() {
  enqueue_pos_.store(0, std::memory_order_relaxed);
  dequeue_pos_.store(0, std::memory_order_relaxed);
  Cell* cells = cells_.load(std::memory_order_acquire);
  if (cells != nullptr) InitSequences(cells);
}

void EventRing::Release() {
  Cell* cells = cells_.exchange(nullptr, std::memory_order_acq_rel);
  if (cells != nullptr) munmap(cells, capacity_ * sizeof(Cell));
  enqueue_pos_.store(0, std::memory_order_relaxed);
  dequeue_pos_.store(0, std::memory_order_relaxed);
}

}  // namespace reptrace::hook

#include "hook/event_ring.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace reptrace::hook {

void* EventRing::Attach(void* memory, uint32_t pid) {
  FormatRing(memory, capacity_, pid, /*zero_filled=*/true);
  return header_.exchange(static_cast<RingHeader*>(memory), std::memory_order_acq_rel);
}

void* EventRing::Detach() { return header_.exchange(nullptr, std::memory_order_acq_rel); }

bool EventRing::Init() {
  if (initialized()) return true;
  void* mem = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  FormatRing(mem, capacity_, static_cast<uint32_t>(getpid()), /*zero_filled=*/true);
  RingHeader* expected = nullptr;
  if (!header_.compare_exchange_strong(expected, static_cast<RingHeader*>(mem),
                                       std::memory_order_acq_rel)) {
    munmap(mem, bytes());  // another thread won the race
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

uint64_t EventRing::pushed() const {
  const RingHeader* header = header_.load(std::memory_order_acquire);
  return header ? header->enqueue_pos.load(std::memory_order_relaxed) : 0;
}

uint64_t EventRing::dropped() const {
  const RingHeader* header = header_.load(std::memory_order_acquire);
  return header ? header->dropped.load(std::memory_order_relaxed) : 0;
}

void EventRing::Reset() {
  RingHeader* header = header_.load(std::memory_order_acquire);
  if (header != nullptr) FormatRing(header, capacity_, header->pid, /*zero_filled=*/false);
}

void EventRing::Release() {
  void* memory = Detach();
  if (memory != nullptr) munmap(memory, bytes());
}

}  // namespace reptrace::hook

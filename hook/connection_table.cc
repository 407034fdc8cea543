#include "hook/connection_table.h"

#include <sys/mman.h>
#include <sys/resource.h>

namespace reptrace::hook {

bool ConnectionTable::Map() {
  if (slots_.load(std::memory_order_acquire) != nullptr) return true;
  size_t size = 65536;
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    // The hard limit: a program may raise its soft limit later (nginx does).
    const rlim_t want = limit.rlim_max > limit.rlim_cur ? limit.rlim_max : limit.rlim_cur;
    size = (want == RLIM_INFINITY || want > kMaxFds) ? kMaxFds : static_cast<size_t>(want);
    if (size < 1024) size = 1024;
  }
  void* mem = mmap(nullptr, size * sizeof(ConnectionState), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return false;
  // Two threads may race here: only the winner publishes its size, after the pointer. A
  // reader that sees the pointer but not yet the size sees an empty table (untraced fds).
  ConnectionState* expected = nullptr;
  if (slots_.compare_exchange_strong(expected, static_cast<ConnectionState*>(mem),
                                     std::memory_order_acq_rel)) {
    size_.store(size, std::memory_order_release);
  } else {
    munmap(mem, size * sizeof(ConnectionState));
  }
  return true;
}

bool ConnectionTable::Start(int fd, uint64_t conn_id, uint8_t role,
                            const Endpoints& endpoints) {
  if (fd < 0 || !Map()) return false;
  ConnectionState* slots = slots_.load(std::memory_order_acquire);
  if (static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) return false;
  ConnectionState& state = slots[fd];
  state.conn_id.store(0, std::memory_order_relaxed);
  state.bytes_sent.store(0, std::memory_order_relaxed);
  state.bytes_received.store(0, std::memory_order_relaxed);
  state.last_direction.store(0, std::memory_order_relaxed);
  state.role = role;
  state.endpoints = endpoints;
  state.conn_id.store(conn_id, std::memory_order_release);
  return true;
}

uint64_t ConnectionTable::Stop(int fd, ConnectionState* snapshot) {
  ConnectionState* slots = slots_.load(std::memory_order_acquire);
  if (slots == nullptr || fd < 0 ||
      static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) {
    return 0;
  }
  ConnectionState& state = slots[fd];
  if (state.conn_id.load(std::memory_order_acquire) == 0) return 0;
  if (snapshot != nullptr) {
    snapshot->bytes_sent.store(state.bytes_sent.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
    snapshot->bytes_received.store(state.bytes_received.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    snapshot->last_direction.store(state.last_direction.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    snapshot->role = state.role;
    snapshot->endpoints = state.endpoints;
  }
  const uint64_t conn_id = state.conn_id.exchange(0, std::memory_order_acq_rel);
  if (snapshot != nullptr) snapshot->conn_id.store(conn_id, std::memory_order_relaxed);
  return conn_id;
}

void ConnectionTable::Reset() {
  const size_t size = size_.exchange(0, std::memory_order_acq_rel);
  ConnectionState* slots = slots_.exchange(nullptr, std::memory_order_acq_rel);
  if (slots != nullptr) munmap(slots, size * sizeof(ConnectionState));
}

}  // namespace reptrace::hook

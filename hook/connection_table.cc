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
  const size_t slot_bytes = size * sizeof(std::atomic<ConnectionState*>);
  const size_t bytes = slot_bytes + size * sizeof(ConnectionState);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return false;
  // Two threads may race here: only the winner publishes its size, after the pointer. A
  // reader that sees the pointer but not yet the size sees an empty table (untraced fds).
  std::atomic<ConnectionState*>* expected = nullptr;
  auto* slots = static_cast<std::atomic<ConnectionState*>*>(mem);
  if (slots_.compare_exchange_strong(expected, slots, std::memory_order_acq_rel)) {
    records_ = reinterpret_cast<ConnectionState*>(static_cast<char*>(mem) + slot_bytes);
    mapped_bytes_ = bytes;
    size_.store(size, std::memory_order_release);
  } else {
    munmap(mem, bytes);
    // Wait for the winner to publish (a few instructions away).
    while (size_.load(std::memory_order_acquire) == 0) {
    }
  }
  return true;
}

ConnectionState* ConnectionTable::Allocate() {
  uint64_t head = free_head_.load(std::memory_order_acquire);
  while ((head & 0xffffffffu) != 0) {
    ConnectionState* state = &records_[(head & 0xffffffffu) - 1];
    const uint64_t next = ((head >> 32) + 1) << 32 | state->next_free;
    if (free_head_.compare_exchange_weak(head, next, std::memory_order_acq_rel)) return state;
  }
  const uint32_t index = next_unused_.fetch_add(1, std::memory_order_relaxed);
  if (index >= size_.load(std::memory_order_acquire)) return nullptr;
  return &records_[index];
}

void ConnectionTable::Release(ConnectionState* state) {
  state->conn_id.store(0, std::memory_order_release);
  const uint32_t link = static_cast<uint32_t>(state - records_) + 1;
  uint64_t head = free_head_.load(std::memory_order_acquire);
  for (;;) {
    state->next_free = static_cast<uint32_t>(head & 0xffffffffu);
    const uint64_t next = ((head >> 32) + 1) << 32 | link;
    if (free_head_.compare_exchange_weak(head, next, std::memory_order_acq_rel)) return;
  }
}

void ConnectionTable::NoteFd(int fd) {
  int limit = fd_limit_.load(std::memory_order_relaxed);
  while (limit < fd + 1 &&
         !fd_limit_.compare_exchange_weak(limit, fd + 1, std::memory_order_acq_rel)) {
  }
}

bool ConnectionTable::Start(int fd, uint64_t conn_id, uint8_t role,
                            const Endpoints& endpoints, uint32_t announced,
                            inband::Mode send_mode, inband::Mode receive_mode,
                            uint64_t config_seq, bool reporting) {
  if (fd < 0 || !Map()) return false;
  std::atomic<ConnectionState*>* slots = slots_.load(std::memory_order_acquire);
  if (static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) return false;
  ConnectionState* state = Allocate();
  if (state == nullptr) return false;
  state->bytes_sent.store(0, std::memory_order_relaxed);
  state->bytes_received.store(0, std::memory_order_relaxed);
  state->last_direction.store(0, std::memory_order_relaxed);
  state->message_start.store(0, std::memory_order_relaxed);
  state->tls.store(0, std::memory_order_relaxed);
  state->refs.store(1, std::memory_order_relaxed);
  state->role = role;
  state->announced.store(announced, std::memory_order_relaxed);
  state->config_seq.store(config_seq, std::memory_order_relaxed);
  state->reporting.store(reporting ? 1 : 0, std::memory_order_relaxed);
  state->endpoints = endpoints;
  state->inband.Reset(send_mode, receive_mode);
  state->conn_id.store(conn_id, std::memory_order_release);
  NoteFd(fd);
  ConnectionState* previous = slots[fd].exchange(state, std::memory_order_acq_rel);
  if (previous != nullptr && previous->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    Release(previous);
  }
  return true;
}

bool ConnectionTable::Share(int new_fd, int old_fd) {
  ConnectionState* state = Find(old_fd);
  std::atomic<ConnectionState*>* slots = slots_.load(std::memory_order_acquire);
  if (state == nullptr || new_fd < 0 ||
      static_cast<size_t>(new_fd) >= size_.load(std::memory_order_acquire)) {
    return false;
  }
  // Take a reference only while the record is alive (a concurrent last Stop may free it).
  uint32_t refs = state->refs.load(std::memory_order_acquire);
  do {
    if (refs == 0) return false;
  } while (!state->refs.compare_exchange_weak(refs, refs + 1, std::memory_order_acq_rel));
  NoteFd(new_fd);
  ConnectionState* previous = slots[new_fd].exchange(state, std::memory_order_acq_rel);
  if (previous != nullptr && previous->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    Release(previous);
  }
  return true;
}

uint64_t ConnectionTable::Stop(int fd, ConnectionState* snapshot, bool* last) {
  if (last != nullptr) *last = false;
  std::atomic<ConnectionState*>* slots = slots_.load(std::memory_order_acquire);
  if (slots == nullptr || fd < 0 ||
      static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) {
    return 0;
  }
  ConnectionState* state = slots[fd].exchange(nullptr, std::memory_order_acq_rel);
  if (state == nullptr) return 0;
  const uint64_t conn_id = state->conn_id.load(std::memory_order_acquire);
  if (snapshot != nullptr) {
    snapshot->conn_id.store(conn_id, std::memory_order_relaxed);
    snapshot->bytes_sent.store(state->bytes_sent.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
    snapshot->bytes_received.store(state->bytes_received.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    snapshot->last_direction.store(state->last_direction.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    snapshot->tls.store(state->tls.load(std::memory_order_relaxed), std::memory_order_relaxed);
    snapshot->announced.store(state->announced.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
    snapshot->config_seq.store(state->config_seq.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
    snapshot->reporting.store(state->reporting.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
    snapshot->role = state->role;
    snapshot->endpoints = state->endpoints;
  }
  if (state->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (last != nullptr) *last = true;
    Release(state);
  }
  return conn_id;
}

}  // namespace reptrace::hook

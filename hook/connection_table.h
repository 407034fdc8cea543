// ConnectionTable: per-fd state of the TCP connections the hook traces.
//
// A flat array indexed by fd, mmap'ed (MAP_NORESERVE) on the first traced connection and
// sized to RLIMIT_NOFILE's hard limit, capped at kMaxFds: only the pages of fds actually
// used are ever backed. Looking up an untraced fd costs one load of the table pointer and,
// if a table exists, one load of the slot's conn_id. Nothing here allocates or locks.
//
// A slot is published by storing its conn_id last (release) and read by loading conn_id
// first (acquire), so a reader that sees a conn_id sees the slot's addresses and role.
#ifndef REPTRACE_HOOK_CONNECTION_TABLE_H_
#define REPTRACE_HOOK_CONNECTION_TABLE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace reptrace::hook {

// Who the two ends of a connection are, as they go into an EventRecord.
struct Endpoints {
  uint8_t family = 0;  // 4 or 6
  uint16_t local_port = 0;
  uint16_t peer_port = 0;
  uint8_t local_addr[16] = {};
  uint8_t peer_addr[16] = {};
};

struct ConnectionState {
  std::atomic<uint64_t> conn_id;  // 0: the fd is not traced
  std::atomic<uint64_t> bytes_sent;
  std::atomic<uint64_t> bytes_received;
  std::atomic<uint8_t> last_direction;  // EventKind kSend/kRecv of the last bytes, 0 = none
  uint8_t role;                         // SocketRole
  Endpoints endpoints;
};

class ConnectionTable {
 public:
  static constexpr size_t kMaxFds = size_t{1} << 20;

  constexpr ConnectionTable() = default;
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  // The state of `fd` if it is traced, else nullptr. The hot path: no syscall.
  ConnectionState* Find(int fd) const {
    ConnectionState* slots = slots_.load(std::memory_order_acquire);
    if (slots == nullptr || fd < 0 || static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) {
      return nullptr;
    }
    ConnectionState* state = &slots[fd];
    return state->conn_id.load(std::memory_order_acquire) != 0 ? state : nullptr;
  }

  // Starts tracing `fd` as connection `conn_id` (non-zero), with zeroed counters. Maps the
  // table on first use. False if `fd` is out of range or the table cannot be mapped.
  bool Start(int fd, uint64_t conn_id, uint8_t role, const Endpoints& endpoints);

  // Stops tracing `fd`: copies its state to `*snapshot` (if not null) and clears it.
  // Returns the conn_id it had, 0 if it was not traced. Atomic against a concurrent Stop.
  uint64_t Stop(int fd, ConnectionState* snapshot);

  // Forgets every connection (the child side of fork(): inherited connections are not
  // traced). Only when no other thread touches the table.
  void Reset();

 private:
  bool Map();

  std::atomic<ConnectionState*> slots_{nullptr};
  std::atomic<size_t> size_{0};  // published after slots_; 0 reads as an empty table
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_CONNECTION_TABLE_H_

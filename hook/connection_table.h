// ConnectionTable: per-fd state of the TCP and UDP conversations the hook traces.
//
// A flat array of slots indexed by fd, mmap'ed (MAP_NORESERVE) on the first traced
// connection and sized to RLIMIT_NOFILE's hard limit, capped at kMaxFds: only the pages of
// fds actually used are ever backed. A slot points at a ConnectionState record; duplicates
// of an fd (dup, dup2, dup3, fcntl F_DUPFD) point at the same record, so the offsets of a
// connection stay exact whichever fd the program uses, and the record lives until the last
// fd pointing at it is stopped (a reference count). Records come from a pool in the same
// mapping (one per fd at most), recycled through a lock-free free list.
//
// Looking up an untraced fd costs one load of the table pointer and, if a table exists,
// one load of the slot. Nothing here allocates or locks.
#ifndef REPTRACE_HOOK_CONNECTION_TABLE_H_
#define REPTRACE_HOOK_CONNECTION_TABLE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "hook/inband.h"

namespace reptrace::hook {

// Who the two ends of a connection are, as they go into an EventRecord.
struct Endpoints {
  uint8_t family = 0;    // 4 or 6: the family of the socket
  uint8_t protocol = 0;  // IPPROTO_TCP or IPPROTO_UDP
  uint16_t local_port = 0;
  uint16_t peer_port = 0;
  uint8_t local_addr[16] = {};
  uint8_t peer_addr[16] = {};
};

struct ConnectionState {
  std::atomic<uint64_t> conn_id;  // 0: free
  std::atomic<uint64_t> bytes_sent;
  std::atomic<uint64_t> bytes_received;
  std::atomic<uint8_t> last_direction;  // EventKind kSend/kRecv of the last bytes, 0 = none
  // The offset (in last_direction) at which the current message began.
  std::atomic<uint64_t> message_start;
  // 1: the connection carries TLS; its counters and events are plaintext (see tls.h).
  std::atomic<uint8_t> tls;
  uint8_t role;                         // SocketRole
  std::atomic<uint32_t> refs;           // fds pointing at this record
  uint32_t next_free;                   // free-list link: record index + 1, 0 = end
  // The link generation (agent_link.h) under which the open record went into the ring;
  // 0: it never did (the ring was full).
  std::atomic<uint32_t> announced;
  // The config page seq under which `reporting` was decided (hook/settings.h); 0: not yet.
  std::atomic<uint64_t> config_seq;
  // 1: the config traces this connection (records are made); 0: only its bytes are counted.
  std::atomic<uint8_t> reporting;
  Endpoints endpoints;
  // In-band mode (hook/inband.h): framing and stripping of the connection's bytes.
  inband::State inband;
};

class ConnectionTable {
 public:
  static constexpr size_t kMaxFds = size_t{1} << 20;

  constexpr ConnectionTable() = default;
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  // The state of `fd` if it is traced, else nullptr. The hot path: no syscall.
  ConnectionState* Find(int fd) const {
    std::atomic<ConnectionState*>* slots = slots_.load(std::memory_order_acquire);
    if (slots == nullptr || fd < 0 ||
        static_cast<size_t>(fd) >= size_.load(std::memory_order_acquire)) {
      return nullptr;
    }
    return slots[fd].load(std::memory_order_acquire);
  }

  // Starts tracing `fd` as a new connection `conn_id` (non-zero), with zeroed counters,
  // announced under link generation `announced`, its in-band state in these modes. Maps the table on first use. False if
  // `fd` is out of range or no record is free. If `fd` was traced, that reference is
  // dropped (callers Stop() it first to report it).
  // `config_seq` and `reporting`: the config decision it starts with (hook/settings.h;
  // config_seq 0: to be decided on its first call).
  bool Start(int fd, uint64_t conn_id, uint8_t role, const Endpoints& endpoints,
             uint32_t announced, inband::Mode send_mode = inband::Mode::kPlain,
             inband::Mode receive_mode = inband::Mode::kPlain, uint64_t config_seq = 0,
             bool reporting = true);

  // `new_fd` is now a duplicate of `old_fd`: both name the same connection. False (and
  // `new_fd` untraced) if `old_fd` is not traced.
  bool Share(int new_fd, int old_fd);

  // Stops tracing `fd`: copies its state to `*snapshot` (if not null) and clears the slot.
  // Returns the conn_id it had, 0 if it was not traced. `*last` (if not null) says whether
  // this was the last fd of the connection (then the connection has ended). Atomic against
  // a concurrent Stop of the same fd.
  uint64_t Stop(int fd, ConnectionState* snapshot, bool* last);

  // One more than the highest fd ever traced (a bound for scanning fd ranges).
  int FdLimit() const { return fd_limit_.load(std::memory_order_acquire); }

 private:
  bool Map();
  ConnectionState* Allocate();
  void Release(ConnectionState* state);
  void NoteFd(int fd);

  std::atomic<std::atomic<ConnectionState*>*> slots_{nullptr};
  std::atomic<size_t> size_{0};  // published after slots_; 0 reads as an empty table
  ConnectionState* records_ = nullptr;  // size_ records after the slots, same mapping
  size_t mapped_bytes_ = 0;
  std::atomic<uint32_t> next_unused_{0};  // records never handed out start here
  std::atomic<uint64_t> free_head_{0};    // tag << 32 | (index + 1)
  std::atomic<int> fd_limit_{0};
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_CONNECTION_TABLE_H_

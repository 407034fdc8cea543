// Accepts the connections of hooked processes on the agent's Unix socket and feeds their
// records to a SpanBuilder, on one epoll loop thread with non-blocking sockets.
//
// Start() creates the socket's parent directory, removes a stale socket file, binds,
// and makes the socket connectable by any user (0666: e.g. nginx workers run as
// www-data). Each connection gets its own RecordDecoder; a malformed stream is logged,
// counted (records_malformed) and closed, and the agent carries on. When a hooked process
// disconnects, the SpanBuilder finishes its open spans. Every `tick` the loop also lets the
// SpanBuilder expire idle spans.
//
// Wire version 3 (common/shared_ring.h): a hello with kHelloFlagRing comes with a sealed
// memfd (SCM_RIGHTS) holding the process's record ring. The server checks and maps it and
// drains every mapped ring from the loop: while records come, as often as lets the fullest
// ring fill to an eighth of its capacity at the rate of the last pass (every 1 to 10 ms:
// NextRingWaitMs), backing off to 10 ms while they do not; completely before it handles a
// new hello (the new process's causal parent may have written the records it depends
// on), when a process's socket ends (what it wrote before it exited is still in the
// ring), and on Stop(). Any other file descriptor a process sends is closed at once.
// Records on the socket are read as before, for wire versions 2 to 4. In-band records
// (version 4) go to SpanBuilder::OnInband from the ring and from the socket alike, and
// count in events_received like the other records of a socket call.
#ifndef REPTRACE_AGENT_HOOK_SERVER_H_
#define REPTRACE_AGENT_HOOK_SERVER_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/counter_set.h"
#include "agent/record_decoder.h"
#include "agent/span_builder.h"
#include "common/shared_ring.h"

namespace reptrace {

// The loop's wait before its next pass over the rings, in ms. After a pass that took
// records (`fullest`: the largest share of its capacity one ring gave, taken over
// `since_last_pass_ns`), the time in which that ring fills to an eighth of its capacity at
// the same rate, within [1, 10] ms; after a pass that took none, `last_wait_ms` doubled, up
// to 10 ms. Every wake-up of the loop is a context switch: on a 2 vCPU guest ~20 µs of
// kernel time, as much as ten spans cost, which a fixed 1 ms wait paid 1 000 times a second
// whatever the load.
int NextRingWaitMs(size_t taken, double fullest, int64_t since_last_pass_ns,
                   int last_wait_ms);

class HookServer {
 public:
  // `builder` is used only from the loop thread once Start() succeeded.
  HookServer(std::string socket_path, SpanBuilder* builder, CounterSet* counters,
             absl::Duration tick = absl::Milliseconds(100));
  HookServer(const HookServer&) = delete;
  HookServer& operator=(const HookServer&) = delete;
  ~HookServer();  // Stop()

  absl::Status Start();
  // Stops the loop, closes every connection (finishing their spans) and removes the socket
  // file. Idempotent.
  void Stop();

  const std::string& socket_path() const { return socket_path_; }
  size_t connections() const { return open_connections_.load(); }

 private:
  struct Connection {
    Connection() = default;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();  // unmaps the ring, closes a descriptor still held (not `fd`)

    int fd = -1;
    uint32_t pid = 0;  // from the hello
    // The process as the agent's pid namespace sees it (SO_PEERCRED when it connected;
    // 0 if it is not visible from there): whose cgroup names its container.
    pid_t peer_pid = 0;
    RecordDecoder decoder;  // the socket's bytes
    std::unordered_map<uint32_t, uint64_t> dropped_by_pid;  // latest StatsRecord values
    // A descriptor that came before the hello was complete: the ring, if the hello says so.
    int received_fd = -1;
    // The ring, once the hello named it and it passed the checks (wire version 3).
    void* ring_memory = nullptr;
    size_t ring_bytes = 0;
    uint32_t ring_capacity = 0;
    RingReader ring;
    // The ring's records: its own decoder, since the socket's may hold part of a record.
    RecordDecoder ring_decoder;
    uint64_t ring_dropped = 0;  // the header's `dropped` counted so far
    uint64_t ring_rate_limited = 0;  // the header's `rate_limited` counted so far
    // The memfd's identity: a process that reconnects hands the same ring over again.
    dev_t ring_dev = 0;
    ino_t ring_ino = 0;
    // Periodic drains skip a quiet ring until then (steady clock, ns): its interval doubles
    // from 1 ms to 10 ms while it stays empty, and is 0 once it has records.
    int64_t ring_next_poll_ns = 0;
    int64_t ring_poll_interval_ns = 0;
  };

  void Loop();
  void Accept();
  void Read(uint64_t key);
  // Keeps or closes the descriptors a recvmsg brought. False if the connection is closed.
  bool TakeDescriptors(uint64_t key, Connection& conn, const msghdr& msg);
  // Hands decoded records to the builder and counts them. A hello drains every ring first
  // and maps the process's own ring if it has one. False if it closed the connection (a
  // ring that does not pass the checks).
  bool Dispatch(uint64_t key, Connection& conn, const std::vector<Record>& records);
  // Checks and maps the ring whose descriptor came with `hello`. A ring another connection
  // still reads (the process reconnected: its old connection is stale) is handed over:
  // the old connection is drained and closed first, and the new reader goes on from
  // where it stopped (two readers of one ring would stall each other).
  absl::Status MapRing(Connection& conn, const HelloRecord& hello);
  // Takes up to `budget` records from the connection's ring, dispatches them and counts
  // the ring's new drops. Returns the records taken; closes the connection (`*closed`) if
  // one is malformed.
  size_t DrainRing(uint64_t key, Connection& conn, size_t budget, bool* closed);
  // Drains every ring, up to `budget` records each (0: everything it holds, bounded by its
  // capacity so that a process writing without pause cannot hold the loop). Returns the
  // records taken. A periodic pass (budget > 0) skips the rings that are not due (see
  // Connection::ring_next_poll_ns): a node of many idle processes costs a look at each
  // ring every 10 ms, not every pass.
  // `fullest`, if given, gets the largest share of its capacity one ring gave (0 to 1).
  size_t DrainRings(size_t budget, double* fullest = nullptr);
  // Drains the connection's ring completely, then closes it.
  void DrainAndClose(uint64_t key);
  // Closes the connection; the builder finishes the process's open spans.
  void Close(uint64_t key);

  const std::string socket_path_;
  SpanBuilder* const builder_;
  CounterSet* const counters_;
  const absl::Duration tick_;
  bool socket_bound_ = false;  // the socket file is ours to remove
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> open_connections_{0};
  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  size_t rings_ = 0;                 // connections with a mapped ring
  std::vector<uint64_t> ring_keys_;  // DrainRings' list (kept to reuse its memory)
  std::vector<char> ring_buffer_;    // records popped from a ring, for its decoder
  std::vector<Record> ring_records_;
  uint64_t next_key_ = kFirstConnectionKey;

  static constexpr uint64_t kListenKey = 0;
  static constexpr uint64_t kWakeKey = 1;
  static constexpr uint64_t kFirstConnectionKey = 16;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_HOOK_SERVER_H_

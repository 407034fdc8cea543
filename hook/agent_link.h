// The link from a hooked process to reptrace-agent.
//
// Publish() and BeginRecord()/EndRecord() put a record into the process's EventRing
// (counting it as recorded, or as dropped if the ring is full) and, the first time, start
// the shipper thread. The shipper connects to the agent's Unix socket ($REPTRACE_SOCKET,
// default /run/reptrace/agent.sock), sends a HelloRecord, then the queued records in
// batches (each one's header.size bytes only), and a StatsRecord about once a second. It polls the ring (5 ms sleeps when
// idle), runs with every signal blocked, and uses only the real, non-hooked calls. With no
// agent to talk to it drops and counts what it dequeues, and retries the connection with
// back-off (100 ms doubling to 2 s). Sends use MSG_NOSIGNAL and a send timeout, so a dead
// or stuck agent never raises SIGPIPE nor blocks the program.
#ifndef REPTRACE_HOOK_AGENT_LINK_H_
#define REPTRACE_HOOK_AGENT_LINK_H_

#include <atomic>
#include <cstdint>

#include "common/event_record.h"
#include "hook/event_ring.h"

namespace reptrace::hook {

// Reads REPTRACE_SOCKET and REPTRACE_SERVICE. From the library constructor only. The two
// clocks, read together, go into every HelloRecord.
void ConfigureAgentLink(uint64_t start_wall_ns, uint64_t start_mono_ns);

// The generation of the link to the agent: it changes whenever an agent connection that
// carried records is lost (the agent then forgets the connections announced on it: open
// records sent on it, or dropped with it, never reach the next one) and after fork. A
// connection remembers the generation under which its open record went into the ring; a
// data call that finds it different re-announces the connection first (kFlagReannounce).
// Read relaxed on the hot path: a reader late by a moment costs at most a data record the
// agent counts as of an unknown connection, never a wrong one. Never 0 (0 = unannounced).
extern std::atomic<uint32_t> g_link_generation;
inline uint32_t LinkGeneration() { return g_link_generation.load(std::memory_order_relaxed); }

// Queues `record` (`size` bytes, header first) for the agent; false if it was dropped
// (counted). Never blocks, allocates or locks (beyond starting the shipper thread once per
// process).
bool Publish(const void* record, size_t size);
inline bool Publish(const EventRecord& record) { return Publish(&record, sizeof(record)); }

// Publish in place, for the per-call hot path: BeginRecord returns a ring cell
// (EventRing::kCellBytes, holding a stale record: every byte up to the new header.size
// must be written) or nullptr when the ring is full or cannot be mapped (the drop is
// counted); EndRecord publishes the record written in it.
void* BeginRecord(EventRing::Claim* claim);  // inline below
void EndRecord(const EventRing::Claim& claim);

// At exit: asks the shipper to deliver everything queued and a final StatsRecord, and waits
// for it at most `budget_ns`. Does nothing if nothing was ever published.
void FlushAgentLink(int64_t budget_ns);

// The child side of fork(): forgets the parent's queue, counters and agent connection; the
// child starts its own shipper when it first publishes.
void ResetAgentLinkAfterFork(uint64_t start_wall_ns, uint64_t start_mono_ns);

// The program is about to close or replace `fd` (close, dup2, dup3): if it is the agent
// connection, the shipper forgets it (without closing it again: the number is the
// program's now) and reconnects later on a fresh fd. Returns whether it was ours. Waits
// (microseconds: the shipper never blocks in a call) until the shipper is not inside a
// system call on that number. Async-signal-safe.
bool TakeAgentFd(int fd);

// The same for every fd in [first, last] (close_range, closefrom). Returns the agent fd
// it took, -1 if none.
int TakeAgentFdRange(unsigned int first, unsigned int last);

// The agent connection's fd, -1 if none (for tests and diagnostics).
int AgentFd();

// A shipper thread runs for this process (something was published).
bool InShipperProcess();

// For tests and diagnostics.
uint64_t EventsRecorded();
uint64_t EventsDropped();

// What BeginRecord/EndRecord need, inline on the hot path (agent_link.cc owns them).
namespace agent_link_internal {
extern EventRing g_ring;
extern std::atomic<bool> g_shipper_started;
extern std::atomic<uint64_t> g_dropped;  // recorded events are g_ring.pushed()
void StartShipper();
}  // namespace agent_link_internal

inline void* BeginRecord(EventRing::Claim* claim) {
  using namespace agent_link_internal;  // NOLINT: three names, all of this file
  if (!g_shipper_started.load(std::memory_order_acquire)) StartShipper();
  // An unmapped ring (no open record ever published: mmap failed) claims nothing.
  void* cell = g_ring.TryClaim(claim);
  if (cell == nullptr) g_dropped.fetch_add(1, std::memory_order_relaxed);
  return cell;
}

inline void EndRecord(const EventRing::Claim& claim) { agent_link_internal::g_ring.Commit(claim); }

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_AGENT_LINK_H_

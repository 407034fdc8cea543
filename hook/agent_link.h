// The link from a hooked process to reptrace-agent.
//
// Records go into a ring in shared memory (common/shared_ring.h) that the agent maps and
// drains itself: no thread in the program, no system call per record. The first record a
// process makes creates the ring (a sealed memfd, close-on-exec, at a high fd number) and
// connects to the agent's Unix socket ($REPTRACE_SOCKET, default /run/reptrace/agent.sock),
// sending a HelloRecord with the ring's fd attached. That work, and keeping the link (a
// reconnection with back-off, 100 ms doubling to 2 s, after the agent went away or the
// program closed our fds; a look at the socket about once a second), happens in the
// slow path of whichever program thread publishes next, never on every call, with
// non-blocking calls only and errno preserved. Records made while no agent listens stay in
// the ring (only what does not fit is dropped, and counted in the ring's header, where the
// agent reads it); a process that exits leaves its last records in the ring for the agent,
// which drains it when the process's socket closes.
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
// records it read, or that were lost with it, never reach the next one) and after fork. A
// connection remembers the generation under which its open record went into the ring; a
// data call that finds it different re-announces the connection first (kFlagReannounce).
// Read relaxed on the hot path: a reader late by a moment costs at most a data record the
// agent counts as of an unknown connection, never a wrong one. Never 0 (0 = unannounced).
extern std::atomic<uint32_t> g_link_generation;
inline uint32_t LinkGeneration() { return g_link_generation.load(std::memory_order_relaxed); }

// Queues `record` (`size` bytes, header first) for the agent; false if it was dropped
// (counted). Never blocks, allocates or locks.
bool Publish(const void* record, size_t size);
inline bool Publish(const EventRecord& record) { return Publish(&record, sizeof(record)); }
// Publish for a connection's open record: the link generation it was published under (a
// connection re-announces itself when the generation has moved on since), 0 if dropped.
uint32_t PublishAnnouncement(const void* record, size_t size);

// Publish in place, for the per-call hot path: BeginRecord returns a ring cell
// (EventRing::kCellBytes, holding a stale record: every byte up to the new header.size
// must be written) or nullptr when the ring is full or not made yet (the drop is counted);
// EndRecord publishes the record written in it.
void* BeginRecord(EventRing::Claim* claim);  // inline below
void EndRecord(const EventRing::Claim& claim);

// Before the process ends or execs: if no agent has the ring yet (it was not listening so
// far), tries once more to hand it over, so that what is queued is read after we are
// gone; a process without a ring reports its drops. Never waits.
void FlushAgentLink();

// The child side of fork(): forgets the parent's ring, counters and agent connection; the
// child makes its own when it first publishes.
void ResetAgentLinkAfterFork(uint64_t start_wall_ns, uint64_t start_mono_ns);

// The program is about to close or replace `fd` (close, dup2, dup3): if it is the agent
// connection or the ring's fd, the link forgets it (without closing it again: the number
// is the program's now) and makes a new one later. Returns whether it was ours. Waits
// (microseconds: the link never blocks in a call) until no thread of the link is inside a
// system call on that number. Async-signal-safe.
bool TakeAgentFd(int fd);

// The same for every fd in [first, last] (close_range, closefrom): the fds it took go in
// `taken` (if the program's call then fails, they are still open and the caller closes
// them: the program never had them). Returns how many.
int TakeAgentFdRange(unsigned int first, unsigned int last, int (&taken)[2]);

// The agent connection's and the ring's fds, -1 if none (tests and diagnostics).
int AgentFd();
int RingFd();

// This process has made its ring (it has published something): the agent knows it, or
// will when it connects.
bool LinkStarted();

// NameHash (common/config_page.h) of the service name the hello carries (REPTRACE_SERVICE,
// else the program's name) and of the program's name (/proc/self/comm). Reads a file:
// slow path only.
void ProcessNameHashes(uint64_t* service, uint64_t* program);

// Counts a data record the rate limit refused (hook/settings.h), in the ring's header
// where the agent reads it. Never blocks.
void CountRateLimited();

// For tests and diagnostics.
uint64_t EventsRecorded();
uint64_t EventsDropped();

// What BeginRecord/EndRecord need, inline on the hot path (agent_link.cc owns them).
namespace agent_link_internal {
extern EventRing g_ring;
extern std::atomic<bool> g_link_started;
extern std::atomic<int> g_agent_fd;
// Slow paths, out of line.
void StartLink();
// Another try (a ring being made, or to be made), or the drop counted. `generation`, if
// given, is read again before the retry (see PublishAnnouncement).
void* RecordRefused(EventRing::Claim* claim, uint32_t* generation = nullptr);
void MaintainLink(uint64_t position);
// Connected: the link is looked after every kMaintainConnected records; not connected,
// every kMaintainDisconnected (each look reads the clock; a connection attempt waits for
// its back-off).
inline constexpr uint64_t kMaintainConnected = 4096;
inline constexpr uint64_t kMaintainDisconnected = 64;
}  // namespace agent_link_internal

inline void* BeginRecord(EventRing::Claim* claim) {
  using namespace agent_link_internal;  // NOLINT: names of this file
  if (!g_link_started.load(std::memory_order_acquire)) StartLink();
  void* cell = g_ring.TryClaim(claim);
  if (cell == nullptr) cell = RecordRefused(claim);
  return cell;
}

inline void EndRecord(const EventRing::Claim& claim) {
  using namespace agent_link_internal;  // NOLINT: names of this file
  g_ring.Commit(claim);
  if ((claim.position() & (kMaintainDisconnected - 1)) == 0) MaintainLink(claim.position());
}

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_AGENT_LINK_H_

// The link from a hooked process to reptrace-agent.
//
// Publish() is the hot-path entry: it puts an EventRecord into the process's EventRing
// (counting it as recorded, or as dropped if the ring is full) and, the first time, starts
// the shipper thread. The shipper connects to the agent's Unix socket ($REPTRACE_SOCKET,
// default /run/reptrace/agent.sock), sends a HelloRecord, then the queued EventRecords in
// batches, and a StatsRecord about once a second. It polls the ring (5 ms sleeps when
// idle), runs with every signal blocked, and uses only the real, non-hooked calls. With no
// agent to talk to it drops and counts what it dequeues, and retries the connection with
// back-off (100 ms doubling to 2 s). Sends use MSG_NOSIGNAL and a send timeout, so a dead
// or stuck agent never raises SIGPIPE nor blocks the program.
#ifndef REPTRACE_HOOK_AGENT_LINK_H_
#define REPTRACE_HOOK_AGENT_LINK_H_

#include <cstdint>

#include "common/event_record.h"
#include "hook/event_ring.h"

namespace reptrace::hook {

// Reads REPTRACE_SOCKET and REPTRACE_SERVICE. From the library constructor only.
void ConfigureAgentLink(uint64_t start_wall_ns);

// Queues `record` for the agent. Never blocks, allocates or locks (beyond starting the
// shipper thread once per process).
void Publish(const EventRecord& record);

// Publish in place, for the per-call hot path: BeginRecord returns a ring cell's record
// to fill (stale: every field must be written) or nullptr when the ring is full or cannot
// be mapped (the drop is counted); EndRecord publishes the filled record.
EventRecord* BeginRecord(EventRing::Claim* claim);
void EndRecord(const EventRing::Claim& claim);

// At exit: asks the shipper to deliver everything queued and a final StatsRecord, and waits
// for it at most `budget_ns`. Does nothing if nothing was ever published.
void FlushAgentLink(int64_t budget_ns);

// The child side of fork(): forgets the parent's queue, counters and agent connection; the
// child starts its own shipper when it first publishes.
void ResetAgentLinkAfterFork(uint64_t start_wall_ns);

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

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_AGENT_LINK_H_

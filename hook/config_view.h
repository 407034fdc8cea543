// Reading the config page (common/config_page.h) inside a hooked process: pure functions
// over a page in memory, no system calls, so the hook's hot path and the tests share them.
#ifndef REPTRACE_HOOK_CONFIG_VIEW_H_
#define REPTRACE_HOOK_CONFIG_VIEW_H_

#include <cstdint>

#include "common/config_page.h"

namespace reptrace::hook {

// What the filters of a config look at in one connection.
struct ConnectionFacts {
  bool inbound = false;    // the process accepted it (server side)
  bool has_ports = false;  // TCP or UDP over IP (false: a Unix-domain socket)
  uint16_t local_port = 0;
  uint16_t peer_port = 0;
  const uint8_t* peer_addr = nullptr;  // 16 bytes, IPv4 mapped; with has_ports
  uint64_t service_hash = 0;           // NameHash of REPTRACE_SERVICE (else the program name)
  uint64_t process_hash = 0;           // NameHash of the program's name (comm)
};

// Whether the filters of `body` trace a connection, by TraceFilter's rule: the first
// filter it matches decides; matching none, it is traced if there is no include filter.
// (`enabled` is not looked at here.) A filter matches when every list it sets matches; a
// port or CIDR list never matches a Unix-domain socket. Counts beyond the page's limits (a
// page being rewritten) are clamped, so a torn read costs a wrong answer the caller throws
// away, never a read outside the page.
bool FiltersTrace(const ConfigBody& body, const ConnectionFacts& facts);

// Whether `port` is in one of the page's in-band ranges.
bool InbandPortListed(const ConfigBody& body, uint16_t port);

// A seqlock read of `page`: the body's `seq` (even) if no write overlapped the reads
// `read` made of the body between the two loads of it, else 0 (the agent was writing:
// try again later). `read` is called once, with the body; what it computed is valid only if
// the result is not 0.
template <typename Read>
uint64_t ReadConsistently(const ConfigPage& page, Read read) {
  const uint64_t before = page.seq.load(std::memory_order_acquire);
  if ((before & 1) != 0) return 0;
  read(page.body);
  // Orders the body's reads before the second load of seq (the seqlock reader's fence; the
  // agent's writer pairs it with a release fence after making seq odd).
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t after = page.seq.load(std::memory_order_relaxed);
  return before == after ? before : 0;
}

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_CONFIG_VIEW_H_

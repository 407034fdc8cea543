// The config page: the trace config as the hooked processes of a node read it.
//
// reptrace-agent keeps one file of this layout (agent/config_page_writer.h), next to its
// Unix socket ($REPTRACE_SOCKET + ".config"), and rewrites it in place whenever the
// controller pushes a new config version. Every hooked process maps it read-only
// (hook/settings.h) and reads it on its hot path with a load of `seq`: no system call, no
// lock. It is a seqlock: the agent makes `seq` odd, writes the body, makes it even again;
// a reader copies the body between two equal even reads of `seq`. The file is never
// replaced while it is valid (a restarted agent writes into the same inode), so a process
// that mapped it once follows every later version.
//
// The body is fixed-size and flat (names as 64-bit hashes, CIDRs as 16-byte masks): a
// process reads it without parsing or allocating. The controller refuses a document that
// does not fit (controller/config_validation.h checks these limits).
//
// Dependency-free: the hook includes it.
#ifndef REPTRACE_COMMON_CONFIG_PAGE_H_
#define REPTRACE_COMMON_CONFIG_PAGE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/event_record.h"

namespace reptrace {

inline constexpr uint64_t kConfigPageMagic = 0x4746435254504552;  // "REPTRCFG"
inline constexpr uint32_t kConfigPageLayout = 1;

// What a document may hold to fit the page.
inline constexpr uint32_t kPageMaxFilters = 32;
inline constexpr uint32_t kPageMaxNames = 8;        // a filter's services, processes
inline constexpr uint32_t kPageMaxPortRanges = 8;   // a filter's local_ports, peer_ports
inline constexpr uint32_t kPageMaxCidrs = 8;        // a filter's peer_cidrs
inline constexpr uint32_t kPageMaxInbandRanges = 32;

// The file next to the agent's socket.
inline constexpr char kConfigPageSuffix[] = ".config";

struct PagePortRange {
  uint16_t first;
  uint16_t last;  // >= first
};

// An address prefix over the 16-byte form of EventRecord addresses (IPv4 as ::ffff:a.b.c.d,
// its prefix length plus 96).
struct PageCidr {
  uint8_t addr[16];  // host bits zero
  uint8_t prefix;    // 0..128
  uint8_t reserved[7];
};

enum : uint8_t { kPageInclude = 1, kPageExclude = 2 };
enum : uint8_t { kPageAnyDirection = 0, kPageInbound = 1, kPageOutbound = 2 };

struct PageFilter {
  uint8_t action;     // kPageInclude, kPageExclude
  uint8_t direction;  // kPageAnyDirection, kPageInbound (accepted), kPageOutbound (connected)
  // The filter names nodes and not this agent's: it matches nothing here (but still counts
  // as an include filter).
  uint8_t other_node;
  uint8_t service_count;
  uint8_t process_count;
  uint8_t local_port_count;
  uint8_t peer_port_count;
  uint8_t cidr_count;
  uint64_t services[kPageMaxNames];   // NameHash of each
  uint64_t processes[kPageMaxNames];  // NameHash of each (the program's comm)
  PagePortRange local_ports[kPageMaxPortRanges];
  PagePortRange peer_ports[kPageMaxPortRanges];
  PageCidr cidrs[kPageMaxCidrs];
};

struct ConfigBody {
  uint64_t config_version;  // the controller's version; 0: the agent has none yet
  uint8_t enabled;
  uint8_t trace_unix;
  uint8_t reserved[2];
  uint32_t capture_bytes;          // 0..kCaptureBytes
  uint32_t max_events_per_second;  // 0: no limit
  uint32_t filter_count;
  uint32_t inband_count;
  uint32_t reserved2;
  PagePortRange inband_ports[kPageMaxInbandRanges];
  PageFilter filters[kPageMaxFilters];
};

struct ConfigPage {
  uint64_t magic;   // kConfigPageMagic
  uint32_t layout;  // kConfigPageLayout
  uint32_t bytes;   // sizeof(ConfigPage)
  // Even: the body is complete. Odd: the agent is writing it. Never 0 once written; the
  // agent starts a new file at kFirstPageSeq and carries on from what an existing one has.
  alignas(64) std::atomic<uint64_t> seq;
  alignas(64) ConfigBody body;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

// A new file's first even `seq`: far from the hook's own default (hook/settings.h), so a
// connection's remembered seq never matches another page's by chance.
inline constexpr uint64_t kFirstPageSeq = uint64_t{1} << 32;

// The size of the file: the page, rounded up to whole memory pages.
inline constexpr size_t kConfigPageFileBytes = (sizeof(ConfigPage) + 4095) & ~size_t{4095};

// How a service or program name is matched without strings: both ends hash the name's bytes.
inline uint64_t NameHash(const char* name, size_t n) { return Fingerprint64(name, n); }

}  // namespace reptrace

#endif  // REPTRACE_COMMON_CONFIG_PAGE_H_

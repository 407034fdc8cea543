// The wire format between libreptrace.so (hook/) and reptrace-agent (agent/).
//
// A hooked process opens one SOCK_STREAM connection to the agent's Unix socket and writes
// a sequence of fixed-size, native-endian records (hook and agent always run on the same
// node). Every record starts with a RecordHeader whose `size` is the size of the whole
// record, so a reader can check the type/size pair before touching the body. The first
// record of a connection is a HelloRecord; then EventRecords and StatsRecords in any order.
//
// This header is included by the hook, so it must stay dependency-free: no Abseil, no
// allocation, only trivially-copyable structs.
#ifndef REPTRACE_COMMON_EVENT_RECORD_H_
#define REPTRACE_COMMON_EVENT_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace reptrace {

inline constexpr uint32_t kRecordMagic = 0x31545052;  // "RPT1" in little-endian memory
inline constexpr uint16_t kWireVersion = 2;

enum class RecordType : uint16_t {
  kHello = 1,
  kEvent = 2,
  kStats = 3,
};

struct RecordHeader {
  uint32_t magic;  // kRecordMagic
  uint16_t type;   // RecordType
  uint16_t size;   // sizeof the whole record, header included
};

inline constexpr size_t kNameBytes = 64;

// First record on every connection to the agent.
struct HelloRecord {
  RecordHeader header;
  uint16_t version;  // kWireVersion
  uint16_t reserved;
  uint32_t pid;
  uint32_t ppid;
  uint32_t uid;
  uint64_t start_wall_ns;       // when the hook initialised in this process
  // The thread whose causal context this process's main thread starts with (0/0: none).
  // A fork child names the parent's forking thread; an exec'd program names the thread
  // that exec'd it (same pid), or, if that process never talked to the agent, whatever
  // that process itself inherited: the hook passes it on in REPTRACE_CAUSE ("pid:tid").
  uint32_t cause_pid;
  uint32_t cause_tid;
  char service[kNameBytes];     // NUL-terminated: REPTRACE_SERVICE, else the program name
  char process[kNameBytes];     // NUL-terminated: the program name (comm)
};

enum class EventKind : uint8_t {
  kConnect = 1,  // connect() on an AF_INET/AF_INET6 stream socket (result may be -1/EINPROGRESS)
  kAccept = 2,   // accept()/accept4() returned a new AF_INET/AF_INET6 stream socket
  kSend = 3,     // bytes moved out (write, send, writev, sendfile, ...)
  kRecv = 4,     // bytes moved in (read, recv, readv, ...); result 0 = end of stream
  kClose = 5,    // the program closed the fd (its last duplicate: dup'ed fds share one
                 // connection, closing one of several ends nothing)
  // pthread_create(): a new thread started. `tid` is the new thread, `fd` carries the tid of
  // the thread that created it (its causal context is inherited); conn_id is 0, the address
  // fields and `protocol` are zero and `family` is 0. Sent only once the process traces a
  // connection. Readers that do not know it should ignore it.
  kThreadStart = 6,
};

enum class SocketRole : uint8_t {
  kUnknown = 0,
  kClient = 1,  // we connected: we send requests
  kServer = 2,  // we accepted: we receive requests
};

enum EventFlags : uint8_t {
  // This call is the first of a message: the previous call on the connection moved bytes
  // the other way (or none moved yet). `hash` and `capture` are filled only then.
  kFlagMessageStart = 1 << 0,
};

inline constexpr size_t kCaptureBytes = 128;

inline constexpr uint8_t kFamilyUnix = 1;  // EventRecord::family of a Unix-domain socket

// One socket call on a traced connection.
struct EventRecord {
  RecordHeader header;
  uint8_t kind;           // EventKind
  uint8_t role;           // SocketRole
  uint8_t flags;          // EventFlags
  uint8_t capture_len;    // valid bytes in `capture`, <= kCaptureBytes
  uint32_t pid;
  uint32_t tid;
  int32_t fd;
  int32_t error;          // errno of a failed call, else 0
  uint32_t reserved;
  uint64_t conn_id;       // per process, never 0, never reused within a process
  // Wall clock (CLOCK_REALTIME, ns since the epoch) of the moment the bytes moved: the
  // start of a send-side call, the return of a receive-side call.
  uint64_t wall_ns;
  uint64_t mono_ns;       // CLOCK_MONOTONIC at the same moment
  // kSend/kRecv: bytes that moved in this direction on this connection before this call.
  uint64_t offset;
  int64_t result;         // bytes moved (> 0), 0 for end of stream, -1 on error
  uint16_t local_port;    // host byte order
  uint16_t peer_port;
  // 4 or 6: the address family of the conversation. A v6 socket talking to an IPv4-mapped
  // peer (::ffff:a.b.c.d) reports 4, like the v4 socket at the other end; for unconnected
  // UDP this follows the peer of the event's own datagram. kFamilyUnix: a Unix-domain
  // stream socket (traced only when REPTRACE_TRACE_UNIX asks); its ports and addresses
  // are 0, and the capture of its kConnect/kAccept record holds the socket's name (the
  // path the server bound; an abstract name starts with '@'), up to kCaptureBytes.
  uint8_t family;
  uint8_t protocol;       // IP protocol number: 6 = TCP, 17 = UDP (0 only in kThreadStart)
  uint8_t reserved2[2];
  // Addresses as 16-byte IPv6; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d). For UDP
  // (protocol 17) peer_addr/peer_port are the peer of this event's datagram when the call
  // named one (sendto/sendmsg with an address, recvfrom/recvmsg that returned one), else
  // the connected (or first) peer. Every UDP datagram is a message (kFlagMessageStart).
  uint8_t local_addr[16];
  uint8_t peer_addr[16];
  uint64_t hash;          // Fingerprint64 of the first min(result, kCaptureBytes) bytes
  uint8_t capture[kCaptureBytes];
};

// Counters of a hooked process since its hook initialised (or since it forked).
struct StatsRecord {
  RecordHeader header;
  uint32_t pid;
  uint32_t reserved;
  uint64_t events_recorded;  // events put into the ring
  uint64_t events_dropped;   // events lost: ring full, or no agent to send them to
};

static_assert(std::is_trivially_copyable_v<HelloRecord>);
static_assert(std::is_trivially_copyable_v<EventRecord>);
static_assert(std::is_trivially_copyable_v<StatsRecord>);
static_assert(sizeof(RecordHeader) == 8);
static_assert(sizeof(EventRecord) % 8 == 0);
static_assert(sizeof(EventRecord) == 248);  // the wire size: new fields take reserved bytes
static_assert(sizeof(EventRecord) < 65536 && sizeof(HelloRecord) < 65536);

// The size a record of `type` must declare, or 0 for an unknown type.
constexpr size_t RecordSizeFor(uint16_t type) {
  switch (static_cast<RecordType>(type)) {
    case RecordType::kHello: return sizeof(HelloRecord);
    case RecordType::kEvent: return sizeof(EventRecord);
    case RecordType::kStats: return sizeof(StatsRecord);
  }
  return 0;
}

inline constexpr size_t kMaxRecordSize = sizeof(EventRecord) > sizeof(HelloRecord)
                                             ? sizeof(EventRecord)
                                             : sizeof(HelloRecord);

// The fingerprint of a message's first bytes (EventRecord::hash). The hook computes it on
// every message start, inside the traced program, so it reads 8 bytes per step (a
// multiply and a rotate each) instead of FNV-1a's byte at a time: about 6 times fewer
// instructions for 64 bytes, which made it the largest cost of a traced call. Written here
// rather than taken from a library because the hook links nothing but libc. Words are
// read in the machine's byte order: fingerprints are compared between nodes of the same
// (little-endian) architecture.
inline uint64_t Fingerprint64(const void* data, size_t n) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  constexpr uint64_t kMix = 0xff51afd7ed558ccdULL;
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0x6a09e667f3bcc909ULL ^ (static_cast<uint64_t>(n) * kMul);
  auto absorb = [&h](uint64_t word) {
    h ^= word * kMul;
    h = ((h << 27) | (h >> 37)) * kMix;
  };
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    __builtin_memcpy(&word, p, 8);
    absorb(word);
  }
  if (n > 0) {
    uint64_t word = 0;
    __builtin_memcpy(&word, p, n);
    absorb(word);
  }
  // MurmurHash3's finaliser: every input bit reaches every output bit.
  h ^= h >> 33;
  h *= kMix;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

}  // namespace reptrace

#endif  // REPTRACE_COMMON_EVENT_RECORD_H_

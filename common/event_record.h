// The wire format between libreptrace.so (hook/) and reptrace-agent (agent/).
//
// A hooked process opens one SOCK_STREAM connection to the agent's Unix socket and sends
// its HelloRecord, with the fd of its record ring attached (wire version 3,
// kHelloFlagRing; the ring: common/shared_ring.h); all its other records go into the ring,
// which the agent drains. (A version 2 hook writes them on the socket after the hello;
// the agent still reads records there.) Records are native-endian (hook and agent always
// run on the same node). Every record starts with a RecordHeader whose `size` is the size
// of the whole record, so a reader can check the type/size pair before touching the body.
// After the hello come EventRecords and DataRecords (and, from a version 2 hook,
// StatsRecords) in any order. Every record type has one fixed size except DataRecord,
// which has two forms (see DataRecordWireSize).
//
// Two kinds of record describe socket calls. An EventRecord (248 bytes, with both
// endpoints) opens and closes a connection, and carries every UDP datagram (an unconnected
// UDP socket's peer changes per datagram). A DataRecord (48 bytes, more at a message start)
// is one send or receive on a TCP connection: everything it does not carry (pid, fd,
// role, addresses) the agent knows from the hello and from the connection's open record,
// which the hook guarantees to deliver before the connection's DataRecords to the same
// agent connection (re-announcing it with kFlagReannounce if it may have been lost).
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
// 2: DataRecord, HelloRecord::start_mono_ns; times are CLOCK_MONOTONIC (see HelloRecord).
// 3: records in a ring shared with the agent (common/shared_ring.h, kHelloFlagRing); only
//    the hello travels on the socket. The agent still reads records sent on the socket.
// 4: InbandRecord (in-band mode). The agent reads versions 2 to 4.
inline constexpr uint16_t kWireVersion = 4;

// HelloRecord::flags.
// The hello comes with a file descriptor (SCM_RIGHTS, on the hello's first byte): a sealed
// memfd holding the process's record ring.
inline constexpr uint16_t kHelloFlagRing = 1;

enum class RecordType : uint16_t {
  kHello = 1,
  kEvent = 2,
  kStats = 3,
  kData = 4,
  kInband = 5,
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
  uint16_t flags;    // kHelloFlag*
  uint32_t pid;
  uint32_t ppid;
  uint32_t uid;
  // When the hook initialised in this process (or since it forked), on both clocks, read
  // together. Records carry CLOCK_MONOTONIC only (one clock read per traced call); their
  // wall time is mono_ns + (start_wall_ns - start_mono_ns), in modulo-2^64 arithmetic.
  uint64_t start_wall_ns;
  uint64_t start_mono_ns;
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
  // On a kConnect/kAccept EventRecord: not a new connection but the hook re-announcing one
  // it opened earlier, whose open record may not have reached this agent connection (the
  // ring was full, or the agent connection was lost since). Sent before that connection's
  // next DataRecord. `offset` is the bytes sent and `result` the bytes received on it so
  // far; `tid` is the thread making the call that re-announces it. A reader that knows
  // the connection already keeps it as it is.
  kFlagReannounce = 1 << 1,
  // On a DataRecord that is not a message start: the message began less than the capture
  // size before this call (its first bytes came in several calls, e.g. a server reading a
  // request line a byte at a time). `capture` holds this call's bytes that fall within the
  // message's first capture-size bytes, so a reader can put the message's head together.
  kFlagHeadCapture = 1 << 2,
};

inline constexpr size_t kCaptureBytes = 128;

inline constexpr uint8_t kFamilyUnix = 1;  // EventRecord::family of a Unix-domain socket

// A connection opened (kConnect, kAccept) or closed, a thread started, or one UDP datagram
// sent or received (a TCP send or receive is a DataRecord).
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
  // CLOCK_MONOTONIC of the moment of the call: the start of a connect or of a send-side
  // call, the return of a receive-side call or of accept. wall_ns is the same moment as
  // wall time, derived from the hello's clock pair (see HelloRecord).
  uint64_t wall_ns;
  uint64_t mono_ns;
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

// One send or receive call on a traced TCP connection (plain or TLS plaintext). The wire
// carries its first DataRecordWireSize() bytes only: the 48 up to `hash` on every call,
// and on a message start (kFlagMessageStart) or a head capture (kFlagHeadCapture) also
// `hash` and the capture, padded to 8.
// The struct is the in-memory form of both (a reader copies header.size bytes into a
// zeroed one).
struct DataRecord {
  RecordHeader header;    // type kData, size = DataRecordWireSize(flags, capture_len)
  uint8_t kind;           // EventKind::kSend or kRecv
  uint8_t flags;          // EventFlags: kFlagMessageStart or kFlagHeadCapture
  uint8_t capture_len;    // valid bytes in `capture`; 0 unless one of those two
  uint8_t reserved;
  uint32_t tid;
  uint64_t conn_id;       // as in the connection's open EventRecord
  uint64_t mono_ns;       // CLOCK_MONOTONIC: start of a send-side call, return of a receive
  // Bytes that moved in this direction on this connection before this call.
  uint64_t offset;
  // Bytes moved (> 0); 0: end of stream (kRecv only); < 0: the call failed with errno
  // -result (a failure that only asks to retry, EAGAIN/EINTR, is never recorded).
  int64_t result;
  // Only on the wire with kFlagMessageStart or kFlagHeadCapture (`hash` 0 with the latter):
  // Fingerprint64 of the first min(result, kCaptureBytes) bytes when the capture does not
  // hold them all; when it does (capture_len == min(result, kCaptureBytes), the default)
  // the hook leaves it 0 and the reader computes it from the capture (DataRecordHash): a
  // hash in the agent instead of in the traced program.
  uint64_t hash;
  uint8_t capture[kCaptureBytes];  // the first capture_len of those bytes
};

inline constexpr size_t kDataRecordBaseSize = 48;

// The wire size of a DataRecord: 48 bytes, or 56 + capture_len rounded up to 8 on a
// message start or a head capture. A reader refuses any other size.
constexpr size_t DataRecordWireSize(uint8_t flags, uint8_t capture_len) {
  return (flags & (kFlagMessageStart | kFlagHeadCapture)) == 0
             ? kDataRecordBaseSize
             : kDataRecordBaseSize + sizeof(uint64_t) + ((size_t{capture_len} + 7) & ~size_t{7});
}

// Whether the capture of a message-start DataRecord holds every byte its fingerprint
// covers, so that the hook left `hash` for the reader to compute.
constexpr bool DataRecordHashFromCapture(const DataRecord& r) {
  return (r.flags & kFlagMessageStart) != 0 && r.result > 0 &&
         r.capture_len == (r.result < static_cast<int64_t>(kCaptureBytes)
                               ? static_cast<size_t>(r.result)
                               : kCaptureBytes);
}

// Counters of a hooked process since its hook initialised (or since it forked). Sent by
// version 2 hooks only: a ring's header carries its counts (RingHeader::dropped).
struct StatsRecord {
  RecordHeader header;
  uint32_t pid;
  uint32_t reserved;
  uint64_t events_recorded;  // events put into the ring
  uint64_t events_dropped;   // events lost: ring full, or no agent to send them to
};

// In-band mode (hook/inband.h): what a frame header said about the span that the bytes of
// a connection from `offset` on (in the record's direction) belong to. Published before the
// DataRecord of the call that moved those bytes.
enum class InbandEvent : uint8_t {
  // This process (the client of the connection) began a request at `offset` of its send
  // stream and framed it: `span_id` is the id the hook chose for that request's client
  // span (the agent gives the span this id), `trace_id` the trace the hook put in the frame.
  kSent = 1,
  // This process (the server) received a request framed by a hooked client, its first byte
  // at `offset` of its receive stream: `span_id` is the client span that sent it (the
  // parent of the server span), `trace_id` the client's trace.
  kReceived = 2,
  // This process framed its requests on this connection, but the peer answered without
  // frames: it is not hooked (or it greeted before the first frame reached it). Later
  // connections to it go unframed; `offset` is the receive offset it was seen at, the
  // ids are 0.
  kPeerNotHooked = 3,
};

struct InbandRecord {
  RecordHeader header;  // type kInband, size sizeof(InbandRecord)
  uint8_t event;        // InbandEvent
  uint8_t reserved[3];
  uint32_t tid;         // the thread that made the call
  uint64_t conn_id;     // as in the connection's open EventRecord
  uint64_t offset;      // payload bytes (what the program sees), as DataRecord::offset
  uint64_t trace_id;
  uint64_t span_id;
};

static_assert(std::is_trivially_copyable_v<HelloRecord>);
static_assert(std::is_trivially_copyable_v<InbandRecord>);
static_assert(sizeof(InbandRecord) == 48);
static_assert(std::is_trivially_copyable_v<EventRecord>);
static_assert(std::is_trivially_copyable_v<StatsRecord>);
static_assert(std::is_trivially_copyable_v<DataRecord>);
static_assert(offsetof(DataRecord, hash) == kDataRecordBaseSize);
static_assert(sizeof(DataRecord) == kDataRecordBaseSize + sizeof(uint64_t) + kCaptureBytes);
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
    case RecordType::kData: return 0;  // variable: see RecordSizeValid
    case RecordType::kInband: return sizeof(InbandRecord);
  }
  return 0;
}

// Whether a header's type/size pair is possible. For kData the exact size depends on the
// body (DataRecordWireSize): a reader checks it again once it has the body.
constexpr bool RecordSizeValid(uint16_t type, uint16_t size) {
  if (type == static_cast<uint16_t>(RecordType::kData)) {
    return size == kDataRecordBaseSize ||
           (size >= kDataRecordBaseSize + sizeof(uint64_t) && size <= sizeof(DataRecord) &&
            size % 8 == 0);
  }
  const size_t expected = RecordSizeFor(type);
  return expected != 0 && size == expected;
}

inline constexpr size_t kMaxRecordSize = sizeof(EventRecord) > sizeof(HelloRecord)
                                             ? sizeof(EventRecord)
                                             : sizeof(HelloRecord);

namespace fingerprint_internal {

inline constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
inline constexpr uint64_t kMix = 0xff51afd7ed558ccdULL;

inline uint64_t Load64(const uint8_t* p) {
  uint64_t w;
  __builtin_memcpy(&w, p, 8);
  return w;
}
inline uint32_t Load32(const uint8_t* p) {
  uint32_t w;
  __builtin_memcpy(&w, p, 4);
  return w;
}
inline uint64_t Rotl(uint64_t h, int r) { return (h << r) | (h >> (64 - r)); }
// One word into one lane: the rotation carries high bits down, so that no difference stays
// confined to the top bits (where a multiply alone would leave it).
inline uint64_t Step(uint64_t h, uint64_t w) { return Rotl(h ^ w, 29) * kMul; }

inline uint64_t Fingerprint(const uint8_t* p, size_t n) {
  const size_t len = n;
  // Four independent lanes: four words per loop step, their multiplies in parallel.
  uint64_t a = 0x6a09e667f3bcc909ULL ^ (static_cast<uint64_t>(len) * kMul);
  uint64_t b = 0xbb67ae8584caa73bULL;
  uint64_t c = 0x3c6ef372fe94f82bULL;
  uint64_t d = 0xa54ff53a5f1d36f1ULL;
  for (; n >= 32; p += 32, n -= 32) {
    const uint64_t w0 = Load64(p), w1 = Load64(p + 8), w2 = Load64(p + 16),
                   w3 = Load64(p + 24);
    a = Step(a, w0);
    b = Step(b, w1);
    c = Step(c, w2);
    d = Step(d, w3);
  }
  for (; n >= 8; p += 8, n -= 8) a = Step(a, Load64(p));
  if (n > 0) {
    // 1..7 bytes left: read without a byte loop and never past the end. After a whole
    // word, the last 8 bytes (overlapping what was hashed); else two overlapping 4-byte
    // reads; else the first, middle and last byte. Every byte counts, and the length is
    // in `a`.
    uint64_t w;
    if (len >= 8) {
      w = Load64(p + n - 8);
    } else if (n >= 4) {
      w = Load32(p) | (static_cast<uint64_t>(Load32(p + n - 4)) << 32);
    } else {
      w = p[0] | (uint64_t{p[n >> 1]} << 8) | (uint64_t{p[n - 1]} << 16);
    }
    b = Step(b, w);
  }
  uint64_t h = Rotl(a * kMix ^ b, 27) * kMix;
  h = Rotl(h ^ c, 27) * kMix;
  h = Rotl(h ^ d, 27) * kMix;
  // MurmurHash3's finaliser: every input bit reaches every output bit.
  h ^= h >> 33;
  h *= kMix;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

}  // namespace fingerprint_internal

// The fingerprint of a message's first bytes (EventRecord::hash, DataRecord::hash), always
// of min(length, kCaptureBytes) bytes whatever a process is configured to capture, so two
// processes configured differently still agree on it. It reads 8 bytes per step in four
// independent lanes (an xor, a rotate and a multiply each) and the tail without a byte
// loop (FNV-1a's byte at a time took 6 times more instructions). The hook leaves it to
// the agent whenever the capture holds the bytes (DataRecord::hash). Written here
// rather than taken from a library because the hook links nothing but libc. Words are
// read in the machine's byte order: fingerprints are compared between nodes of the same
// (little-endian) architecture. Not a cryptographic hash: it tells messages apart, it
// does not resist a forger.
inline uint64_t Fingerprint64(const void* data, size_t n) {
  return fingerprint_internal::Fingerprint(static_cast<const uint8_t*>(data), n);
}

// A DataRecord's fingerprint: its `hash`, or computed from its capture (see `hash`).
inline uint64_t DataRecordHash(const DataRecord& r) {
  return DataRecordHashFromCapture(r) ? Fingerprint64(r.capture, r.capture_len) : r.hash;
}

}  // namespace reptrace

#endif  // REPTRACE_COMMON_EVENT_RECORD_H_

// The interposed libc entry points of libreptrace.so, and its constructor/destructor.
//
// Every wrapper has glibc's exact signature. On an fd the ConnectionTable does not trace
// (or while the hook itself runs on this thread) it costs one table look-up and then calls
// the real function. On a traced TCP connection it records one DataRecord around the real
// call (an EventRecord for a UDP datagram, and to open or close a connection). errno and
// the return value the program sees are always the real call's.
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <initializer_list>

#include "common/event_record.h"
#include "hook/agent_link.h"
#include "hook/connection_table.h"
#include "hook/exec_env.h"
#include "hook/inband_calls.h"
#include "hook/interposed.h"
#include "hook/process_state.h"
#include "hook/real_calls.h"
#include "hook/settings.h"
#include "hook/tls.h"

#define REPTRACE_EXPORT extern "C" __attribute__((visibility("default")))

namespace reptrace::hook {

__thread bool t_in_hook __attribute__((tls_model("initial-exec"))) = false;
__thread uint32_t t_tid __attribute__((tls_model("initial-exec"))) = 0;
std::atomic<uint32_t> g_pid{0};
std::atomic<uint64_t> g_cause{0};

namespace {

ConnectionTable g_table;
std::atomic<uint64_t> g_next_conn_id{1};

// Wall time minus monotonic time at start-up (the hello's clock pair): records read one
// clock, CLOCK_MONOTONIC; an EventRecord's wall_ns is derived from it (modulo 2^64).
uint64_t g_wall_minus_mono = 0;

// The moment of a call: CLOCK_MONOTONIC only (one vDSO read instead of two).
struct Clock {
  uint64_t mono_ns;
};

uint64_t ReadClock(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

Clock Now() { return {ReadClock(CLOCK_MONOTONIC)}; }

// Both clocks, read together, for the hello: sets g_wall_minus_mono.
void ReadStartClocks(uint64_t* wall_ns, uint64_t* mono_ns) {
  *mono_ns = ReadClock(CLOCK_MONOTONIC);
  *wall_ns = ReadClock(CLOCK_REALTIME);
  g_wall_minus_mono = *wall_ns - *mono_ns;
}

// REPTRACE_CAPTURE_BYTES: a decimal 0..128, else the default (everything the fingerprint
// covers, which the agent's span naming needs: an HTTP request line).
uint8_t CaptureBytesFromEnv() {
  const char* value = getenv("REPTRACE_CAPTURE_BYTES");
  if (value == nullptr || value[0] == '\0') return kCaptureBytes;
  unsigned n = 0;
  for (const char* p = value; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9' || n > kCaptureBytes) return kCaptureBytes;
    n = n * 10 + static_cast<unsigned>(*p - '0');
  }
  return n <= kCaptureBytes ? static_cast<uint8_t>(n) : kCaptureBytes;
}

// A failure that moved no bytes and ends nothing: the program will simply call again.
bool IsRetry(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Where the bytes of a call are (for capture): a buffer, iovecs, or nowhere (sendfile,
// MSG_TRUNC).
struct Bytes {
  const void* buf = nullptr;
  const iovec* iov = nullptr;
  int iovcnt = 0;
};

size_t Gather(const Bytes& bytes, size_t n, uint8_t* out) {
  if (bytes.buf != nullptr) {
    std::memcpy(out, bytes.buf, n);
    return n;
  }
  if (bytes.iov != nullptr && bytes.iovcnt > 0 && bytes.iov[0].iov_len >= n) {
    // The common case (a response's headers in the first buffer): one copy, no loop.
    std::memcpy(out, bytes.iov[0].iov_base, n);
    return n;
  }
  size_t copied = 0;
  for (int i = 0; bytes.iov != nullptr && i < bytes.iovcnt && copied < n; ++i) {
    size_t take = bytes.iov[i].iov_len;
    if (take > n - copied) take = n - copied;
    if (take > 0) std::memcpy(out + copied, bytes.iov[i].iov_base, take);
    copied += take;
  }
  return copied;
}

size_t IovecBytes(const iovec* iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; iov != nullptr && i < iovcnt; ++i) total += iov[i].iov_len;
  return total;
}

bool IsV4Mapped(const uint8_t (&addr)[16]) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(addr, kPrefix, 12) == 0;
}

bool ToEndpoint(const sockaddr* sa, socklen_t len, uint8_t (&addr)[16], uint16_t* port);

// Writes every field but `capture` (a claimed ring cell holds a stale record: nothing may
// be left from it except capture bytes past capture_len, which no reader looks at).
void FillHeader(EventRecord* r, EventKind kind, int fd, uint64_t conn_id, uint8_t role,
                const Endpoints& endpoints, const Clock& clock) {
  r->header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), sizeof(EventRecord)};
  r->kind = static_cast<uint8_t>(kind);
  r->role = role;
  r->flags = 0;
  r->capture_len = 0;
  r->error = 0;
  r->reserved = 0;
  r->offset = 0;
  r->result = 0;
  r->reserved2[0] = r->reserved2[1] = 0;
  r->hash = 0;
  r->pid = g_pid.load(std::memory_order_relaxed);
  r->tid = CurrentTid();
  r->fd = fd;
  r->conn_id = conn_id;
  r->wall_ns = clock.mono_ns + g_wall_minus_mono;
  r->mono_ns = clock.mono_ns;
  r->local_port = endpoints.local_port;
  r->peer_port = endpoints.peer_port;
  // A v6 socket talking to an IPv4-mapped peer reports 4, like the v4 socket at the other end.
  r->family = endpoints.family == 6 && IsV4Mapped(endpoints.peer_addr) ? 4 : endpoints.family;
  r->protocol = endpoints.protocol;
  std::memcpy(r->local_addr, endpoints.local_addr, 16);
  std::memcpy(r->peer_addr, endpoints.peer_addr, 16);
}

// A Unix-domain socket's name, as a kFamilyUnix open record carries it in `capture`.
struct UnixName {
  char text[kCaptureBytes];
  uint8_t len = 0;
};

// The name in a sockaddr_un: its path, or '@' and the abstract name; false if unnamed.
bool UnixNameOf(const sockaddr* sa, socklen_t len, UnixName* name) {
  const size_t path_at = offsetof(sockaddr_un, sun_path);
  if (sa == nullptr || sa->sa_family != AF_UNIX || len <= path_at) return false;
  const char* path = reinterpret_cast<const sockaddr_un*>(sa)->sun_path;
  size_t n = len - path_at;
  if (n > sizeof(sockaddr_un::sun_path)) n = sizeof(sockaddr_un::sun_path);
  size_t out = 0;
  if (path[0] == '\0') {  // abstract: the bytes after the NUL, all of them significant
    name->text[out++] = '@';
    ++path;
    --n;
  } else {
    n = strnlen(path, n);
  }
  if (n > kCaptureBytes - out) n = kCaptureBytes - out;
  std::memcpy(name->text + out, path, n);
  name->len = static_cast<uint8_t>(out + n);
  return name->len > 0;
}

// The connection's open record may not have reached the current agent connection (see
// LinkGeneration): announce it again, before the data record that follows. Cold.
__attribute__((noinline)) void Reannounce(ConnectionState* state, int fd, uint64_t conn_id,
                                          const Clock& clock) {
  const bool client = state->role == static_cast<uint8_t>(SocketRole::kClient);
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, client ? EventKind::kConnect : EventKind::kAccept, fd, conn_id, state->role,
             state->endpoints, clock);
  r.flags = kFlagReannounce;
  if (state->endpoints.family == kFamilyUnix) {
    // Its name, as the first announcement had it: the path the server bound.
    sockaddr_storage addr = {};
    socklen_t len = sizeof(addr);
    UnixName name;
    if ((client ? getpeername : getsockname)(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
        UnixNameOf(reinterpret_cast<sockaddr*>(&addr), len, &name)) {
      std::memcpy(r.capture, name.text, name.len);
      r.capture_len = name.len;
    }
  }
  r.offset = state->bytes_sent.load(std::memory_order_relaxed);
  r.result = static_cast<int64_t>(state->bytes_received.load(std::memory_order_relaxed));
  // Still unannounced if it finds no room: the next call tries again.
  const uint32_t announced = PublishAnnouncement(&r, sizeof(r));
  if (announced != 0) state->announced.store(announced, std::memory_order_relaxed);
}

// Sets the capture length of `r`, whose first `captured` capture bytes are filled, zeroes
// its padding to 8 bytes (the padding goes on the wire: no stale bytes of an earlier
// record in it) and returns the record's wire size.
size_t EndCapture(DataRecord* r, size_t captured) {
  r->capture_len = static_cast<uint8_t>(captured);
  const size_t padded = (captured + 7) & ~size_t{7};
  for (size_t i = captured; i < padded; ++i) r->capture[i] = 0;
  return DataRecordWireSize(r->flags, r->capture_len);
}

// Fills a message start's capture in `r` (capture_len, capture and its padding to 8
// bytes), and its fingerprint unless the capture holds every byte of it (the agent
// computes it then: see DataRecord::hash); returns the record's wire size.
__attribute__((always_inline)) inline size_t FillMessageStart(DataRecord* r, const Bytes& bytes,
                                                               ssize_t result) {
  size_t n = static_cast<size_t>(result);
  if (n > kCaptureBytes) n = kCaptureBytes;
  const size_t capture_bytes = CaptureBytes();
  size_t captured = n < capture_bytes ? n : capture_bytes;
  r->hash = 0;
  if (bytes.buf != nullptr) {
    std::memcpy(r->capture, bytes.buf, captured);
    if (captured < n) r->hash = Fingerprint64(bytes.buf, n);
  } else if (bytes.iov != nullptr) {
    // Gathered into the cell (it has room for kCaptureBytes) for the fingerprint.
    const size_t gathered = Gather(bytes, n, r->capture);
    if (captured > gathered) captured = gathered;
    if (captured < n) r->hash = Fingerprint64(r->capture, gathered);
  } else {
    captured = 0;  // sendfile, MSG_TRUNC: the bytes are not in memory (hash 0)
  }
  return EndCapture(r, captured);
}

// Fills the capture of a call whose bytes start `into_message` bytes into a message whose
// head is still being captured: the bytes up to the capture size; returns the wire size.
__attribute__((noinline)) size_t FillHeadCapture(DataRecord* r, const Bytes& bytes,
                                                 ssize_t result, uint64_t into_message) {
  size_t n = CaptureBytes() - static_cast<size_t>(into_message);
  if (n > static_cast<size_t>(result)) n = static_cast<size_t>(result);
  size_t captured = 0;
  if (bytes.buf != nullptr) {
    std::memcpy(r->capture, bytes.buf, n);
    captured = n;
  } else if (bytes.iov != nullptr) {
    captured = Gather(bytes, n, r->capture);
  }
  r->hash = 0;
  return EndCapture(r, captured);
}

// One UDP datagram: a full EventRecord, with the datagram's own peer when the call named
// one (unconnected UDP). Every datagram is a message.
void RecordDatagram(ConnectionState* state, int fd, uint64_t conn_id, EventKind kind,
                    const Bytes& bytes, ssize_t result, int err, uint64_t offset,
                    const Clock& clock, const sockaddr* peer, socklen_t peer_len) {
  EventRing::Claim claim;
  auto* r = static_cast<EventRecord*>(BeginRecord(&claim));
  if (r == nullptr) return;  // ring full: counted as a drop
  Endpoints endpoints = state->endpoints;
  if (peer != nullptr) ToEndpoint(peer, peer_len, endpoints.peer_addr, &endpoints.peer_port);
  FillHeader(r, kind, fd, conn_id, state->role, endpoints, clock);
  r->offset = offset;
  if (result > 0) {
    r->flags = kFlagMessageStart;
    size_t n = static_cast<size_t>(result);
    if (n > kCaptureBytes) n = kCaptureBytes;
    if (bytes.buf != nullptr || bytes.iov != nullptr) {
      n = Gather(bytes, n, r->capture);
      r->hash = Fingerprint64(r->capture, n);
      const size_t capture_bytes = CaptureBytes();
      r->capture_len = static_cast<uint8_t>(n < capture_bytes ? n : capture_bytes);
    }
  }
  r->result = result;
  r->error = result < 0 ? err : 0;
  EndRecord(claim);
}

// Moves a connection's offsets and direction on by one call's `result` bytes. Returns the
// offset the bytes start at; sets whether a message starts there and, if not, where in its
// message they start. Done for every call, reported or not, so that offsets stay exact
// after a drop and after the config switched reporting off and on again.
__attribute__((always_inline)) inline uint64_t Advance(ConnectionState* state, EventKind kind,
                                                       ssize_t result, bool* message_start,
                                                       uint64_t* into_message) {
  std::atomic<uint64_t>& moved =
      kind == EventKind::kSend ? state->bytes_sent : state->bytes_received;
  if (result <= 0) return moved.load(std::memory_order_relaxed);
  const uint64_t offset = moved.fetch_add(static_cast<uint64_t>(result), std::memory_order_relaxed);
  // A load, and a plain store when the direction flips (in a request/response exchange,
  // every call): no locked instruction. Two threads racing on one connection's direction
  // may both mark a message start; their bytes interleave anyway.
  const uint8_t direction = static_cast<uint8_t>(kind);
  *message_start = state->last_direction.load(std::memory_order_relaxed) != direction;
  if (*message_start) {
    state->last_direction.store(direction, std::memory_order_relaxed);
    state->message_start.store(offset, std::memory_order_relaxed);
  } else {
    *into_message = offset - state->message_start.load(std::memory_order_relaxed);
  }
  return offset;
}

// The clock of a call on `state`, taken only if the connection reports (0 if not: a call
// the config does not trace reads no clock; RecordTransfer reads it then if the decision
// changed meanwhile).
__attribute__((always_inline)) inline Clock ClockIfReporting(ConnectionState* state) {
  return ConnectionReporting(state) ? Now() : Clock{0};
}

// A connection the config does not trace (and that neither frames in-band nor carries TLS,
// whose paths do more): its calls only count their bytes, with no clock, errno handling or
// record (CountedCall). Checked in the wrappers themselves, with loads only (no call, so a
// wrapper keeps its frame-less shape for untraced fds): a connection whose decision is
// stale goes the traced path, which decides it (RecordTransfer).
__attribute__((always_inline)) inline bool KnownOnlyCounted(const ConnectionState* state) {
  return KnownNotReporting(state) && !InbandActive(state) && t_tls_call == nullptr &&
         state->tls.load(std::memory_order_relaxed) == 0;
}

// Out of line: inlined into the wrappers it gave their untraced path a stack frame (+10
// instructions on every call of an fd the hook does not trace).
template <typename Call>
__attribute__((noinline)) ssize_t CountedCall(ConnectionState* state, EventKind kind,
                                              Call call) {
  const ssize_t result = call();
  if (result > 0) {
    bool message_start;
    uint64_t into_message;
    Advance(state, kind, result, &message_start, &into_message);
  }
  return result;
}

// One send or receive call on a connection in the table: its bytes always counted, a
// record made if the config traces the connection (and its token bucket allows).
// `plaintext`: moved by an SSL_* call (tls.cc); otherwise a raw socket call, which records
// and counts nothing on a connection that carries TLS (tls.h). Inlined into each caller:
// its call (ten arguments, six saved registers) was 24 of the ~300 instructions a traced
// call costs.
__attribute__((always_inline)) inline void RecordTransfer(
    ConnectionState* state, int fd, EventKind kind, const Bytes& bytes, ssize_t result,
    int err, Clock clock, bool plaintext = false, const sockaddr* peer = nullptr,
    socklen_t peer_len = 0) {
  if (!plaintext && TlsOwnsRawBytes(state, fd)) return;
  const uint64_t conn_id = state->conn_id.load(std::memory_order_acquire);
  if (conn_id == 0) return;  // closed by another thread meanwhile
  bool message_start = false;
  uint64_t into_message = UINT64_MAX;  // where this call's bytes start in their message
  // Two loads and a compare: does the config trace this connection (hook/settings.h)?
  if (!ConnectionReporting(state)) {
    Advance(state, kind, result, &message_start, &into_message);
    return;
  }
  if (clock.mono_ns == 0) clock = Now();
  // One relaxed load and compare: has the agent connection got the open record?
  const uint32_t generation = LinkGeneration();
  if (state->announced.load(std::memory_order_relaxed) != generation) {
    Reannounce(state, fd, conn_id, clock);
  }
  const bool datagram = state->endpoints.protocol == IPPROTO_UDP;
  const uint64_t offset = Advance(state, kind, result, &message_start, &into_message);
  // max_events_per_second: a record refused is counted; the offsets have moved on.
  if (!TakeEventToken(clock.mono_ns)) {
    CountRateLimited();
    return;
  }
  if (datagram) {
    RecordDatagram(state, fd, conn_id, kind, bytes, result, err, offset, clock, peer,
                   peer_len);
    return;
  }
  // Written in place in the ring (no record on the stack, no copy): 48 bytes, one cache
  // line of the cell, unless a message starts here.
  EventRing::Claim claim;
  auto* r = static_cast<DataRecord*>(BeginRecord(&claim));
  if (r == nullptr) return;  // ring full: counted as a drop
  // A message whose first bytes came in several calls: this call's share of its head.
  const bool head = into_message < CaptureBytes();
  r->kind = static_cast<uint8_t>(kind);
  r->flags = message_start ? kFlagMessageStart : head ? kFlagHeadCapture : 0;
  r->capture_len = 0;
  r->reserved = 0;
  r->tid = CurrentTid();
  r->conn_id = conn_id;
  r->mono_ns = clock.mono_ns;
  r->offset = offset;
  r->result = result < 0 ? -static_cast<int64_t>(err) : result;
  const size_t size = message_start ? FillMessageStart(r, bytes, result)
                      : head ? FillHeadCapture(r, bytes, result, into_message)
                             : kDataRecordBaseSize;
  r->header = {kRecordMagic, static_cast<uint16_t>(RecordType::kData),
               static_cast<uint16_t>(size)};
  EndRecord(claim);
}

// After a receive-side call on a traced fd: time is taken at the return. Inlined into the
// traced path of read/recv (TracedReceive below), so that it makes one call in all;
// AfterReceive, for the other wrappers, is this as a function.
__attribute__((always_inline)) inline void AfterReceiveInline(
    ConnectionState* state, int fd, const Bytes& bytes, size_t requested, ssize_t result,
    const sockaddr* peer = nullptr, socklen_t peer_len = 0) {
  const int err = errno;
  if (result < 0 ? IsRetry(err) : (result == 0 && requested == 0)) return;  // nothing moved
  // An empty datagram is not the end of a stream: nothing to record.
  if (result == 0 && state->endpoints.protocol == IPPROTO_UDP) return;
  {
    InHookScope scope;
    RecordTransfer(state, fd, EventKind::kRecv, bytes, result, err, ClockIfReporting(state),
                   false, peer, peer_len);
  }
  errno = err;
}

// After a send-side call on a traced fd: `clock` was taken at the start. Inlined as
// AfterReceiveInline is.
__attribute__((always_inline)) inline void AfterSendInline(
    ConnectionState* state, int fd, const Bytes& bytes, ssize_t result, const Clock& clock,
    const sockaddr* peer = nullptr, socklen_t peer_len = 0) {
  const int err = errno;
  if (result < 0 ? IsRetry(err) : result == 0) return;
  {
    InHookScope scope;
    RecordTransfer(state, fd, EventKind::kSend, bytes, result, err, clock, false, peer,
                   peer_len);
  }
  errno = err;
}

void AfterReceive(ConnectionState* state, int fd, const Bytes& bytes, size_t requested,
                  ssize_t result, const sockaddr* peer = nullptr, socklen_t peer_len = 0) {
  AfterReceiveInline(state, fd, bytes, requested, result, peer, peer_len);
}

void AfterSend(ConnectionState* state, int fd, const Bytes& bytes, ssize_t result,
               const Clock& clock, const sockaddr* peer = nullptr, socklen_t peer_len = 0) {
  AfterSendInline(state, fd, bytes, result, clock, peer, peer_len);
}

// An address as the EventRecord wants it: 16 bytes, IPv4 mapped, port in host order.
bool ToEndpoint(const sockaddr* sa, socklen_t len, uint8_t (&addr)[16], uint16_t* port) {
  if (sa == nullptr) return false;
  if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::memset(addr, 0, 10);
    addr[10] = addr[11] = 0xff;
    std::memcpy(addr + 12, &in->sin_addr, 4);
    *port = ntohs(in->sin_port);
    return true;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::memcpy(addr, &in6->sin6_addr, 16);
    *port = ntohs(in6->sin6_port);
    return true;
  }
  return false;
}

// Is `fd` a TCP (or, if `udp`, a UDP) socket over IPv4/IPv6, or, if REPTRACE_TRACE_UNIX
// asks, a Unix-domain stream socket? Fills the family, the protocol and the local address
// (for a Unix-domain socket, its own name into `*unix_name`, if it has one).
bool InspectSocket(int fd, Endpoints* endpoints, bool udp, UnixName* unix_name = nullptr) {
  int protocol = 0;
  socklen_t optlen = sizeof(protocol);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen) != 0) return false;
  sockaddr_storage local = {};
  socklen_t len = sizeof(local);
  if (protocol == 0 && TraceUnixSockets()) {  // Unix-domain sockets have no protocol number
    int domain = 0, type = 0;
    optlen = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) != 0 || domain != AF_UNIX) {
      return false;
    }
    optlen = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) != 0 || type != SOCK_STREAM) {
      return false;
    }
    endpoints->family = kFamilyUnix;
    endpoints->protocol = 0;
    if (unix_name != nullptr &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      UnixNameOf(reinterpret_cast<sockaddr*>(&local), len, unix_name);
    }
    return true;
  }
  if (!(protocol == IPPROTO_TCP || (udp && protocol == IPPROTO_UDP))) return false;
  endpoints->protocol = static_cast<uint8_t>(protocol);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return false;
  endpoints->family = local.ss_family == AF_INET ? 4 : 6;
  ToEndpoint(reinterpret_cast<sockaddr*>(&local), len, endpoints->local_addr,
             &endpoints->local_port);
  return true;
}

void EmitClose(int fd, const ConnectionState& was, int64_t result, int err) {
  // A connection the current agent connection never heard of (inherited across fork and
  // never used here, or announced to an agent connection since lost) ends nothing there;
  // and a fork child that closes inherited fds before exec makes no ring for it.
  if (was.announced.load(std::memory_order_relaxed) != LinkGeneration()) return;
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, EventKind::kClose, fd, was.conn_id.load(std::memory_order_relaxed), was.role,
             was.endpoints, Now());
  r.offset = 0;
  r.result = result;
  r.error = result < 0 ? err : 0;
  Publish(r);
}

// The program is starting a new connection on `fd`, whose number may still carry a
// connection we never saw closed (closed by a path we do not hook): end that one first.
void ForgetStale(int fd) {
  ConnectionState was;
  bool last = false;
  if (g_table.Stop(fd, &was, &last) != 0 && last) EmitClose(fd, was, 0, 0);
}

void StartConnection(int fd, EventKind kind, SocketRole role, const Endpoints& endpoints,
                     int64_t result, int err, const Clock& clock, bool keep,
                     const UnixName* unix_name = nullptr) {
  const uint64_t conn_id = g_next_conn_id.fetch_add(1, std::memory_order_relaxed);
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, kind, fd, conn_id, static_cast<uint8_t>(role), endpoints, clock);
  if (unix_name != nullptr) {
    std::memcpy(r.capture, unix_name->text, unix_name->len);
    r.capture_len = unix_name->len;
  }
  r.result = result;
  r.error = result < 0 ? err : 0;
  // What the config says of it (hook/settings.h): a connection it does not trace is still
  // kept, counting its bytes, but announces nothing until it does.
  MaybeMapConfigPage(clock.mono_ns);
  bool reporting = false;
  const uint64_t config_seq =
      DecideNewConnection(static_cast<uint8_t>(role), endpoints, &reporting);
  // The generation of the ring the record went into (0: dropped): if the agent connection
  // is lost after that, the generation moves on and the data calls re-announce.
  const uint32_t announced = reporting ? PublishAnnouncement(&r, sizeof(r)) : 0;
  if (keep) {
    inband::Mode send_mode, receive_mode;
    InbandModesFor(static_cast<uint8_t>(role), endpoints, reporting, &send_mode,
                   &receive_mode);
    g_table.Start(fd, conn_id, static_cast<uint8_t>(role), endpoints, announced, send_mode,
                  receive_mode, config_seq, reporting);
  }
}

// Set-up has finished: connections seen before (from another library's constructor) are
// left untraced rather than traced with a half-configured agent link.
bool Ready() { return g_pid.load(std::memory_order_acquire) != 0; }

bool SameEndpoints(const Endpoints& a, const Endpoints& b) {
  return a.local_port == b.local_port && a.peer_port == b.peer_port &&
         std::memcmp(a.local_addr, b.local_addr, 16) == 0 &&
         std::memcmp(a.peer_addr, b.peer_addr, 16) == 0;
}

// The pending connect() of a traced client connection failed with `err` (seen by polling
// connect() again, or in getsockopt(SO_ERROR)): reported on the same connection.
void ReportFailedConnect(int fd, const ConnectionState& state, int err, const Clock& clock) {
  if (state.reporting.load(std::memory_order_relaxed) == 0) return;  // not traced
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, EventKind::kConnect, fd, state.conn_id.load(std::memory_order_acquire),
             state.role, state.endpoints, clock);
  r.result = -1;
  r.error = err;
  Publish(r);
}

void AfterConnect(int fd, const sockaddr* addr, socklen_t addrlen, int result, int err,
                  const Clock& clock) {
  InHookScope scope;
  Endpoints endpoints;
  UnixName unix_name;  // a Unix-domain socket's peer: the name it connects to
  if (!Ready() || !InspectSocket(fd, &endpoints, /*udp=*/true) ||
      !(endpoints.family == kFamilyUnix
            ? UnixNameOf(addr, addrlen, &unix_name)
            : ToEndpoint(addr, addrlen, endpoints.peer_addr, &endpoints.peer_port))) {
    ForgetStale(fd);
    return;
  }
  // A repeated connect() on a connection we already trace (polling a non-blocking
  // connect: EALREADY, EISCONN, or 0 once established) starts nothing new.
  ConnectionState* state = g_table.Find(fd);
  if (state != nullptr && state->role == static_cast<uint8_t>(SocketRole::kClient) &&
      SameEndpoints(state->endpoints, endpoints)) {
    if (result < 0 && err != EALREADY && err != EISCONN && !IsRetry(err) &&
        err != EINPROGRESS) {
      ReportFailedConnect(fd, *state, err, clock);
    }
    return;
  }
  if (result < 0 && (err == EALREADY || err == EISCONN)) return;  // not a connect we saw start
  ForgetStale(fd);
  // Established, or on its way (EINPROGRESS, or EINTR: the kernel carries on): traced.
  // Any other failure is reported once and the fd stays untraced.
  const bool started = result == 0 || err == EINPROGRESS || err == EINTR;
  StartConnection(fd, EventKind::kConnect, SocketRole::kClient, endpoints, result,
                  result < 0 ? err : 0, clock, started,
                  endpoints.family == kFamilyUnix ? &unix_name : nullptr);
}

void AfterAccept(int fd) {
  const int saved = errno;
  {
    InHookScope scope;
    const Clock clock = Now();
    Endpoints endpoints;
    UnixName unix_name;  // a Unix-domain socket's own name: the path the server bound
    sockaddr_storage peer = {};
    socklen_t len = sizeof(peer);
    if (Ready() && InspectSocket(fd, &endpoints, /*udp=*/false, &unix_name) &&
        (endpoints.family == kFamilyUnix ||
         (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
          ToEndpoint(reinterpret_cast<sockaddr*>(&peer), len, endpoints.peer_addr,
                     &endpoints.peer_port)))) {
      ForgetStale(fd);
      StartConnection(fd, EventKind::kAccept, SocketRole::kServer, endpoints, fd, 0, clock,
                      true, endpoints.family == kFamilyUnix ? &unix_name : nullptr);
    } else {
      ForgetStale(fd);
    }
  }
  errno = saved;
}

// A boolean environment setting: "1", "true", "yes" or "on" (any case) is true.
bool EnvFlag(const char* name) {
  const char* value = getenv(name);
  if (value == nullptr) return false;
  for (const char* yes : {"1", "true", "yes", "on"}) {
    if (strcasecmp(value, yes) == 0) return true;
  }
  return false;
}

// In the forking thread, before fork(): caches its tid, which the child then reads from its
// copy of the thread's TLS (the child's only thread continues the forking one).
void BeforeFork() { CurrentTid(); }

void ChildAfterFork() {
  uint64_t wall_ns, mono_ns;
  ReadStartClocks(&wall_ns, &mono_ns);
  // The child continues the forking thread, if the agent knows this process (it has
  // published something); otherwise the agent could not look that thread up, and the
  // child passes on what this process inherited (a shell between a server and the program
  // it runs traces nothing itself).
  if (LinkStarted()) {
    g_cause.store(PackCause(g_pid.load(std::memory_order_relaxed), t_tid),
                  std::memory_order_relaxed);
  }
  g_pid.store(static_cast<uint32_t>(syscall(SYS_getpid)), std::memory_order_relaxed);
  t_tid = 0;
  ReseedInbandAfterFork();
  // Inherited connections stay traced, with their offsets: a forking server (PostgreSQL's
  // postmaster, sshd, socketserver.ForkingMixIn) accepts and its child serves. They are
  // announced again on the child's own agent connection when it first uses them (the
  // link generation moved on below), and not at all if it never does.
  ResetAgentLinkAfterFork(wall_ns, mono_ns);
}

__attribute__((constructor(101))) void ReptraceInit() {
  const int saved = errno;
  InHookScope scope;
  ResolveRealCalls();
  g_cause.store(TakeCauseFromEnvironment(), std::memory_order_relaxed);
  // The config page's settings, as this process's environment adjusts them.
  ConfigureSettings(CaptureBytesFromEnv(), EnvFlag("REPTRACE_TRACE_UNIX"));
  uint64_t wall_ns, mono_ns;
  ReadStartClocks(&wall_ns, &mono_ns);
  ConfigureInband();
  ConfigureAgentLink(wall_ns, mono_ns);
  pthread_atfork(BeforeFork, nullptr, ChildAfterFork);
  // Last: a non-zero pid is what lets connect/accept start tracing (see Ready()).
  g_pid.store(static_cast<uint32_t>(syscall(SYS_getpid)), std::memory_order_release);
  errno = saved;
}

__attribute__((destructor(101))) void ReptraceFini() {
  const int saved = errno;
  InHookScope scope;
  FlushAgentLink();
  errno = saved;
}

// The traced-receive wrapper shared by read/recv/recvfrom and their _chk forms.
//
// The traced path is a function of its own, and `call` holds copies of the arguments (its
// wrappers capture by value): the untraced path is then a table look-up and a jump to
// libc, with no stack frame or saved register (their prologue and epilogue were 17 of the
// 25 instructions a call on a non-socket fd cost).
template <typename Call>
__attribute__((noinline)) ssize_t TracedReceive(ConnectionState* state, int fd, void* buf,
                                                size_t n, int flags, Call call) {
  ssize_t result;
  if (InbandActive(state)) {
    iovec iov = {buf, n};
    result = InbandReceive(state, fd, &iov, 1, flags, nullptr);
  } else {
    result = call();
  }
  if ((flags & MSG_PEEK) != 0) return result;  // a peek moves nothing: not recorded
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) bytes.buf = buf;  // MSG_TRUNC: bytes discarded, not in buf
  AfterReceiveInline(state, fd, bytes, n, result);
  return result;
}

// `overflow`: a fortified call's buffer is smaller than `n` (the real call aborts).
template <typename Call>
ssize_t Receive(int fd, void* buf, size_t n, int flags, Call call, bool overflow = false) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook || overflow ||
      ((flags & MSG_PEEK) != 0 && !InbandActive(state))) {
    return call();
  }
  if (KnownOnlyCounted(state)) return CountedCall(state, EventKind::kRecv, call);
  return TracedReceive(state, fd, buf, n, flags, call);
}

template <typename Call>
__attribute__((noinline)) ssize_t TracedSend(ConnectionState* state, int fd, const void* buf,
                                             size_t n, int flags, Call call) {
  const Clock clock = ClockIfReporting(state);
  ssize_t result;
  if (InbandActive(state)) {
    iovec iov = {const_cast<void*>(buf), n};
    result = InbandSend(state, fd, &iov, 1, flags, nullptr);
  } else {
    result = call();
  }
  Bytes bytes;
  bytes.buf = buf;
  AfterSendInline(state, fd, bytes, result, clock);
  return result;
}

template <typename Call>
ssize_t Send(int fd, const void* buf, size_t n, int flags, Call call) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return call();
  if (KnownOnlyCounted(state)) return CountedCall(state, EventKind::kSend, call);
  return TracedSend(state, fd, buf, n, flags, call);
}


// An untraced IPv4/IPv6 UDP socket is about to send a datagram to `addr` (sendto/sendmsg
// with an address): trace it from here. Before the send, a socket bound to no port yet is
// a client (the send binds it); one already bound is a server answering. Fills `*endpoints`
// (local address as far as known) and `*role`; false if `fd` is not such a socket.
bool PrepareUdp(int fd, const sockaddr* addr, socklen_t len, Endpoints* endpoints,
                SocketRole* role) {
  if (!Ready() || addr == nullptr || len < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) {
    return false;
  }
  InHookScope scope;
  if (!InspectSocket(fd, endpoints, /*udp=*/true) || endpoints->protocol != IPPROTO_UDP ||
      !ToEndpoint(addr, len, endpoints->peer_addr, &endpoints->peer_port)) {
    return false;
  }
  *role = endpoints->local_port == 0 ? SocketRole::kClient : SocketRole::kServer;
  return true;
}

// Starts tracing UDP socket `fd` (see PrepareUdp) once its first traced call has run: the
// local address is read again, the send may just have bound it.
ConnectionState* StartUdp(int fd, Endpoints endpoints, SocketRole role, const Clock& clock) {
  InHookScope scope;
  sockaddr_storage local = {};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    ToEndpoint(reinterpret_cast<sockaddr*>(&local), len, endpoints.local_addr,
               &endpoints.local_port);
  }
  ForgetStale(fd);
  StartConnection(fd, role == SocketRole::kClient ? EventKind::kConnect : EventKind::kAccept,
                  role, endpoints, role == SocketRole::kClient ? 0 : fd, 0, clock, true);
  return g_table.Find(fd);
}

// An untraced socket received a datagram from `peer` (recvfrom/recvmsg that returned an
// address): if it is an IPv4/IPv6 UDP socket, trace it from here as a server (it was bound
// to receive). Unix-domain and other sockets cost no system call.
ConnectionState* MaybeStartUdpServer(int fd, const sockaddr* peer, socklen_t len) {
  if (t_in_hook || !Ready() || peer == nullptr || len < sizeof(sa_family_t) ||
      (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)) {
    return nullptr;
  }
  Endpoints endpoints;
  {
    InHookScope scope;
    if (!InspectSocket(fd, &endpoints, /*udp=*/true) || endpoints.protocol != IPPROTO_UDP ||
        !ToEndpoint(peer, len, endpoints.peer_addr, &endpoints.peer_port)) {
      return nullptr;
    }
  }
  return StartUdp(fd, endpoints, SocketRole::kServer, Now());
}

// A UDP socket whose first send named its peer (PrepareUdp said to start): traced from
// that send on. Keeps errno; nullptr if it could not be traced.
ConnectionState* StartUdpAfterFirstSend(int fd, const Endpoints& endpoints, SocketRole role,
                                        const Clock& clock) {
  const int err = errno;
  ConnectionState* state = StartUdp(fd, endpoints, role, clock);
  errno = err;
  return state;
}

// The traced state for a receive that may have returned a datagram's address: the fd's
// own, or a UDP socket traced from its first datagram (MaybeStartUdpServer). Keeps errno.
ConnectionState* StateAfterReceiveFrom(ConnectionState* state, int fd, ssize_t result,
                                       const sockaddr* peer, socklen_t peer_len) {
  if (state != nullptr || result < 0) return state;
  const int err = errno;
  state = MaybeStartUdpServer(fd, peer, peer_len);
  errno = err;
  return state;
}

// The program is closing (or replacing) traced `fd`: forget it before the real call, since
// once closed its number may be reused at once. The connection ends with its last fd.
struct Closing {
  bool traced = false;
  bool last = false;
  ConnectionState was;
};

void StopForClose(int fd, Closing* closing) {
  InHookScope scope;
  closing->traced = g_table.Stop(fd, &closing->was, &closing->last) != 0;
}

void FinishClose(int fd, const Closing& closing, int result, int err) {
  if (!closing.traced || !closing.last) return;
  InHookScope scope;
  EmitClose(fd, closing.was, result, err);
}

// Every traced fd in [first, last] is being closed (close_range, closefrom).
void CloseTracedRange(unsigned int first, unsigned int last) {
  const int limit = g_table.FdLimit();
  if (limit <= 0 || first >= static_cast<unsigned int>(limit)) return;
  if (last >= static_cast<unsigned int>(limit)) last = static_cast<unsigned int>(limit) - 1;
  InHookScope scope;
  for (unsigned int fd = first; fd <= last; ++fd) {
    if (g_table.Find(static_cast<int>(fd)) == nullptr) continue;
    Closing closing;
    StopForClose(static_cast<int>(fd), &closing);
    FinishClose(static_cast<int>(fd), closing, 0, 0);
  }
}

// `new_fd` now duplicates `old_fd` (dup, dup2, dup3, fcntl F_DUPFD*): whatever `new_fd`
// was is gone, and if `old_fd` is traced both name the same connection.
void AfterDup(int old_fd, int new_fd) {
  if (new_fd < 0 || new_fd == old_fd) return;
  const int saved = errno;
  {
    InHookScope scope;
    ForgetStale(new_fd);
    g_table.Share(new_fd, old_fd);
  }
  errno = saved;
}

// dup2/dup3: `new_fd` is replaced; if it was the hook's agent connection, the hook lets go.
template <typename Call>
int Replace(int old_fd, int new_fd, Call call) {
  if (t_in_hook) return call();
  const bool was_agent = old_fd != new_fd && TakeAgentFd(new_fd);
  const int result = call();
  if (result < 0) {
    if (was_agent) {
      const int err = errno;
      RealClose(new_fd);  // still ours and no longer known: the program never had it
      errno = err;
    }
    return result;
  }
  if (old_fd != new_fd && (g_table.Find(new_fd) != nullptr || g_table.Find(old_fd) != nullptr)) {
    AfterDup(old_fd, result);
  }
  return result;
}

// fcntl/fcntl64: the third argument is read as glibc reads it (one pointer-sized value)
// and passed on unchanged. F_DUPFD/F_DUPFD_CLOEXEC make a duplicate.
template <typename Call>
int Fcntl(int fd, int cmd, void* arg, Call call) {
  const int result = call(fd, cmd, arg);
  if (result >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && !t_in_hook &&
      g_table.Find(fd) != nullptr) {
    AfterDup(fd, result);
  }
  return result;
}

// What moved in one message of recvmsg/recvmmsg (receive side; time taken at the return).
void RecordReceivedMessage(ConnectionState* state, int fd, const msghdr* msg, int flags,
                           ssize_t result, const Clock& clock) {
  if (result == 0 && state->endpoints.protocol == IPPROTO_UDP) return;
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) {
    bytes.iov = msg->msg_iov;
    bytes.iovcnt = static_cast<int>(msg->msg_iovlen);
  }
  RecordTransfer(state, fd, EventKind::kRecv, bytes, result, 0, clock, false,
                 static_cast<const sockaddr*>(msg->msg_name), msg->msg_namelen);
}

}  // namespace

void EnsureAnnounced(ConnectionState* state, int fd) {
  const uint64_t conn_id = state->conn_id.load(std::memory_order_acquire);
  if (conn_id != 0 && state->announced.load(std::memory_order_relaxed) != LinkGeneration() &&
      ConnectionReporting(state)) {
    Reannounce(state, fd, conn_id, Now());
  }
}

// What the SSL_* wrappers (tls.cc) use of the socket tracing: see tls.h.
TlsTime TlsTimeNow() { return {Now().mono_ns}; }
bool TlsTracingReady() { return Ready(); }
ConnectionState* TlsFindConnection(int fd) { return g_table.Find(fd); }
void RecordPlaintext(ConnectionState* state, int fd, EventKind kind, const void* buf,
                     ssize_t result, const TlsTime& time) {
  Bytes bytes;
  bytes.buf = buf;
  RecordTransfer(state, fd, kind, bytes, result, 0, Clock{time.mono_ns}, /*plaintext=*/true);
}

}  // namespace reptrace::hook

using namespace reptrace::hook;  // NOLINT: the C entry points below are outside any namespace

// getsockopt(SO_ERROR) is how a program learns that its non-blocking connect() failed
// (refused, timed out, unreachable): on a traced client connection that has moved no bytes
// yet, the error ends it as a failed connect. Every other use passes straight through.
REPTRACE_EXPORT int getsockopt(int fd, int level, int name, void* __restrict value,
                               socklen_t* __restrict len) noexcept {
  const int result = RealGetsockopt(fd, level, name, value, len);
  if (result != 0 || level != SOL_SOCKET || name != SO_ERROR || t_in_hook ||
      value == nullptr || len == nullptr || *len < sizeof(int)) {
    return result;
  }
  int pending;
  std::memcpy(&pending, value, sizeof(pending));
  ConnectionState* state = pending == 0 ? nullptr : g_table.Find(fd);
  if (state != nullptr && state->role == static_cast<uint8_t>(reptrace::SocketRole::kClient) &&
      state->bytes_sent.load(std::memory_order_relaxed) == 0 &&
      state->bytes_received.load(std::memory_order_relaxed) == 0) {
    const int saved = errno;
    {
      InHookScope scope;
      ReportFailedConnect(fd, *state, pending, Now());
    }
    errno = saved;
  }
  return result;
}

REPTRACE_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
  if (t_in_hook || addr == nullptr || len < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6 &&
       !(addr->sa_family == AF_UNIX && TraceUnixSockets()))) {
    if (!t_in_hook && g_table.Find(fd) != nullptr) {
      const int result = RealConnect(fd, addr, len);
      const int err = errno;
      {
        InHookScope scope;
        ForgetStale(fd);
      }
      errno = err;
      return result;
    }
    return RealConnect(fd, addr, len);
  }
  const Clock clock = Now();
  const int result = RealConnect(fd, addr, len);
  const int err = errno;
  AfterConnect(fd, addr, len, result, err, clock);
  errno = err;
  return result;
}

REPTRACE_EXPORT int accept(int fd, sockaddr* __restrict addr, socklen_t* __restrict len) {
  const int result = RealAccept(fd, addr, len);
  if (result >= 0 && !t_in_hook) AfterAccept(result);
  return result;
}

REPTRACE_EXPORT int accept4(int fd, sockaddr* __restrict addr, socklen_t* __restrict len,
                            int flags) {
  const int result = RealAccept4(fd, addr, len, flags);
  if (result >= 0 && !t_in_hook) AfterAccept(result);
  return result;
}

REPTRACE_EXPORT int close(int fd) {
  if (t_in_hook) return RealClose(fd);
  TakeAgentFd(fd);  // a program closing every fd closes ours too: we reconnect later
  if (g_table.Find(fd) == nullptr) return RealClose(fd);
  Closing closing;
  StopForClose(fd, &closing);
  const int result = RealClose(fd);
  const int err = errno;
  FinishClose(fd, closing, result, err);
  errno = err;
  return result;
}

REPTRACE_EXPORT ssize_t read(int fd, void* buf, size_t n) {
  return Receive(fd, buf, n, 0, [=] { return RealRead(fd, buf, n); });
}

REPTRACE_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  return Receive(
      fd, buf, n, 0,
      [=]() -> ssize_t {
        if (g_real.read_chk != nullptr) return g_real.read_chk(fd, buf, n, buflen);
        if (n > buflen) abort();  // what __chk_fail would do
        return RealRead(fd, buf, n);
      },
      n > buflen);
}

REPTRACE_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  return Receive(fd, buf, n, flags, [=] { return RealRecv(fd, buf, n, flags); });
}

REPTRACE_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  return Receive(
      fd, buf, n, flags,
      [=]() -> ssize_t {
        if (g_real.recv_chk != nullptr) return g_real.recv_chk(fd, buf, n, buflen, flags);
        if (n > buflen) abort();
        return RealRecv(fd, buf, n, flags);
      },
      n > buflen);
}

// recvfrom on a connection whose in-band state is active (a TCP stream: no peer to report).
static __attribute__((noinline)) ssize_t InbandReceiveFrom(ConnectionState* state, int fd,
                                                           void* buf, size_t n, int flags,
                                                           sockaddr* addr, socklen_t* len) {
  iovec iov = {buf, n};
  msghdr msg = {};
  msg.msg_name = addr;
  msg.msg_namelen = addr != nullptr && len != nullptr ? *len : 0;
  const ssize_t result = InbandReceive(state, fd, &iov, 1, flags, &msg);
  if (result >= 0 && addr != nullptr && len != nullptr) *len = msg.msg_namelen;
  if ((flags & MSG_PEEK) != 0) return result;
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) bytes.buf = buf;
  AfterReceive(state, fd, bytes, n, result);
  return result;
}

// recvfrom and __recvfrom_chk: the datagram's peer; an untraced UDP server socket is
// traced from its first datagram.
template <typename Call>
static ssize_t ReceiveFrom(int fd, void* buf, size_t n, int flags, sockaddr* addr,
                           socklen_t* len, Call call) {
  ConnectionState* state = g_table.Find(fd);
  if (!t_in_hook && state != nullptr && InbandActive(state)) {
    return InbandReceiveFrom(state, fd, buf, n, flags, addr, len);
  }
  if (t_in_hook || (flags & MSG_PEEK) != 0 || (state == nullptr && addr == nullptr)) {
    return call();
  }
  const ssize_t result = call();
  const socklen_t peer_len = (result >= 0 && addr != nullptr && len != nullptr) ? *len : 0;
  const sockaddr* peer = peer_len > 0 ? addr : nullptr;
  state = StateAfterReceiveFrom(state, fd, result, peer, peer_len);
  if (state == nullptr) return result;
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) bytes.buf = buf;
  AfterReceive(state, fd, bytes, n, result, peer, peer_len);
  return result;
}

REPTRACE_EXPORT ssize_t recvfrom(int fd, void* __restrict buf, size_t n, int flags,
                                 sockaddr* __restrict addr, socklen_t* __restrict len) {
  return ReceiveFrom(fd, buf, n, flags, addr, len,
                     [&] { return RealRecvfrom(fd, buf, n, flags, addr, len); });
}

REPTRACE_EXPORT ssize_t __recvfrom_chk(int fd, void* __restrict buf, size_t n, size_t buflen,
                                       int flags, sockaddr* __restrict addr,
                                       socklen_t* __restrict len) {
  if (n > buflen && g_real.recvfrom_chk != nullptr) {  // the real call aborts
    return g_real.recvfrom_chk(fd, buf, n, buflen, flags, addr, len);
  }
  return ReceiveFrom(fd, buf, n, flags, addr, len, [&]() -> ssize_t {
    if (g_real.recvfrom_chk != nullptr) {
      return g_real.recvfrom_chk(fd, buf, n, buflen, flags, addr, len);
    }
    if (n > buflen) abort();
    return RealRecvfrom(fd, buf, n, flags, addr, len);
  });
}

// readv/writev: split as Receive/Send are (the untraced path a look-up and a jump).
static __attribute__((noinline)) ssize_t TracedReadv(ConnectionState* state, int fd,
                                                     const iovec* iov, int iovcnt) {
  const ssize_t result = InbandActive(state) && iovcnt >= 0 && iov != nullptr
                             ? InbandReceive(state, fd, iov, iovcnt, 0, nullptr)
                             : RealReadv(fd, iov, iovcnt);
  Bytes bytes;
  bytes.iov = iov;
  bytes.iovcnt = iovcnt;
  AfterReceiveInline(state, fd, bytes, IovecBytes(iov, iovcnt), result);
  return result;
}

REPTRACE_EXPORT ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return RealReadv(fd, iov, iovcnt);
  if (KnownOnlyCounted(state)) {
    return CountedCall(state, reptrace::EventKind::kRecv,
                       [=] { return RealReadv(fd, iov, iovcnt); });
  }
  return TracedReadv(state, fd, iov, iovcnt);
}

REPTRACE_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  return Send(fd, buf, n, 0, [=] { return RealWrite(fd, buf, n); });
}

REPTRACE_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  return Send(fd, buf, n, flags, [=] { return RealSend(fd, buf, n, flags); });
}

REPTRACE_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags,
                               const sockaddr* addr, socklen_t len) {
  ConnectionState* state = g_table.Find(fd);
  if (t_in_hook || (state == nullptr && addr == nullptr)) {
    return RealSendto(fd, buf, n, flags, addr, len);
  }
  Endpoints endpoints;
  reptrace::SocketRole role = reptrace::SocketRole::kUnknown;
  const bool start = state == nullptr && PrepareUdp(fd, addr, len, &endpoints, &role);
  if (state == nullptr && !start) return RealSendto(fd, buf, n, flags, addr, len);
  const Clock clock = state != nullptr ? ClockIfReporting(state) : Now();
  ssize_t result;
  if (state != nullptr && InbandActive(state)) {
    iovec iov = {const_cast<void*>(buf), n};
    msghdr msg = {};
    msg.msg_name = const_cast<sockaddr*>(addr);
    msg.msg_namelen = addr != nullptr ? len : 0;
    result = InbandSend(state, fd, &iov, 1, flags, &msg);
  } else {
    result = RealSendto(fd, buf, n, flags, addr, len);
  }
  if (start) state = StartUdpAfterFirstSend(fd, endpoints, role, clock);
  if (state == nullptr) return result;
  Bytes bytes;
  bytes.buf = buf;
  AfterSend(state, fd, bytes, result, clock, addr, len);
  return result;
}

static __attribute__((noinline)) ssize_t TracedWritev(ConnectionState* state, int fd,
                                                      const iovec* iov, int iovcnt) {
  const Clock clock = ClockIfReporting(state);
  const ssize_t result = InbandActive(state) && iovcnt >= 0 && iov != nullptr
                             ? InbandSend(state, fd, iov, iovcnt, 0, nullptr)
                             : RealWritev(fd, iov, iovcnt);
  Bytes bytes;
  bytes.iov = iov;
  bytes.iovcnt = iovcnt;
  AfterSendInline(state, fd, bytes, result, clock);
  return result;
}

REPTRACE_EXPORT ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return RealWritev(fd, iov, iovcnt);
  if (KnownOnlyCounted(state)) {
    return CountedCall(state, reptrace::EventKind::kSend,
                       [=] { return RealWritev(fd, iov, iovcnt); });
  }
  return TracedWritev(state, fd, iov, iovcnt);
}

// sendfile/sendfile64: a framed connection's header goes first (InbandSendfile).
template <typename Call>
static ssize_t SendFile(int out_fd, int in_fd, off64_t* offset, size_t count, Call call) {
  ConnectionState* state = g_table.Find(out_fd);
  if (state == nullptr || t_in_hook) return call();
  if (KnownOnlyCounted(state)) return CountedCall(state, reptrace::EventKind::kSend, call);
  const Clock clock = ClockIfReporting(state);
  const ssize_t result = InbandActive(state)
                             ? InbandSendfile(state, out_fd, in_fd, offset, count)
                             : call();
  // Nothing to capture (the bytes come from a file), but the offsets count.
  AfterSend(state, out_fd, Bytes(), result, clock);
  return result;
}

REPTRACE_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  static_assert(sizeof(off_t) == sizeof(off64_t), "a 64-bit off_t");
  return SendFile(out_fd, in_fd, reinterpret_cast<off64_t*>(offset), count,
                  [=] { return RealSendfile(out_fd, in_fd, offset, count); });
}

REPTRACE_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t* offset,
                                   size_t count) noexcept {
  return SendFile(out_fd, in_fd, offset, count,
                  [=] { return RealSendfile64(out_fd, in_fd, offset, count); });
}

REPTRACE_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  ConnectionState* state = g_table.Find(fd);
  if (!t_in_hook && msg != nullptr && state != nullptr && InbandActive(state)) {
    const ssize_t result = InbandReceive(state, fd, msg->msg_iov,
                                         static_cast<int>(msg->msg_iovlen), flags, msg);
    if ((flags & MSG_PEEK) != 0) return result;
    Bytes bytes;
    if ((flags & MSG_TRUNC) == 0) {
      bytes.iov = msg->msg_iov;
      bytes.iovcnt = static_cast<int>(msg->msg_iovlen);
    }
    AfterReceive(state, fd, bytes, IovecBytes(msg->msg_iov, static_cast<int>(msg->msg_iovlen)),
                 result);
    return result;
  }
  if (t_in_hook || (flags & MSG_PEEK) != 0 || msg == nullptr ||
      (state == nullptr && msg->msg_name == nullptr)) {
    return RealRecvmsg(fd, msg, flags);
  }
  const ssize_t result = RealRecvmsg(fd, msg, flags);
  const sockaddr* peer =
      result >= 0 && msg->msg_namelen > 0 ? static_cast<const sockaddr*>(msg->msg_name) : nullptr;
  const socklen_t peer_len = peer != nullptr ? msg->msg_namelen : 0;
  state = StateAfterReceiveFrom(state, fd, result, peer, peer_len);
  if (state == nullptr) return result;
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) {
    bytes.iov = msg->msg_iov;
    bytes.iovcnt = static_cast<int>(msg->msg_iovlen);
  }
  AfterReceive(state, fd, bytes, IovecBytes(msg->msg_iov, static_cast<int>(msg->msg_iovlen)),
               result, peer, peer_len);
  return result;
}

REPTRACE_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  ConnectionState* state = g_table.Find(fd);
  if (t_in_hook || msg == nullptr || (state == nullptr && msg->msg_name == nullptr)) {
    return RealSendmsg(fd, msg, flags);
  }
  const auto* addr = static_cast<const sockaddr*>(msg->msg_name);
  Endpoints endpoints;
  reptrace::SocketRole role = reptrace::SocketRole::kUnknown;
  const bool start =
      state == nullptr && PrepareUdp(fd, addr, msg->msg_namelen, &endpoints, &role);
  if (state == nullptr && !start) return RealSendmsg(fd, msg, flags);
  const Clock clock = state != nullptr ? ClockIfReporting(state) : Now();
  const ssize_t result =
      state != nullptr && InbandActive(state)
          ? InbandSend(state, fd, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags, msg)
          : RealSendmsg(fd, msg, flags);
  if (start) state = StartUdpAfterFirstSend(fd, endpoints, role, clock);
  if (state == nullptr) return result;
  Bytes bytes;
  bytes.iov = msg->msg_iov;
  bytes.iovcnt = static_cast<int>(msg->msg_iovlen);
  AfterSend(state, fd, bytes, result, clock, addr, msg->msg_name != nullptr ? msg->msg_namelen : 0);
  return result;
}

// recvmmsg/sendmmsg: one event per message moved, each with its own bytes and peer.
REPTRACE_EXPORT int recvmmsg(int fd, mmsghdr* msgs, unsigned int vlen, int flags,
                             timespec* timeout) {
  ConnectionState* state = g_table.Find(fd);
  if (!t_in_hook && msgs != nullptr && vlen > 0 && state != nullptr && InbandActive(state)) {
    // A framed stream: one message per call (recvmmsg may always return fewer).
    const ssize_t result = recvmsg(fd, &msgs[0].msg_hdr, flags & ~MSG_WAITFORONE);
    if (result < 0) return -1;
    msgs[0].msg_len = static_cast<unsigned int>(result);
    return 1;
  }
  if (t_in_hook || (flags & MSG_PEEK) != 0 || msgs == nullptr || vlen == 0 ||
      (state == nullptr && msgs[0].msg_hdr.msg_name == nullptr)) {
    return RealRecvmmsg(fd, msgs, vlen, flags, timeout);
  }
  const int result = RealRecvmmsg(fd, msgs, vlen, flags, timeout);
  const int err = errno;
  if (state == nullptr) {
    if (result <= 0 || msgs[0].msg_hdr.msg_namelen == 0) return result;
    state = MaybeStartUdpServer(fd, static_cast<const sockaddr*>(msgs[0].msg_hdr.msg_name),
                                msgs[0].msg_hdr.msg_namelen);
    errno = err;
    if (state == nullptr) return result;
  }
  if (result < 0 && IsRetry(err)) return result;
  {
    InHookScope scope;
    const Clock clock = Now();
    if (result < 0) {
      RecordTransfer(state, fd, reptrace::EventKind::kRecv, Bytes(), -1, err, clock);
    }
    for (int i = 0; i < result; ++i) {
      RecordReceivedMessage(state, fd, &msgs[i].msg_hdr, flags,
                            static_cast<ssize_t>(msgs[i].msg_len), clock);
    }
  }
  errno = err;
  return result;
}

REPTRACE_EXPORT int sendmmsg(int fd, mmsghdr* msgs, unsigned int vlen, int flags) {
  ConnectionState* state = g_table.Find(fd);
  if (!t_in_hook && msgs != nullptr && vlen > 0 && state != nullptr && InbandActive(state)) {
    // A framed stream: one message per call (sendmmsg may always send fewer).
    const ssize_t result = sendmsg(fd, &msgs[0].msg_hdr, flags);
    if (result < 0) return -1;
    msgs[0].msg_len = static_cast<unsigned int>(result);
    return 1;
  }
  if (t_in_hook || msgs == nullptr || vlen == 0 ||
      (state == nullptr && msgs[0].msg_hdr.msg_name == nullptr)) {
    return RealSendmmsg(fd, msgs, vlen, flags);
  }
  Endpoints endpoints;
  reptrace::SocketRole role = reptrace::SocketRole::kUnknown;
  const bool start = state == nullptr &&
                     PrepareUdp(fd, static_cast<const sockaddr*>(msgs[0].msg_hdr.msg_name),
                                msgs[0].msg_hdr.msg_namelen, &endpoints, &role);
  if (state == nullptr && !start) return RealSendmmsg(fd, msgs, vlen, flags);
  const Clock clock = state != nullptr ? ClockIfReporting(state) : Now();
  const int result = RealSendmmsg(fd, msgs, vlen, flags);
  const int err = errno;
  if (start) state = StartUdpAfterFirstSend(fd, endpoints, role, clock);
  if (state == nullptr) return result;
  if (result < 0 && IsRetry(err)) return result;
  {
    InHookScope scope;
    if (result < 0) RecordTransfer(state, fd, reptrace::EventKind::kSend, Bytes(), -1, err, clock);
    for (int i = 0; i < result; ++i) {
      const msghdr& msg = msgs[i].msg_hdr;
      if (msgs[i].msg_len == 0) continue;
      Bytes bytes;
      bytes.iov = msg.msg_iov;
      bytes.iovcnt = static_cast<int>(msg.msg_iovlen);
      RecordTransfer(state, fd, reptrace::EventKind::kSend, bytes,
                     static_cast<ssize_t>(msgs[i].msg_len), 0, clock, false,
                     static_cast<const sockaddr*>(msg.msg_name),
                     msg.msg_name != nullptr ? msg.msg_namelen : 0);
    }
  }
  errno = err;
  return result;
}

// shutdown() ends a direction, not the connection: the events that follow (end of stream,
// EPIPE) and the final close() say what happened. Interposed so the call is seen, and
// passed through untouched.
REPTRACE_EXPORT int shutdown(int fd, int how) { return RealShutdown(fd, how); }

REPTRACE_EXPORT int dup(int fd) {
  const int result = RealDup(fd);
  if (result >= 0 && !t_in_hook && g_table.Find(fd) != nullptr) AfterDup(fd, result);
  return result;
}

REPTRACE_EXPORT int dup2(int fd, int fd2) {
  return Replace(fd, fd2, [&] { return RealDup2(fd, fd2); });
}

REPTRACE_EXPORT int dup3(int fd, int fd2, int flags) {
  return Replace(fd, fd2, [&] { return RealDup3(fd, fd2, flags); });
}

REPTRACE_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return Fcntl(fd, cmd, arg, RealFcntl);
}

REPTRACE_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return Fcntl(fd, cmd, arg, RealFcntl64);
}

REPTRACE_EXPORT int close_range(unsigned int first, unsigned int last, int flags) noexcept {
  const bool closes = (flags & CLOSE_RANGE_CLOEXEC) == 0 &&
                      (flags & ~(CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE)) == 0 &&
                      first <= last && !t_in_hook;
  int taken[2];
  const int n = closes ? TakeAgentFdRange(first, last, taken) : 0;
  if (closes) CloseTracedRange(first, last);
  const int result = RealCloseRange(first, last, flags);
  if (result < 0 && n > 0) {
    const int err = errno;
    for (int i = 0; i < n; ++i) RealClose(taken[i]);  // still ours, and no longer known
    errno = err;
  }
  return result;
}

REPTRACE_EXPORT void closefrom(int lowfd) noexcept {
  if (!t_in_hook && lowfd >= 0) {
    int taken[2];
    TakeAgentFdRange(static_cast<unsigned int>(lowfd), ~0u, taken);
    CloseTracedRange(static_cast<unsigned int>(lowfd), ~0u);
  }
  if (g_real.closefrom != nullptr) {
    g_real.closefrom(lowfd);
  } else if (lowfd >= 0) {
    RealCloseRange(static_cast<unsigned int>(lowfd), ~0u, 0);
  }
}

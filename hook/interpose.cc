// The interposed libc entry points of libreptrace.so, and its constructor/destructor.
//
// Every wrapper has glibc's exact signature. On an fd the ConnectionTable does not trace
// (or while the hook itself runs on this thread) it costs one table look-up and then calls
// the real function. On a traced TCP connection it records one EventRecord around the real
// call. errno and the return value the program sees are always the real call's.
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "common/event_record.h"
#include "hook/agent_link.h"
#include "hook/connection_table.h"
#include "hook/interposed.h"
#include "hook/process_state.h"
#include "hook/real_calls.h"

#define REPTRACE_EXPORT extern "C" __attribute__((visibility("default")))

namespace reptrace::hook {

__thread bool t_in_hook __attribute__((tls_model("initial-exec"))) = false;
__thread uint32_t t_tid __attribute__((tls_model("initial-exec"))) = 0;
std::atomic<uint32_t> g_pid{0};

namespace {

constexpr int64_t kExitFlushBudgetNs = 200 * 1000 * 1000;

ConnectionTable g_table;
std::atomic<uint64_t> g_next_conn_id{1};

struct Clock {
  uint64_t wall_ns;
  uint64_t mono_ns;
};

Clock Now() {
  timespec wall, mono;
  clock_gettime(CLOCK_REALTIME, &wall);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  return {uint64_t(wall.tv_sec) * 1000000000u + uint64_t(wall.tv_nsec),
          uint64_t(mono.tv_sec) * 1000000000u + uint64_t(mono.tv_nsec)};
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

void FillHeader(EventRecord* r, EventKind kind, int fd, uint64_t conn_id, uint8_t role,
                const Endpoints& endpoints, const Clock& clock) {
  r->header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), sizeof(EventRecord)};
  r->kind = static_cast<uint8_t>(kind);
  r->role = role;
  r->pid = g_pid.load(std::memory_order_relaxed);
  r->tid = CurrentTid();
  r->fd = fd;
  r->conn_id = conn_id;
  r->wall_ns = clock.wall_ns;
  r->mono_ns = clock.mono_ns;
  r->local_port = endpoints.local_port;
  r->peer_port = endpoints.peer_port;
  r->family = endpoints.family;
  std::memcpy(r->local_addr, endpoints.local_addr, 16);
  std::memcpy(r->peer_addr, endpoints.peer_addr, 16);
}

// One send or receive call on a traced connection, already known to be worth recording.
void RecordTransfer(ConnectionState* state, int fd, EventKind kind, const Bytes& bytes,
                    ssize_t result, int err, const Clock& clock) {
  const uint64_t conn_id = state->conn_id.load(std::memory_order_acquire);
  if (conn_id == 0) return;  // closed by another thread meanwhile
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, kind, fd, conn_id, state->role, state->endpoints, clock);
  std::atomic<uint64_t>& moved =
      kind == EventKind::kSend ? state->bytes_sent : state->bytes_received;
  if (result > 0) {
    r.offset = moved.fetch_add(static_cast<uint64_t>(result), std::memory_order_relaxed);
    const uint8_t previous =
        state->last_direction.exchange(static_cast<uint8_t>(kind), std::memory_order_relaxed);
    if (previous != static_cast<uint8_t>(kind)) {
      r.flags |= kFlagMessageStart;
      size_t n = static_cast<size_t>(result);
      if (n > kCaptureBytes) n = kCaptureBytes;
      if (bytes.buf != nullptr || bytes.iov != nullptr) {
        r.capture_len = static_cast<uint8_t>(Gather(bytes, n, r.capture));
        r.hash = Fnv1a64(r.capture, r.capture_len);
      }
    }
  } else {
    r.offset = moved.load(std::memory_order_relaxed);
  }
  r.result = result;
  r.error = result < 0 ? err : 0;
  Publish(r);
}

// After a receive-side call on a traced fd: time is taken at the return.
void AfterReceive(ConnectionState* state, int fd, const Bytes& bytes, size_t requested,
                  ssize_t result) {
  const int err = errno;
  if (result < 0 ? IsRetry(err) : (result == 0 && requested == 0)) return;  // nothing moved
  {
    InHookScope scope;
    RecordTransfer(state, fd, EventKind::kRecv, bytes, result, err, Now());
  }
  errno = err;
}

// After a send-side call on a traced fd: `clock` was taken at the start.
void AfterSend(ConnectionState* state, int fd, const Bytes& bytes, ssize_t result,
               const Clock& clock) {
  const int err = errno;
  if (result < 0 ? IsRetry(err) : result == 0) return;
  {
    InHookScope scope;
    RecordTransfer(state, fd, EventKind::kSend, bytes, result, err, clock);
  }
  errno = err;
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

// Is `fd` a TCP socket over IPv4/IPv6? Fills the family and the local address.
bool InspectTcpSocket(int fd, Endpoints* endpoints) {
  int protocol = 0;
  socklen_t optlen = sizeof(protocol);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen) != 0 ||
      protocol != IPPROTO_TCP) {
    return false;
  }
  sockaddr_storage local = {};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return false;
  endpoints->family = local.ss_family == AF_INET ? 4 : 6;
  ToEndpoint(reinterpret_cast<sockaddr*>(&local), len, endpoints->local_addr,
             &endpoints->local_port);
  return true;
}

void EmitClose(int fd, const ConnectionState& was, int64_t result, int err) {
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
  if (g_table.Stop(fd, &was) != 0) EmitClose(fd, was, 0, 0);
}

void StartConnection(int fd, EventKind kind, SocketRole role, const Endpoints& endpoints,
                     int64_t result, int err, const Clock& clock, bool keep) {
  const uint64_t conn_id = g_next_conn_id.fetch_add(1, std::memory_order_relaxed);
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  FillHeader(&r, kind, fd, conn_id, static_cast<uint8_t>(role), endpoints, clock);
  r.result = result;
  r.error = result < 0 ? err : 0;
  if (keep) g_table.Start(fd, conn_id, static_cast<uint8_t>(role), endpoints);
  Publish(r);
}

// Set-up has finished: connections seen before (from another library's constructor) are
// left untraced rather than traced with a half-configured agent link.
bool Ready() { return g_pid.load(std::memory_order_acquire) != 0; }

bool SameEndpoints(const Endpoints& a, const Endpoints& b) {
  return a.local_port == b.local_port && a.peer_port == b.peer_port &&
         std::memcmp(a.local_addr, b.local_addr, 16) == 0 &&
         std::memcmp(a.peer_addr, b.peer_addr, 16) == 0;
}

void AfterConnect(int fd, const sockaddr* addr, socklen_t addrlen, int result, int err,
                  const Clock& clock) {
  InHookScope scope;
  Endpoints endpoints;
  if (!Ready() || !InspectTcpSocket(fd, &endpoints) ||
      !ToEndpoint(addr, addrlen, endpoints.peer_addr, &endpoints.peer_port)) {
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
      // The pending connection failed: report it on the same connection.
      EventRecord r;
      std::memset(&r, 0, sizeof(r));
      FillHeader(&r, EventKind::kConnect, fd, state->conn_id.load(std::memory_order_acquire),
                 state->role, state->endpoints, clock);
      r.result = result;
      r.error = err;
      Publish(r);
    }
    return;
  }
  if (result < 0 && (err == EALREADY || err == EISCONN)) return;  // not a connect we saw start
  ForgetStale(fd);
  // Established, or on its way (EINPROGRESS, or EINTR: the kernel carries on): traced.
  // Any other failure is reported once and the fd stays untraced.
  const bool started = result == 0 || err == EINPROGRESS || err == EINTR;
  StartConnection(fd, EventKind::kConnect, SocketRole::kClient, endpoints, result,
                  result < 0 ? err : 0, clock, started);
}

void AfterAccept(int fd) {
  const int saved = errno;
  {
    InHookScope scope;
    const Clock clock = Now();
    Endpoints endpoints;
    sockaddr_storage peer = {};
    socklen_t len = sizeof(peer);
    if (Ready() && InspectTcpSocket(fd, &endpoints) &&
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
        ToEndpoint(reinterpret_cast<sockaddr*>(&peer), len, endpoints.peer_addr,
                   &endpoints.peer_port)) {
      ForgetStale(fd);
      StartConnection(fd, EventKind::kAccept, SocketRole::kServer, endpoints, fd, 0, clock,
                      true);
    } else {
      ForgetStale(fd);
    }
  }
  errno = saved;
}

void ChildAfterFork() {
  const uint64_t now = Now().wall_ns;
  g_pid.store(static_cast<uint32_t>(syscall(SYS_getpid)), std::memory_order_relaxed);
  t_tid = 0;
  g_table.Reset();  // inherited connections are not traced in the child
  ResetAgentLinkAfterFork(now);
}

__attribute__((constructor(101))) void ReptraceInit() {
  const int saved = errno;
  InHookScope scope;
  ResolveRealCalls();
  ConfigureAgentLink(Now().wall_ns);
  pthread_atfork(nullptr, nullptr, ChildAfterFork);
  // Last: a non-zero pid is what lets connect/accept start tracing (see Ready()).
  g_pid.store(static_cast<uint32_t>(syscall(SYS_getpid)), std::memory_order_release);
  errno = saved;
}

__attribute__((destructor(101))) void ReptraceFini() {
  const int saved = errno;
  InHookScope scope;
  FlushAgentLink(kExitFlushBudgetNs);
  errno = saved;
}

// The traced-receive wrapper shared by read/recv/recvfrom and their _chk forms.
template <typename Call>
ssize_t Receive(int fd, void* buf, size_t n, int flags, Call call) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook || (flags & MSG_PEEK) != 0) return call();
  const ssize_t result = call();
  Bytes bytes;
  if ((flags & MSG_TRUNC) == 0) bytes.buf = buf;  // MSG_TRUNC: bytes discarded, not in buf
  AfterReceive(state, fd, bytes, n, result);
  return result;
}

template <typename Call>
ssize_t Send(int fd, const void* buf, Call call) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return call();
  const Clock clock = Now();
  const ssize_t result = call();
  Bytes bytes;
  bytes.buf = buf;
  AfterSend(state, fd, bytes, result, clock);
  return result;
}

}  // namespace
}  // namespace reptrace::hook

using namespace reptrace::hook;  // NOLINT: the C entry points below are outside any namespace

REPTRACE_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
  if (t_in_hook || addr == nullptr || len < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) {
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
  NoteProgramClose(fd);
  if (g_table.Find(fd) == nullptr || t_in_hook) return RealClose(fd);
  ConnectionState was;
  {
    InHookScope scope;
    // Forget the fd before the real close: once closed, its number may be reused at once.
    if (g_table.Stop(fd, &was) == 0) return RealClose(fd);
  }
  const int result = RealClose(fd);
  const int err = errno;
  {
    InHookScope scope;
    EmitClose(fd, was, result, err);
  }
  errno = err;
  return result;
}

REPTRACE_EXPORT ssize_t read(int fd, void* buf, size_t n) {
  return Receive(fd, buf, n, 0, [&] { return RealRead(fd, buf, n); });
}

REPTRACE_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  return Receive(fd, buf, n, 0, [&]() -> ssize_t {
    if (g_real.read_chk != nullptr) return g_real.read_chk(fd, buf, n, buflen);
    if (n > buflen) abort();  // what __chk_fail would do
    return RealRead(fd, buf, n);
  });
}

REPTRACE_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  return Receive(fd, buf, n, flags, [&] { return RealRecv(fd, buf, n, flags); });
}

REPTRACE_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  return Receive(fd, buf, n, flags, [&]() -> ssize_t {
    if (g_real.recv_chk != nullptr) return g_real.recv_chk(fd, buf, n, buflen, flags);
    if (n > buflen) abort();
    return RealRecv(fd, buf, n, flags);
  });
}

REPTRACE_EXPORT ssize_t recvfrom(int fd, void* __restrict buf, size_t n, int flags,
                                 sockaddr* __restrict addr, socklen_t* __restrict len) {
  return Receive(fd, buf, n, flags, [&] { return RealRecvfrom(fd, buf, n, flags, addr, len); });
}

REPTRACE_EXPORT ssize_t __recvfrom_chk(int fd, void* __restrict buf, size_t n, size_t buflen,
                                       int flags, sockaddr* __restrict addr,
                                       socklen_t* __restrict len) {
  return Receive(fd, buf, n, flags, [&]() -> ssize_t {
    if (g_real.recvfrom_chk != nullptr) {
      return g_real.recvfrom_chk(fd, buf, n, buflen, flags, addr, len);
    }
    if (n > buflen) abort();
    return RealRecvfrom(fd, buf, n, flags, addr, len);
  });
}

REPTRACE_EXPORT ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return RealReadv(fd, iov, iovcnt);
  const ssize_t result = RealReadv(fd, iov, iovcnt);
  Bytes bytes;
  bytes.iov = iov;
  bytes.iovcnt = iovcnt;
  AfterReceive(state, fd, bytes, IovecBytes(iov, iovcnt), result);
  return result;
}

REPTRACE_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  return Send(fd, buf, [&] { return RealWrite(fd, buf, n); });
}

REPTRACE_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  return Send(fd, buf, [&] { return RealSend(fd, buf, n, flags); });
}

REPTRACE_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags,
                               const sockaddr* addr, socklen_t len) {
  return Send(fd, buf, [&] { return RealSendto(fd, buf, n, flags, addr, len); });
}

REPTRACE_EXPORT ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  ConnectionState* state = g_table.Find(fd);
  if (state == nullptr || t_in_hook) return RealWritev(fd, iov, iovcnt);
  const Clock clock = Now();
  const ssize_t result = RealWritev(fd, iov, iovcnt);
  Bytes bytes;
  bytes.iov = iov;
  bytes.iovcnt = iovcnt;
  AfterSend(state, fd, bytes, result, clock);
  return result;
}

REPTRACE_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  // Nothing to capture (the bytes come from a file), but the offsets count.
  return Send(out_fd, nullptr, [&] { return RealSendfile(out_fd, in_fd, offset, count); });
}

REPTRACE_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t* offset,
                                   size_t count) noexcept {
  return Send(out_fd, nullptr, [&] { return RealSendfile64(out_fd, in_fd, offset, count); });
}

#include "hook/agent_link.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "hook/process_state.h"
#include "hook/real_calls.h"

namespace reptrace::hook {
namespace agent_link_internal {

EventRing g_ring;
std::atomic<bool> g_shipper_started{false};
// Recorded events are the ring's pushes (EventRing::pushed): no second atomic per call.
std::atomic<uint64_t> g_dropped{0};

}  // namespace agent_link_internal

namespace {

using agent_link_internal::g_dropped;
using agent_link_internal::g_ring;
using agent_link_internal::g_shipper_started;

constexpr char kDefaultSocket[] = "/run/reptrace/agent.sock";
constexpr int64_t kMillis = 1000 * 1000;
constexpr int64_t kIdleSleepNs = 5 * kMillis;
constexpr int64_t kStatsPeriodNs = 1000 * kMillis;
constexpr int64_t kFirstBackoffNs = 100 * kMillis;
constexpr int64_t kMaxBackoffNs = 2000 * kMillis;
constexpr int kSendTimeoutMs = 100;
// Records per send(): at most 64 * 248 bytes, usually 64 * 48 to 64 * 184.
constexpr size_t kBatch = 64;


// Set once by the constructor, read-only afterwards.
char g_socket_path[sizeof(sockaddr_un::sun_path)] = {};
bool g_socket_path_ok = false;
char g_service[kNameBytes] = {};  // empty: use the program name
uint64_t g_start_wall_ns = 0;
uint64_t g_start_mono_ns = 0;

std::atomic<bool> g_shipper_failed{false};  // pthread_create refused: nobody to wait for
std::atomic<int> g_agent_fd{-1};
// The fd the shipper is inside a system call on (send, connect, close), kCreating while it
// creates its socket, else -1. A program that takes an fd number (close, dup2, close_range)
// waits for the shipper to leave that number first, so hook bytes never reach a file or
// socket of the program that reused the number. The shipper's calls never block (the socket
// is non-blocking), so the wait is a few microseconds at most.
constexpr int kCreating = -2;
std::atomic<int> g_in_flight{-1};
// FlushAgentLink() bumps requested; the shipper answers by storing it into done.
std::atomic<uint32_t> g_flush_requested{0};
std::atomic<uint32_t> g_flush_done{0};

// An agent connection was lost (by whichever thread lost it: the shipper on a failed send,
// the program closing or replacing our fd) or the process forked. Moved on at the moment
// of the loss, before any record the program makes after it, so that those re-announce.
// Async-signal-safe (a lock-free atomic).
void NextLinkGeneration() {
  if (g_link_generation.fetch_add(1, std::memory_order_relaxed) + 1 == 0) {
    g_link_generation.fetch_add(1, std::memory_order_relaxed);  // 0 means never announced
  }
}

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void SleepNs(int64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  nanosleep(&ts, nullptr);
}

void CopyName(char (&out)[kNameBytes], const char* in) {
  size_t n = 0;
  while (in != nullptr && in[n] != '\0' && in[n] != '\n' && n + 1 < kNameBytes) {
    out[n] = in[n];
    ++n;
  }
  out[n] = '\0';
}

// The program's name: /proc/self/comm, else program_invocation_short_name.
void ProgramName(char (&out)[kNameBytes]) {
  out[0] = '\0';
  const int fd = static_cast<int>(
      syscall(SYS_openat, AT_FDCWD, "/proc/self/comm", O_RDONLY | O_CLOEXEC));
  if (fd >= 0) {
    char buf[kNameBytes] = {};
    const ssize_t n = syscall(SYS_read, fd, buf, sizeof(buf) - 1);
    syscall(SYS_close, fd);
    if (n > 0) CopyName(out, buf);
  }
  if (out[0] == '\0') CopyName(out, program_invocation_short_name);
}

// Claims `fd` for one system call: false if the program has taken it meanwhile. Sequentially
// consistent against TakeAgentFd(): one of the two sees the other.
bool Enter(int fd) {
  g_in_flight.store(fd, std::memory_order_seq_cst);
  if (g_agent_fd.load(std::memory_order_seq_cst) == fd) return true;
  g_in_flight.store(-1, std::memory_order_seq_cst);
  return false;
}

void Leave() { g_in_flight.store(-1, std::memory_order_seq_cst); }

// Drops the agent connection if it is still ours (the program may have closed it).
// `carried_records`: something may have been sent on it (not a connect that failed).
void Disconnect(int fd, bool carried_records = true) {
  g_in_flight.store(fd, std::memory_order_seq_cst);
  int expected = fd;
  if (g_agent_fd.compare_exchange_strong(expected, -1, std::memory_order_seq_cst)) {
    if (carried_records) NextLinkGeneration();
    RealClose(fd);
  }
  Leave();
}

// Writes all `n` bytes or fails; *sent says how many went out. Gives up after the send
// timeout: a stuck agent costs dropped records, never a blocked program.
bool SendAll(int fd, const void* data, size_t n, size_t* sent) {
  const auto* p = static_cast<const char*>(data);
  *sent = 0;
  const int64_t deadline = MonoNs() + int64_t{kSendTimeoutMs} * kMillis;
  while (*sent < n) {
    if (!Enter(fd)) return false;  // taken by the program
    const ssize_t r = RealSend(fd, p + *sent, n - *sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    const int err = errno;
    Leave();
    if (r < 0 && err == EINTR) continue;
    if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
      const int64_t left = deadline - MonoNs();
      if (left <= 0) return false;
      // Polling a number the program may have reused meanwhile only reads readiness.
      pollfd pfd = {fd, POLLOUT, 0};
      poll(&pfd, 1, static_cast<int>(left / kMillis) + 1);
      continue;
    }
    if (r <= 0) return false;
    *sent += static_cast<size_t>(r);
  }
  return true;
}

// Where the agent socket lives: high in the fd space, out of the way of programs that
// expect the lowest free numbers (a daemon reopening 0, 1, 2 after closing everything).
int HighFdFloor() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  rlim_t top = limit.rlim_cur;
  if (top == RLIM_INFINITY || top > 1024) top = 1024;
  return top >= 64 ? static_cast<int>(top) - 16 : -1;
}

bool SendRecord(int fd, const void* record, size_t n) {
  size_t sent;
  if (SendAll(fd, record, n, &sent)) return true;
  Disconnect(fd);
  return false;
}

bool SendStats(int fd) {
  StatsRecord stats = {};
  stats.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kStats), sizeof(StatsRecord)};
  stats.pid = g_pid.load(std::memory_order_relaxed);
  stats.events_recorded = g_ring.pushed();
  stats.events_dropped = g_dropped.load(std::memory_order_relaxed);
  return SendRecord(fd, &stats, sizeof(stats));
}

// Connects and says hello; the new fd, or -1.
int ConnectAgent() {
  if (!g_socket_path_ok) return -1;
  // Created non-blocking and close-on-exec, then moved high; while its number is not yet
  // published a program close()/dup2() waits (kCreating) rather than race with us.
  g_in_flight.store(kCreating, std::memory_order_seq_cst);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    Leave();
    return -1;
  }
  const int floor = HighFdFloor();
  if (floor > fd) {
    const int high = static_cast<int>(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor));
    if (high >= 0) {
      RealClose(fd);
      fd = high;
    }
  }
  g_agent_fd.store(fd, std::memory_order_seq_cst);
  g_in_flight.store(fd, std::memory_order_seq_cst);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, g_socket_path, sizeof(addr.sun_path));
  // A Unix stream connect completes at once (or fails with EAGAIN when the agent's
  // backlog is full: we retry later).
  const int connected = RealConnect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  Leave();
  if (connected != 0) {
    Disconnect(fd, /*carried_records=*/false);
    return -1;
  }

  HelloRecord hello = {};
  hello.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kHello), sizeof(HelloRecord)};
  hello.version = kWireVersion;
  hello.pid = g_pid.load(std::memory_order_relaxed);
  hello.ppid = static_cast<uint32_t>(getppid());
  hello.uid = static_cast<uint32_t>(getuid());
  hello.start_wall_ns = g_start_wall_ns;
  hello.start_mono_ns = g_start_mono_ns;
  const uint64_t cause = g_cause.load(std::memory_order_relaxed);
  hello.cause_pid = static_cast<uint32_t>(cause >> 32);
  hello.cause_tid = static_cast<uint32_t>(cause);
  ProgramName(hello.process);
  if (g_service[0] != '\0') {
    std::memcpy(hello.service, g_service, sizeof(hello.service));
  } else {
    std::memcpy(hello.service, hello.process, sizeof(hello.service));
  }
  if (!SendRecord(fd, &hello, sizeof(hello))) return -1;
  return fd;
}

// Dequeues up to kBatch records and delivers them. Returns how many were dequeued.
// With no agent connection nothing is dequeued: the ring keeps what it holds until the
// agent is back (a daemon that closed our fd, an agent restarting), and only what does
// not fit in it is dropped, by Publish, and counted.
size_t ShipBatch(int* fd) {
  if (*fd < 0) return 0;
  // Each record is popped straight to the end of the previous one: one send() of only
  // the bytes the records use.
  alignas(8) static unsigned char batch[kBatch * EventRing::kCellBytes];  // shipper only
  size_t ends[kBatch];
  size_t n = 0;
  size_t used = 0;
  while (n < kBatch) {
    const size_t size = g_ring.TryPop(batch + used);
    if (size == 0) break;
    used += size;
    ends[n++] = used;
  }
  if (n == 0) return 0;
  size_t sent;
  if (SendAll(*fd, batch, used, &sent)) return n;
  Disconnect(*fd);
  *fd = -1;
  size_t lost = 0;
  for (size_t i = 0; i < n; ++i) lost += ends[i] > sent ? 1 : 0;
  g_dropped.fetch_add(lost, std::memory_order_relaxed);
  return n;
}

void* ShipperMain(void*) {
  t_in_hook = true;  // for the life of this thread: nothing it does is traced
  pthread_setname_np(pthread_self(), "reptrace");
  int64_t backoff = kFirstBackoffNs;
  int64_t next_connect = 0;
  bool had_fd = false;
  int64_t next_stats = MonoNs() + kStatsPeriodNs;
  for (;;) {
    const uint32_t flush = g_flush_requested.load(std::memory_order_acquire);
    const bool flushing = flush != g_flush_done.load(std::memory_order_relaxed);
    int fd = g_agent_fd.load(std::memory_order_acquire);
    int64_t now = MonoNs();
    if (fd < 0 && had_fd) {
      // Lost (the program closed or replaced our fd, or the agent went away): reconnect
      // later, after a program closing all its fds has finished doing so. (Whoever lost
      // it moved the link generation on: connections re-announce themselves.)
      had_fd = false;
      next_connect = now + kFirstBackoffNs;
    }
    if (fd < 0 && (flushing || now >= next_connect)) {
      fd = ConnectAgent();
      if (fd >= 0) {
        had_fd = true;
        backoff = kFirstBackoffNs;
        if (!SendStats(fd)) fd = -1;  // tells the agent what was dropped while away
        next_stats = now + kStatsPeriodNs;
      } else {
        next_connect = now + backoff;
        backoff = backoff * 2 > kMaxBackoffNs ? kMaxBackoffNs : backoff * 2;
      }
    }
    size_t shipped = ShipBatch(&fd);
    if (flushing) {
      while (shipped > 0) shipped = ShipBatch(&fd);
      if (fd >= 0) SendStats(fd);
      next_stats = MonoNs() + kStatsPeriodNs;
      g_flush_done.store(flush, std::memory_order_release);
      continue;
    }
    now = MonoNs();
    if (fd >= 0 && now >= next_stats) {
      SendStats(fd);
      next_stats = now + kStatsPeriodNs;
    }
    if (shipped == 0) SleepNs(kIdleSleepNs);
  }
  return nullptr;
}

}  // namespace

namespace agent_link_internal {

void StartShipper() {
  bool expected = false;
  if (!g_shipper_started.compare_exchange_strong(expected, true)) return;
  // Every signal blocked from birth: the program's handlers never run on our thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t thread;
  if (pthread_create(&thread, &attr, ShipperMain, nullptr) != 0) {
    g_shipper_failed.store(true, std::memory_order_relaxed);  // the ring fills; drops count
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace agent_link_internal

std::atomic<uint32_t> g_link_generation{1};

void ConfigureAgentLink(uint64_t start_wall_ns, uint64_t start_mono_ns) {
  g_start_wall_ns = start_wall_ns;
  g_start_mono_ns = start_mono_ns;
  const char* path = getenv("REPTRACE_SOCKET");
  if (path == nullptr || path[0] == '\0') path = kDefaultSocket;
  const size_t len = strlen(path);
  g_socket_path_ok = len < sizeof(g_socket_path);
  if (g_socket_path_ok) std::memcpy(g_socket_path, path, len + 1);
  const char* service = getenv("REPTRACE_SERVICE");
  if (service != nullptr) CopyName(g_service, service);
}

bool Publish(const void* record, size_t size) {
  const bool queued = g_ring.Init() && g_ring.TryPush(record, size);
  if (!queued) g_dropped.fetch_add(1, std::memory_order_relaxed);
  if (!g_shipper_started.load(std::memory_order_acquire)) agent_link_internal::StartShipper();
  return queued;
}


void FlushAgentLink(int64_t budget_ns) {
  if (!g_shipper_started.load(std::memory_order_acquire) ||
      g_shipper_failed.load(std::memory_order_relaxed)) {
    return;
  }
  const int64_t deadline = MonoNs() + budget_ns;
  const uint32_t want = g_flush_requested.fetch_add(1, std::memory_order_acq_rel) + 1;
  while (g_flush_done.load(std::memory_order_acquire) != want && MonoNs() < deadline) {
    SleepNs(kMillis);
  }
}

void ResetAgentLinkAfterFork(uint64_t start_wall_ns, uint64_t start_mono_ns) {
  g_start_wall_ns = start_wall_ns;
  g_start_mono_ns = start_mono_ns;
  NextLinkGeneration();
  g_ring.Reset();
  g_dropped.store(0, std::memory_order_relaxed);
  // The parent's shipper may have been inside a call at the fork; no shipper runs here, so
  // a close() or dup2() in the child must not wait for it to leave.
  g_in_flight.store(-1, std::memory_order_seq_cst);
  const int fd = g_agent_fd.exchange(-1);
  if (fd >= 0) RealClose(fd);  // the parent keeps its own copy
  g_flush_requested.store(0, std::memory_order_relaxed);
  g_flush_done.store(0, std::memory_order_relaxed);
  g_shipper_failed.store(false, std::memory_order_relaxed);
  g_shipper_started.store(false, std::memory_order_release);
}

bool TakeAgentFd(int fd) {
  bool ours = false;
  if (fd >= 0 && g_agent_fd.load(std::memory_order_seq_cst) == fd) {
    int expected = fd;
    ours = g_agent_fd.compare_exchange_strong(expected, -1, std::memory_order_seq_cst);
    if (ours) NextLinkGeneration();
  }
  for (;;) {
    const int busy = g_in_flight.load(std::memory_order_seq_cst);
    if (busy != kCreating && (fd < 0 || busy != fd)) break;
    sched_yield();
  }
  return ours;
}

int TakeAgentFdRange(unsigned int first, unsigned int last) {
  int taken = -1;
  const int fd = g_agent_fd.load(std::memory_order_seq_cst);
  if (fd >= 0 && static_cast<unsigned int>(fd) >= first &&
      static_cast<unsigned int>(fd) <= last && TakeAgentFd(fd)) {
    taken = fd;
  }
  while (g_in_flight.load(std::memory_order_seq_cst) == kCreating) sched_yield();
  const int busy = g_in_flight.load(std::memory_order_seq_cst);
  if (busy >= 0 && static_cast<unsigned int>(busy) >= first &&
      static_cast<unsigned int>(busy) <= last) {
    TakeAgentFd(busy);
  }
  return taken;
}

int AgentFd() { return g_agent_fd.load(std::memory_order_relaxed); }

bool InShipperProcess() {
  return g_shipper_started.load(std::memory_order_acquire) &&
         !g_shipper_failed.load(std::memory_order_relaxed);
}

uint64_t EventsRecorded() { return g_ring.pushed(); }
uint64_t EventsDropped() { return g_dropped.load(std::memory_order_relaxed); }

}  // namespace reptrace::hook

#include "hook/agent_link.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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
namespace {

constexpr char kDefaultSocket[] = "/run/reptrace/agent.sock";
constexpr int64_t kMillis = 1000 * 1000;
constexpr int64_t kIdleSleepNs = 5 * kMillis;
constexpr int64_t kStatsPeriodNs = 1000 * kMillis;
constexpr int64_t kFirstBackoffNs = 100 * kMillis;
constexpr int64_t kMaxBackoffNs = 2000 * kMillis;
constexpr int kSendTimeoutMs = 100;
constexpr size_t kBatch = 32;  // records per send(): 32 * 248 bytes

EventRing g_ring;
std::atomic<uint64_t> g_recorded{0};
std::atomic<uint64_t> g_dropped{0};

// Set once by the constructor, read-only afterwards.
char g_socket_path[sizeof(sockaddr_un::sun_path)] = {};
bool g_socket_path_ok = false;
char g_service[kNameBytes] = {};  // empty: use the program name
uint64_t g_start_wall_ns = 0;

std::atomic<bool> g_shipper_started{false};
std::atomic<bool> g_shipper_failed{false};  // pthread_create refused: nobody to wait for
std::atomic<int> g_agent_fd{-1};
// FlushAgentLink() bumps requested; the shipper answers by storing it into done.
std::atomic<uint32_t> g_flush_requested{0};
std::atomic<uint32_t> g_flush_done{0};

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

// Drops the agent connection if it is still ours (the program may have closed it).
void Disconnect(int fd) {
  int expected = fd;
  if (g_agent_fd.compare_exchange_strong(expected, -1)) RealClose(fd);
}

// Writes all `n` bytes or fails; *sent says how many went out.
bool SendAll(int fd, const void* data, size_t n, size_t* sent) {
  const auto* p = static_cast<const char*>(data);
  *sent = 0;
  while (*sent < n) {
    if (g_agent_fd.load(std::memory_order_relaxed) != fd) return false;  // closed by program
    const ssize_t r = RealSend(fd, p + *sent, n - *sent, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    *sent += static_cast<size_t>(r);
  }
  return true;
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
  stats.events_recorded = g_recorded.load(std::memory_order_relaxed);
  stats.events_dropped = g_dropped.load(std::memory_order_relaxed);
  return SendRecord(fd, &stats, sizeof(stats));
}

// Connects and says hello; the new fd, or -1.
int ConnectAgent() {
  if (!g_socket_path_ok) return -1;
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval timeout{0, kSendTimeoutMs * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, g_socket_path, sizeof(addr.sun_path));
  if (RealConnect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    RealClose(fd);
    return -1;
  }
  g_agent_fd.store(fd, std::memory_order_release);

  HelloRecord hello = {};
  hello.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kHello), sizeof(HelloRecord)};
  hello.version = kWireVersion;
  hello.pid = g_pid.load(std::memory_order_relaxed);
  hello.ppid = static_cast<uint32_t>(getppid());
  hello.uid = static_cast<uint32_t>(getuid());
  hello.start_wall_ns = g_start_wall_ns;
  ProgramName(hello.process);
  if (g_service[0] != '\0') {
    std::memcpy(hello.service, g_service, sizeof(hello.service));
  } else {
    std::memcpy(hello.service, hello.process, sizeof(hello.service));
  }
  if (!SendRecord(fd, &hello, sizeof(hello))) return -1;
  return fd;
}

// Dequeues up to kBatch records and delivers them (or drops them if there is no agent).
// Returns how many were dequeued.
size_t ShipBatch(int* fd) {
  EventRecord batch[kBatch];
  size_t n = 0;
  while (n < kBatch && g_ring.TryPop(&batch[n])) ++n;
  if (n == 0) return 0;
  if (*fd >= 0) {
    size_t sent;
    if (SendAll(*fd, batch, n * sizeof(EventRecord), &sent)) return n;
    Disconnect(*fd);
    *fd = -1;
    g_dropped.fetch_add(n - sent / sizeof(EventRecord), std::memory_order_relaxed);
    return n;
  }
  g_dropped.fetch_add(n, std::memory_order_relaxed);
  return n;
}

void* ShipperMain(void*) {
  t_in_hook = true;  // for the life of this thread: nothing it does is traced
  pthread_setname_np(pthread_self(), "reptrace");
  int64_t backoff = kFirstBackoffNs;
  int64_t next_connect = 0;
  int64_t next_stats = MonoNs() + kStatsPeriodNs;
  for (;;) {
    const uint32_t flush = g_flush_requested.load(std::memory_order_acquire);
    const bool flushing = flush != g_flush_done.load(std::memory_order_relaxed);
    int fd = g_agent_fd.load(std::memory_order_acquire);
    int64_t now = MonoNs();
    if (fd < 0 && (flushing || now >= next_connect)) {
      fd = ConnectAgent();
      if (fd >= 0) {
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

}  // namespace

void ConfigureAgentLink(uint64_t start_wall_ns) {
  g_start_wall_ns = start_wall_ns;
  const char* path = getenv("REPTRACE_SOCKET");
  if (path == nullptr || path[0] == '\0') path = kDefaultSocket;
  const size_t len = strlen(path);
  g_socket_path_ok = len < sizeof(g_socket_path);
  if (g_socket_path_ok) std::memcpy(g_socket_path, path, len + 1);
  const char* service = getenv("REPTRACE_SERVICE");
  if (service != nullptr) CopyName(g_service, service);
}

void Publish(const EventRecord& record) {
  if (g_ring.Init() && g_ring.TryPush(record)) {
    g_recorded.fetch_add(1, std::memory_order_relaxed);
  } else {
    g_dropped.fetch_add(1, std::memory_order_relaxed);
  }
  if (!g_shipper_started.load(std::memory_order_acquire)) StartShipper();
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

void ResetAgentLinkAfterFork(uint64_t start_wall_ns) {
  g_start_wall_ns = start_wall_ns;
  g_ring.Reset();
  g_recorded.store(0, std::memory_order_relaxed);
  g_dropped.store(0, std::memory_order_relaxed);
  const int fd = g_agent_fd.exchange(-1);
  if (fd >= 0) RealClose(fd);  // the parent keeps its own copy
  g_flush_requested.store(0, std::memory_order_relaxed);
  g_flush_done.store(0, std::memory_order_relaxed);
  g_shipper_failed.store(false, std::memory_order_relaxed);
  g_shipper_started.store(false, std::memory_order_release);
}

void NoteProgramClose(int fd) {
  int expected = fd;
  if (fd >= 0 && g_agent_fd.load(std::memory_order_relaxed) == fd) {
    g_agent_fd.compare_exchange_strong(expected, -1);
  }
}

uint64_t EventsRecorded() { return g_recorded.load(std::memory_order_relaxed); }
uint64_t EventsDropped() { return g_dropped.load(std::memory_order_relaxed); }

}  // namespace reptrace::hook

#include "hook/agent_link.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "common/config_page.h"
#include "hook/process_state.h"
#include "hook/real_calls.h"

namespace reptrace::hook {
namespace agent_link_internal {

EventRing g_ring;
std::atomic<bool> g_link_started{false};
std::atomic<int> g_agent_fd{-1};

}  // namespace agent_link_internal

namespace {

using agent_link_internal::g_agent_fd;
using agent_link_internal::g_link_started;
using agent_link_internal::g_ring;

constexpr char kDefaultSocket[] = "/run/reptrace/agent.sock";
constexpr int64_t kMillis = 1000 * 1000;
constexpr int64_t kFirstBackoffNs = 100 * kMillis;
constexpr int64_t kMaxBackoffNs = 2000 * kMillis;
constexpr int64_t kLivenessPeriodNs = 1000 * kMillis;
constexpr int64_t kRingWaitNs = 2 * kMillis;
constexpr uint64_t kLookEveryDrops = 256;
// A ring is replaced only when the program closed our fd of it (a daemon closing every fd
// does it once): the old one stays mapped (see MakeRing), so their number is bounded.
constexpr int kMaxRings = 8;

// Set once by the constructor, read-only afterwards.
char g_socket_path[sizeof(sockaddr_un::sun_path)] = {};
bool g_socket_path_ok = false;
char g_service[kNameBytes] = {};  // empty: use the program name
uint64_t g_start_wall_ns = 0;
uint64_t g_start_mono_ns = 0;

std::atomic<int> g_ring_fd{-1};
// Agent connections lost while the ring lived on: the epoch of the next one
// (RingHeader::link_epoch, handover).
std::atomic<uint32_t> g_link_epoch{0};
// Pushes refused while this process had no ring (making it failed, or another thread was
// making it): counted here, the ring's header counts the rest.
std::atomic<uint64_t> g_unringed_drops{0};
// Records the rate limit refused before the ring was made (folded into its header then).
std::atomic<uint64_t> g_unringed_rate_limited{0};

// The fds a link operation is inside a system call on (slot 0: the agent connection, slot
// 1: the ring), kCreating while it creates one, else -1. A program that takes an fd number
// (close, dup2, close_range) waits for the link to leave that number first, so hook bytes
// never reach a file or socket of the program that reused the number. The link's calls
// never block, so the wait is a few microseconds at most.
constexpr int kCreating = -2;
std::atomic<int> g_in_flight[2] = {{-1}, {-1}};
constexpr int kAgentSlot = 0;
constexpr int kRingSlot = 1;
std::atomic<int>* const kOwners[] = {&g_agent_fd, &g_ring_fd};  // by slot

// One thread looks after the link at a time (a try-lock: the others carry on); the state
// below is only touched by the holder.
std::atomic<bool> g_link_busy{false};
int64_t g_next_attempt_ns = 0;
int64_t g_backoff_ns = kFirstBackoffNs;
int64_t g_next_liveness_ns = 0;
bool g_had_agent = false;
std::atomic<int> g_rings_made{0};  // relaxed: read outside the lock to skip hopeless tries

class LinkLock {
 public:
  LinkLock() : held_(!g_link_busy.exchange(true, std::memory_order_acquire)) {}
  ~LinkLock() {
    if (held_) g_link_busy.store(false, std::memory_order_release);
  }
  LinkLock(const LinkLock&) = delete;
  LinkLock& operator=(const LinkLock&) = delete;
  bool held() const { return held_; }

 private:
  const bool held_;
};

// While the link works on a program thread: the program's signal handlers wait (they
// could otherwise close or reuse our fds in the middle of an operation on this very
// thread), errno is the program's again afterwards, and nothing the link does is traced.
class LinkScope {
 public:
  LinkScope() : errno_(errno) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &signals_);
  }
  ~LinkScope() {
    pthread_sigmask(SIG_SETMASK, &signals_, nullptr);
    errno = errno_;
  }
  LinkScope(const LinkScope&) = delete;
  LinkScope& operator=(const LinkScope&) = delete;

 private:
  const int errno_;
  sigset_t signals_;
  InHookScope in_hook_;
};

// An agent connection that carried records was lost (by whichever thread lost it: the
// link on a failed call, the program closing or replacing our fd) or the process forked.
// Moved on at the moment of the loss, before any record the program makes after it, so
// that those re-announce. Async-signal-safe (a lock-free atomic).
void NextLinkGeneration() {
  if (g_link_generation.fetch_add(1, std::memory_order_seq_cst) + 1 == 0) {
    g_link_generation.fetch_add(1, std::memory_order_seq_cst);  // 0 means never announced
  }
}

// An agent connection that had the ring is lost: what is pushed from now on is the next
// connection's (RingHeader::handover), and connections announce themselves again for it
// (the link generation moves on after the handover position is set, so every
// re-announcement lies beyond it). Async-signal-safe.
void HandOver() {
  RingHeader* header = g_ring.header();
  const uint32_t epoch = g_link_epoch.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (header != nullptr) {
    const uint64_t position = header->enqueue_pos.load(std::memory_order_seq_cst);
    header->handover.store((uint64_t{epoch} << kHandoverEpochShift) |
                               (position & kHandoverPositionMask),
                           std::memory_order_seq_cst);
  }
  NextLinkGeneration();
}

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
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

// Claims `fd`, published in `owner`, for system calls in `slot`: false if the program has
// taken it meanwhile. Sequentially consistent against TakeAgentFd(): one of the two sees
// the other.
bool Enter(int slot, int fd, const std::atomic<int>& owner) {
  g_in_flight[slot].store(fd, std::memory_order_seq_cst);
  if (owner.load(std::memory_order_seq_cst) == fd) return true;
  g_in_flight[slot].store(-1, std::memory_order_seq_cst);
  return false;
}

void Leave(int slot) { g_in_flight[slot].store(-1, std::memory_order_seq_cst); }

// Drops the agent connection if it is still ours (the program may have closed it).
// `carried_records`: the agent had the ring (not a connect or hello that failed).
void Disconnect(int fd, bool carried_records) {
  g_in_flight[kAgentSlot].store(fd, std::memory_order_seq_cst);
  int expected = fd;
  if (g_agent_fd.compare_exchange_strong(expected, -1, std::memory_order_seq_cst)) {
    if (carried_records) HandOver();
    RealClose(fd);
  }
  Leave(kAgentSlot);
}

// Where the link's fds live: above the numbers programs expect to get (a daemon reopening
// 0, 1, 2 after closing everything, a server's first few sockets), but below 64, inside
// the fd table every process starts with: a number beyond it makes the kernel grow the
// table, and in a multi-threaded process that waits for an RCU grace period (12 ms
// measured here), which the program's thread would pay.
int HighFdFloor() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  return limit.rlim_cur >= 64 ? 48 : -1;
}

// Moves a new close-on-exec fd high; returns the fd to use.
int MoveHigh(int fd) {
  const int floor = HighFdFloor();
  if (floor <= fd) return fd;
  const int high = static_cast<int>(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor));
  if (high < 0) return fd;
  RealClose(fd);
  return high;
}

// Makes a ring in a new sealed memfd and sends records there from now on. An earlier ring
// (the program closed our fd of it) stays mapped: another thread may still be writing in
// it, and its agent reads it to the end.
bool MakeRing() {
  if (g_rings_made.load(std::memory_order_relaxed) >= kMaxRings) return false;
  // Attempts count too: a process where memfds fail does not retry forever.
  g_rings_made.fetch_add(1, std::memory_order_relaxed);
  const size_t bytes = g_ring.bytes();
  // A file size limit below the ring's would make ftruncate() fail and send the program
  // SIGXFSZ, which kills it: no ring then.
  rlimit fsize;
  if (getrlimit(RLIMIT_FSIZE, &fsize) != 0 ||
      (fsize.rlim_cur != RLIM_INFINITY && fsize.rlim_cur < bytes)) {
    return false;
  }
  // An agent reading the old ring reads it to the end once its connection closes; this
  // one goes to the next connection.
  const int connected = g_agent_fd.load(std::memory_order_seq_cst);
  if (connected >= 0) Disconnect(connected, /*carried_records=*/false);
  // Created, then published; while its number is not yet ours a program close()/dup2()
  // waits (kCreating) rather than race with us.
  g_in_flight[kRingSlot].store(kCreating, std::memory_order_seq_cst);
  int fd = static_cast<int>(
      syscall(SYS_memfd_create, "reptrace-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) {
    Leave(kRingSlot);
    return false;
  }
  fd = MoveHigh(fd);
  void* memory = MAP_FAILED;
  if (syscall(SYS_ftruncate, fd, static_cast<off_t>(bytes)) == 0) {
    memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  // The agent maps it too: sealed, so that its size never changes under the agent.
  if (memory == MAP_FAILED ||
      syscall(SYS_fcntl, fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    if (memory != MAP_FAILED) munmap(memory, bytes);
    RealClose(fd);
    Leave(kRingSlot);
    return false;
  }
  g_ring_fd.store(fd, std::memory_order_seq_cst);
  Leave(kRingSlot);
  // Connections announced in an earlier ring announce themselves again in this one: the
  // generation moves on once the ring is there (see PublishAnnouncement).
  g_ring.Attach(memory, g_pid.load(std::memory_order_relaxed));
  NextLinkGeneration();
  // What was refused while there was no ring, where the agent reads it.
  g_ring.header()->dropped.fetch_add(g_unringed_drops.exchange(0, std::memory_order_relaxed),
                                     std::memory_order_relaxed);
  g_ring.CountRateLimited(g_unringed_rate_limited.exchange(0, std::memory_order_relaxed));
  return true;
}

// Connects and says hello, handing over the ring; the new fd, or -1.
int ConnectAgent() {
  if (!g_socket_path_ok) return -1;
  // Without a ring (memfds refused, e.g. by a seccomp filter, or all kMaxRings used) the
  // process still says hello, without one, and reports on the socket what it drops
  // (SendStats): the agent knows of it, and nothing is lost silently.
  if (g_ring_fd.load(std::memory_order_seq_cst) < 0) MakeRing();
  g_in_flight[kAgentSlot].store(kCreating, std::memory_order_seq_cst);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    Leave(kAgentSlot);
    return -1;
  }
  fd = MoveHigh(fd);
  g_agent_fd.store(fd, std::memory_order_seq_cst);
  g_in_flight[kAgentSlot].store(fd, std::memory_order_seq_cst);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, g_socket_path, sizeof(addr.sun_path));
  // A Unix stream connect completes at once (or fails with EAGAIN when the agent's
  // backlog is full: we retry later).
  const int connected = RealConnect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  Leave(kAgentSlot);
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

  // The hello's bytes and the ring's fd in one message: a fresh socket's buffer takes it
  // whole, at once.
  const int ring_fd = g_ring_fd.load(std::memory_order_seq_cst);
  RingHeader* header = g_ring.header();
  const bool with_ring = ring_fd >= 0 && header != nullptr;
  if (with_ring) {
    hello.flags = kHelloFlagRing;
    *static_cast<volatile uint32_t*>(&header->link_epoch) =
        g_link_epoch.load(std::memory_order_seq_cst);
  }
  iovec iov = {&hello, sizeof(hello)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (with_ring) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &ring_fd, sizeof(int));
  }
  ssize_t sent = -1;
  if (Enter(kAgentSlot, fd, g_agent_fd)) {
    if (!with_ring || Enter(kRingSlot, ring_fd, g_ring_fd)) {
      do {
        sent = RealSendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (sent < 0 && errno == EINTR);
      if (with_ring) Leave(kRingSlot);
    }
    Leave(kAgentSlot);
  }
  if (sent != static_cast<ssize_t>(sizeof(hello))) {
    // Nothing, or part of a hello: the agent has nothing it can use.
    Disconnect(fd, /*carried_records=*/false);
    return -1;
  }
  return fd;
}

// Holding the link lock: one connection attempt, and the next one's time.
void TryConnect(int64_t now) {
  if (ConnectAgent() >= 0) {
    g_had_agent = true;
    g_backoff_ns = kFirstBackoffNs;
    g_next_liveness_ns = now + kLivenessPeriodNs;
  } else {
    g_next_attempt_ns = now + g_backoff_ns;
    g_backoff_ns = g_backoff_ns * 2 > kMaxBackoffNs ? kMaxBackoffNs : g_backoff_ns * 2;
  }
}

// Without a ring: what this process dropped, on the socket (a version 2 hook's
// StatsRecord, which the agent reads as such). False if the agent connection failed.
bool SendStats(int fd) {
  StatsRecord stats = {};
  stats.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kStats), sizeof(StatsRecord)};
  stats.pid = g_pid.load(std::memory_order_relaxed);
  stats.events_dropped = g_unringed_drops.load(std::memory_order_relaxed);
  if (!Enter(kAgentSlot, fd, g_agent_fd)) return true;  // the program took it: not ours
  ssize_t sent;
  do {
    sent = RealSend(fd, &stats, sizeof(stats), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  const int err = errno;
  Leave(kAgentSlot);
  // A full socket buffer is a lost report, not a lost agent: the next one carries the total.
  return sent == static_cast<ssize_t>(sizeof(stats)) || (sent < 0 && err == EAGAIN);
}

// Whether the agent is still at the other end: a peek that neither blocks nor consumes.
bool AgentAlive(int fd) {
  if (!Enter(kAgentSlot, fd, g_agent_fd)) return true;  // the program took it: not ours
  char byte;
  const ssize_t r = RealRecv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const int err = errno;
  Leave(kAgentSlot);
  if (r > 0) return true;
  if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) return true;
  return false;  // end of stream (the agent went away) or an error
}

// A process's first traced calls, in several threads at once: one makes the ring (a few
// system calls, microseconds), the others wait for it, bounded, rather than drop.
void WaitForRing() {
  if (g_ring.initialized() || !g_link_busy.load(std::memory_order_acquire)) return;
  // (clock_gettime and sched_yield leave errno alone.)
  const int64_t deadline = MonoNs() + kRingWaitNs;
  while (!g_ring.initialized() && g_link_busy.load(std::memory_order_acquire) &&
         MonoNs() < deadline) {
    sched_yield();
  }
}

// A push found the ring full (or missing): counted where the agent reads it. The drop
// path stays cheap, an overloaded agent must not slow the program down further; now and
// then it looks at the link, since an agent that went away fills the ring too.
void CountRefusal() {
  const uint64_t before = g_ring.CountDrop();
  if (before == UINT64_MAX) {
    g_unringed_drops.fetch_add(1, std::memory_order_relaxed);
  } else if ((before & (kLookEveryDrops - 1)) == 0) {
    agent_link_internal::MaintainLink(0);
  }
}

}  // namespace

namespace agent_link_internal {

void StartLink() {
  // Signals wait first (a handler's socket call on this thread would otherwise wait for
  // the ring this thread is making), then the lock: a thread that finds it taken waits
  // for the ring (WaitForRing).
  LinkScope scope;
  LinkLock lock;
  if (!lock.held()) return;
  bool expected = false;
  if (!g_link_started.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
    return;  // made already
  }
  // Without a ring every push is refused and counted, and the agent hears of it.
  MakeRing();
  TryConnect(MonoNs());
}

void* RecordRefused(EventRing::Claim* claim, uint32_t* generation) {
  if (!g_ring.initialized() && g_rings_made.load(std::memory_order_relaxed) < kMaxRings) {
    // Another thread is making the ring, or the program closed our fd of it: wait for it
    // or make a new one, and try again.
    WaitForRing();
    MaintainLink(0);
    if (generation != nullptr) *generation = g_link_generation.load(std::memory_order_acquire);
    if (void* cell = g_ring.TryClaim(claim)) return cell;
  }
  CountRefusal();
  return nullptr;
}

void MaintainLink(uint64_t position) {
  const int fd = g_agent_fd.load(std::memory_order_relaxed);
  if (fd >= 0 && (position & (kMaintainConnected - 1)) != 0) return;
  if (!g_link_started.load(std::memory_order_acquire)) return;
  LinkLock lock;
  if (!lock.held()) return;
  if (!g_ring.initialized() && g_rings_made.load(std::memory_order_relaxed) < kMaxRings) {
    // The program closed our fd of the ring (TakeAgentFd let it go): a new one at once,
    // for the next agent connection.
    LinkScope scope;
    MakeRing();
    return;
  }
  const int64_t now = MonoNs();  // leaves errno alone
  if (fd >= 0) {
    if (now < g_next_liveness_ns) return;
    g_next_liveness_ns = now + kLivenessPeriodNs;
    LinkScope scope;
    if (!g_ring.initialized()) {
      // No ring can be made: the agent hears what is dropped, about once a second.
      if (!SendStats(fd)) Disconnect(fd, /*carried_records=*/false);
      return;
    }
    if (!AgentAlive(fd)) {
      Disconnect(fd, /*carried_records=*/true);
      g_had_agent = false;
      g_backoff_ns = kFirstBackoffNs;
      g_next_attempt_ns = now + kFirstBackoffNs;  // an agent restarting needs a moment
    }
    return;
  }
  if (g_had_agent) {
    // Lost since the last look (the program closed or replaced our fd): reconnect after
    // a program closing all its fds has finished doing so. (Whoever lost it moved the
    // link generation on: connections re-announce themselves.)
    g_had_agent = false;
    g_backoff_ns = kFirstBackoffNs;
    g_next_attempt_ns = now + kFirstBackoffNs;
  }
  if (now < g_next_attempt_ns) return;
  LinkScope scope;
  TryConnect(now);
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

uint32_t PublishAnnouncement(const void* record, size_t size) {
  using namespace agent_link_internal;  // NOLINT: names of this file
  if (!g_link_started.load(std::memory_order_acquire)) StartLink();
  // Read before the claim, with acquire: a ring is attached before the generation moves
  // on (MakeRing), so the ring claimed in is that generation's or a later one's (a later
  // one only costs a needless re-announcement).
  uint32_t generation = g_link_generation.load(std::memory_order_acquire);
  EventRing::Claim claim;
  void* cell = g_ring.TryClaim(&claim);
  if (cell == nullptr) cell = RecordRefused(&claim, &generation);
  if (cell == nullptr) return 0;
  std::memcpy(cell, record, size <= EventRing::kCellBytes ? size : EventRing::kCellBytes);
  g_ring.Commit(claim);
  // Connections open and close rarely: each time, a look at the link (time-limited), so
  // that a quiet process notices a restarted agent too.
  MaintainLink(0);
  return generation;
}

bool Publish(const void* record, size_t size) { return PublishAnnouncement(record, size) != 0; }

void FlushAgentLink() {
  if (!g_link_started.load(std::memory_order_acquire)) return;
  if (g_ring.initialized() && g_agent_fd.load(std::memory_order_seq_cst) >= 0) return;
  LinkLock lock;
  if (!lock.held()) return;
  LinkScope scope;
  // The agent must have the ring before we go (it drains it after), or, without one, hear
  // what was dropped.
  if (g_agent_fd.load(std::memory_order_seq_cst) < 0) TryConnect(MonoNs());
  const int fd = g_agent_fd.load(std::memory_order_seq_cst);
  if (fd >= 0 && !g_ring.initialized()) SendStats(fd);
}

void ResetAgentLinkAfterFork(uint64_t start_wall_ns, uint64_t start_mono_ns) {
  g_start_wall_ns = start_wall_ns;
  g_start_mono_ns = start_mono_ns;
  NextLinkGeneration();
  // The parent's ring is shared memory: the child must never write into it. Unmapped
  // here only (the parent and the agent keep theirs).
  void* parent_ring = g_ring.Detach();
  if (parent_ring != nullptr) munmap(parent_ring, g_ring.bytes());
  // A parent thread may have been inside a link call at the fork; none runs here, so a
  // close() or dup2() in the child must not wait for it to leave.
  for (auto& slot : g_in_flight) slot.store(-1, std::memory_order_seq_cst);
  for (std::atomic<int>* owner : kOwners) {
    const int fd = owner->exchange(-1);
    if (fd >= 0) RealClose(fd);  // the parent keeps its own copy
  }
  g_unringed_drops.store(0, std::memory_order_relaxed);
  g_unringed_rate_limited.store(0, std::memory_order_relaxed);
  g_link_epoch.store(0, std::memory_order_relaxed);
  g_next_attempt_ns = 0;
  g_backoff_ns = kFirstBackoffNs;
  g_next_liveness_ns = 0;
  g_had_agent = false;
  g_rings_made.store(0, std::memory_order_relaxed);
  g_link_busy.store(false, std::memory_order_relaxed);
  g_link_started.store(false, std::memory_order_release);
}

namespace {

// TakeAgentFd when a link fd or operation may be on `fd`.
__attribute__((noinline)) bool TakeAgentFdSlow(int fd) {
  bool ours = false;
  if (fd >= 0) {
    for (std::atomic<int>* owner : kOwners) {
      int expected = fd;
      if (owner->load(std::memory_order_seq_cst) == fd &&
          owner->compare_exchange_strong(expected, -1, std::memory_order_seq_cst)) {
        ours = true;
        if (owner == &g_agent_fd) {
          HandOver();
        } else {
          // Without its fd the ring cannot be handed to another agent connection: pushes
          // are refused (and counted) until the next one is made, at the next push.
          g_ring.Detach();
        }
      }
    }
  }
  for (const auto& slot : g_in_flight) {
    for (;;) {
      const int busy = slot.load(std::memory_order_seq_cst);
      if (busy != kCreating && (fd < 0 || busy != fd)) break;
      sched_yield();
    }
  }
  return ours;
}

}  // namespace

bool TakeAgentFd(int fd) {
  // Every close of the program's own files comes here: when no fd of the link and no link
  // operation is on that number, the same four loads as below and nothing else (nginx
  // closes its static file on every request: 50 instructions a close before this).
  if (fd >= 0 && g_agent_fd.load(std::memory_order_seq_cst) != fd &&
      g_ring_fd.load(std::memory_order_seq_cst) != fd) {
    const int agent_busy = g_in_flight[kAgentSlot].load(std::memory_order_seq_cst);
    const int ring_busy = g_in_flight[kRingSlot].load(std::memory_order_seq_cst);
    if (agent_busy != fd && agent_busy != kCreating && ring_busy != fd &&
        ring_busy != kCreating) {
      return false;
    }
  }
  return TakeAgentFdSlow(fd);
}

int TakeAgentFdRange(unsigned int first, unsigned int last, int (&taken)[2]) {
  int n = 0;
  auto in_range = [&](int fd) {
    return fd >= 0 && static_cast<unsigned int>(fd) >= first &&
           static_cast<unsigned int>(fd) <= last;
  };
  for (std::atomic<int>* owner : kOwners) {
    const int fd = owner->load(std::memory_order_seq_cst);
    if (in_range(fd) && TakeAgentFd(fd)) taken[n++] = fd;
  }
  TakeAgentFd(-1);  // waits for fds being created
  for (const auto& slot : g_in_flight) {
    const int busy = slot.load(std::memory_order_seq_cst);
    if (in_range(busy)) TakeAgentFd(busy);
  }
  return n;
}

int AgentFd() { return g_agent_fd.load(std::memory_order_relaxed); }
int RingFd() { return g_ring_fd.load(std::memory_order_relaxed); }

bool LinkStarted() {
  return g_link_started.load(std::memory_order_acquire) && g_ring.initialized();
}

uint64_t EventsRecorded() { return g_ring.pushed(); }
void ProcessNameHashes(uint64_t* service, uint64_t* program) {
  char name[kNameBytes];
  ProgramName(name);
  *program = NameHash(name, strlen(name));
  *service = g_service[0] != '\0' ? NameHash(g_service, strlen(g_service)) : *program;
}

void CountRateLimited() {
  if (!g_ring.CountRateLimited()) g_unringed_rate_limited.fetch_add(1, std::memory_order_relaxed);
}

uint64_t EventsDropped() {
  return g_ring.dropped() + g_unringed_drops.load(std::memory_order_relaxed);
}

}  // namespace reptrace::hook

#include "agent/hook_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/workload.h"
#include "common/log.h"

namespace reptrace {
namespace {

absl::Status ErrnoError(absl::string_view what, int error) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(error)));
}

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerWakeup = 8;  // fairness between busy processes
// Room for a few descriptors per read: a hook sends one, with its hello. More in one
// message truncate the control data (MSG_CTRUNC): the kernel drops what did not fit.
constexpr size_t kMaxDescriptors = 4;
// Records taken from one ring per drain pass: fairness between busy processes.
constexpr size_t kRingBudget = 4096;
// Records popped before they go to the decoder together.
constexpr size_t kRingChunk = 256;
// The loop's wait while rings are mapped (NextRingWaitMs): a record waits at most the
// longest; a busy ring is left to fill to this share of its capacity between passes.
constexpr int kRingWaitMinMs = 1;
constexpr int kRingWaitMaxMs = 10;
constexpr double kRingFillBetweenPasses = 1.0 / 8;
// A quiet ring is looked at less often by periodic passes, down to every 10 ms.
constexpr int64_t kRingPollMinNs = 1000 * 1000;
constexpr int64_t kRingPollMaxNs = 10 * 1000 * 1000;

std::string HelloBytes(const HelloRecord& hello) {
  return std::string(reinterpret_cast<const char*>(&hello), sizeof(hello));
}

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

HookServer::HookServer(std::string socket_path, SpanBuilder* builder, CounterSet* counters,
                       absl::Duration tick)
    : socket_path_(std::move(socket_path)), builder_(builder), counters_(counters),
      tick_(tick) {}

HookServer::~HookServer() { Stop(); }

absl::Status HookServer::Start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.empty() || socket_path_.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path \"", socket_path_, "\" is empty or too long"));
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);

  const std::filesystem::path parent = std::filesystem::path(socket_path_).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", parent.string(), ": ", ec.message()));
  }
  struct stat st;
  if (lstat(socket_path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(socket_path_, " exists and is not a socket"));
    }
    unlink(socket_path_.c_str());  // stale, from an earlier agent
  }

  // Bound and made listening under a temporary name, then renamed into place: whoever
  // sees the socket file can connect at once (a hook or a test connecting between bind
  // and listen would be refused). Bound directly if the temporary name is too long.
  const std::string temp_path = socket_path_ + ".new";
  const bool use_temp = temp_path.size() < sizeof(addr.sun_path);
  if (use_temp) {
    unlink(temp_path.c_str());  // a leftover of an agent that died while starting
    std::memcpy(addr.sun_path, temp_path.c_str(), temp_path.size() + 1);
  }
  const std::string& bind_path = use_temp ? temp_path : socket_path_;
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return ErrnoError("socket", errno);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError(absl::StrCat("bind ", bind_path), errno);
  }
  if (!use_temp) socket_bound_ = true;
  if (chmod(bind_path.c_str(), 0666) != 0) {
    const int error = errno;
    if (use_temp) unlink(temp_path.c_str());
    return ErrnoError(absl::StrCat("chmod ", bind_path), error);
  }
  if (listen(listen_fd_, SOMAXCONN) != 0) {
    const int error = errno;
    if (use_temp) unlink(temp_path.c_str());
    return ErrnoError("listen", error);
  }
  if (use_temp) {
    if (rename(temp_path.c_str(), socket_path_.c_str()) != 0) {
      const int error = errno;
      unlink(temp_path.c_str());
      return ErrnoError(absl::StrCat("rename ", temp_path, " to ", socket_path_), error);
    }
    socket_bound_ = true;
  }

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return ErrnoError("epoll_create1", errno);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return ErrnoError("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenKey;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
    return ErrnoError("epoll_ctl", errno);
  }
  ev.data.u64 = kWakeKey;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    return ErrnoError("epoll_ctl", errno);
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void HookServer::Stop() {
  if (thread_.joinable()) {
    stopping_.store(true);
    const uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof(one)) < 0) {
      LogWarning("hook server: cannot wake the loop: %s", std::strerror(errno));
    }
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &epoll_fd_, &wake_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (socket_bound_) {
    unlink(socket_path_.c_str());
    socket_bound_ = false;
  }
}

int NextRingWaitMs(size_t taken, double fullest, int64_t since_last_pass_ns,
                   int last_wait_ms) {
  if (taken == 0) return std::min(2 * std::max(last_wait_ms, kRingWaitMinMs), kRingWaitMaxMs);
  if (fullest <= 0 || since_last_pass_ns <= 0) return kRingWaitMinMs;
  const double wait_ms = static_cast<double>(since_last_pass_ns) / 1e6 *
                         (kRingFillBetweenPasses / fullest);
  return static_cast<int>(std::clamp(wait_ms, static_cast<double>(kRingWaitMinMs),
                                     static_cast<double>(kRingWaitMaxMs)));
}

void HookServer::Loop() {
  epoll_event events[64];
  const int tick_ms = static_cast<int>(absl::ToInt64Milliseconds(tick_));
  int ring_wait_ms = kRingWaitMinMs;
  int64_t last_pass_ns = SteadyNowNs();
  absl::Time next_expiry = absl::Now() + tick_;
  while (!stopping_.load()) {
    const int timeout_ms = rings_ > 0 ? std::min(tick_ms, ring_wait_ms) : tick_ms;
    const int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
    if (n < 0 && errno != EINTR) {
      LogError("hook server: epoll_wait: %s", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kListenKey) {
        Accept();
      } else if (key != kWakeKey) {
        Read(key);
      }
    }
    if (rings_ > 0) {
      const int64_t pass_ns = SteadyNowNs();
      double fullest = 0;
      const size_t taken = DrainRings(kRingBudget, &fullest);
      ring_wait_ms = NextRingWaitMs(taken, fullest, pass_ns - last_pass_ns, ring_wait_ms);
      last_pass_ns = pass_ns;
    }
    counters_->events_without_connection.store(builder_->events_without_connection());
    counters_->inband_peers_not_hooked.store(builder_->inband_peers_not_hooked());
    // At most once a tick: it looks at every connection.
    const absl::Time now = absl::Now();
    if (now >= next_expiry) {
      builder_->ExpireIdle(now);
      next_expiry = now + tick_;
    }
  }
  // What the processes wrote is not lost when the agent stops.
  DrainRings(0);
  while (!conns_.empty()) Close(conns_.begin()->first);
  counters_->events_without_connection.store(builder_->events_without_connection());
  counters_->inband_peers_not_hooked.store(builder_->inband_peers_not_hooked());
}

void HookServer::Accept() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        LogWarning("hook server: accept: %s", std::strerror(errno));
      }
      return;
    }
    const uint64_t key = next_key_++;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = key;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      LogWarning("hook server: epoll_ctl: %s", std::strerror(errno));
      close(fd);
      continue;
    }
    auto conn = std::make_unique<Connection>();
    conn->fd = fd;
    ucred cred{};
    socklen_t cred_size = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_size) == 0) {
      conn->peer_pid = cred.pid;
    }
    conns_.emplace(key, std::move(conn));
    open_connections_.store(conns_.size());
  }
}

HookServer::Connection::~Connection() {
  if (ring_memory != nullptr) munmap(ring_memory, ring_bytes);
  if (received_fd >= 0) close(received_fd);
}

void HookServer::Read(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Connection& conn = *it->second;
  std::vector<Record> records;
  char buffer[kReadChunk];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptors)];
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    iovec iov{buffer, sizeof(buffer)};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(conn.fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      LogWarning("hook connection of pid %d: read: %s", conn.pid, std::strerror(errno));
      DrainAndClose(key);
      return;
    }
    if (!TakeDescriptors(key, conn, msg)) return;
    if (n == 0) {
      // The process ended (or dropped its connection): what it wrote into its ring before
      // that is still there.
      absl::Status end = conn.decoder.Finish();
      if (!end.ok()) {
        counters_->records_malformed.fetch_add(1);
        LogWarning("hook connection of pid %d: %s", conn.pid, end.ToString());
      }
      DrainAndClose(key);
      return;
    }
    records.clear();
    absl::Status status = conn.decoder.Feed(absl::string_view(buffer, n), &records);
    if (!Dispatch(key, conn, records)) return;
    if (conn.received_fd >= 0 && conn.decoder.saw_hello()) {
      // The hello came without the ring flag: the descriptor is not ours to keep.
      close(conn.received_fd);
      conn.received_fd = -1;
    }
    if (!status.ok()) {
      counters_->records_malformed.fetch_add(1);
      LogWarning("hook connection of pid %d: malformed input, closing it: %s", conn.pid,
                 status.ToString());
      DrainAndClose(key);
      return;
    }
    if (static_cast<size_t>(n) < sizeof(buffer)) return;  // drained for now
  }
}

bool HookServer::TakeDescriptors(uint64_t key, Connection& conn, const msghdr& msg) {
  // Every descriptor is closed here unless it may be the ring a hello still to be decoded
  // will name: the first one before the hello, while no other is held.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < count; ++j) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + j * sizeof(int), sizeof(fd));
      if ((msg.msg_flags & MSG_CTRUNC) == 0 && !conn.decoder.saw_hello() &&
          conn.ring_memory == nullptr && conn.received_fd < 0) {
        conn.received_fd = fd;
      } else {
        close(fd);
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    // More descriptors than a hook ever sends: some were dropped on the way, and which one
    // would have been the ring is anyone's guess.
    counters_->records_malformed.fetch_add(1);
    LogWarning("hook connection of pid %d: sent more file descriptors than a hook does, "
               "closing it", conn.pid);
    DrainAndClose(key);
    return false;
  }
  return true;
}

bool HookServer::Dispatch(uint64_t key, Connection& conn,
                          const std::vector<Record>& records) {
  const absl::Time now = absl::Now();
  for (const Record& record : records) {
    if (const auto* data = std::get_if<DataRecord>(&record)) {
      counters_->events_received.fetch_add(1);
      builder_->OnData(key, *data, now);
    } else if (const auto* event = std::get_if<EventRecord>(&record)) {
      counters_->events_received.fetch_add(1);
      builder_->OnEvent(key, *event, now);
    } else if (const auto* inband = std::get_if<InbandRecord>(&record)) {
      counters_->events_received.fetch_add(1);
      builder_->OnInband(key, *inband, now);
    } else if (const auto* hello = std::get_if<HelloRecord>(&record)) {
      // A fork child's or an exec'd program's hello names its causal parent's thread,
      // whose records may still wait in the parent's ring: the builder gets them first.
      // (This connection has no ring yet: its hello maps it.)
      if (rings_ > 0) DrainRings(0);
      if (hello->version >= 3 && (hello->flags & kHelloFlagRing) == 0) {
        // A version 3 hook that could not make its ring (no memfd, a file size limit):
        // it reports its drops on the socket (StatsRecord), traces nothing.
        LogWarning("hooked process %d (%s) has no ring to share: its events are dropped "
                   "and counted",
                   hello->pid, std::string(hello->process, strnlen(hello->process,
                                                                  sizeof(hello->process))));
      }
      if (hello->version >= 3 && (hello->flags & kHelloFlagRing) != 0) {
        absl::Status status = MapRing(conn, *hello);
        if (!status.ok()) {
          counters_->records_malformed.fetch_add(1);
          LogWarning("hook connection of pid %d: %s; closing it", hello->pid,
                     status.ToString());
          Close(key);
          return false;
        }
      }
      conn.pid = hello->pid;
      counters_->processes_connected.fetch_add(1);
      // A process's cgroup names its container and pod: read once per hook connection
      // (a few microseconds), not per span.
      builder_->OnHello(key, *hello, ReadWorkloadOf(conn.peer_pid));
    } else if (const auto* stats = std::get_if<StatsRecord>(&record)) {
      uint64_t& latest = conn.dropped_by_pid[stats->pid];
      if (stats->events_dropped > latest) {
        counters_->hook_events_dropped.fetch_add(stats->events_dropped - latest);
      }
      latest = stats->events_dropped;
    }
  }
  return true;
}

absl::Status HookServer::MapRing(Connection& conn, const HelloRecord& hello) {
  const int fd = conn.received_fd;
  conn.received_fd = -1;
  if (fd < 0) {
    return absl::InvalidArgumentError(
        "its hello names a ring but came without a file descriptor");
  }
  // Checked before it is mapped: a file the process could shrink would turn the agent's
  // reads past its new end into SIGBUS. The mapping keeps the memory; the descriptor
  // is closed whatever happens.
  struct stat st;
  int seals = -1;
  const bool stat_ok = fstat(fd, &st) == 0;
  const int stat_error = errno;
  if (stat_ok && S_ISREG(st.st_mode)) seals = fcntl(fd, F_GET_SEALS);
  const int seals_error = errno;
  absl::Status status;
  void* memory = MAP_FAILED;
  size_t size = 0;
  if (!stat_ok) {
    status = ErrnoError("its ring: fstat", stat_error);
  } else if (!S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError("its ring is not a memfd (not a regular file)");
  } else if (seals < 0) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "its ring is not a memfd (F_GET_SEALS: ", std::strerror(seals_error), ")"));
  } else if ((seals & F_SEAL_SHRINK) == 0 || (seals & F_SEAL_GROW) == 0) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "its ring is not sealed against shrinking and growing (seals 0x%x)", seals));
  } else if (st.st_size < static_cast<off_t>(kRingHeaderBytes) ||
             st.st_size > static_cast<off_t>(RingBytes(kMaxRingCapacity))) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("its ring's size %d is no ring's size", st.st_size));
  } else {
    size = static_cast<size_t>(st.st_size);
    memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) status = ErrnoError("its ring: mmap", errno);
  }
  close(fd);
  if (!status.ok()) return status;

  uint32_t capacity = 0;
  if (!RingLayoutValid(memory, size, &capacity)) {
    munmap(memory, size);
    return absl::InvalidArgumentError(absl::StrFormat(
        "its ring of %d bytes has a bad header (magic, capacity, cell size, or a size "
        "that is not its capacity's)", size));
  }
  // The ring's records follow the hello: its decoder starts past one.
  std::vector<Record> ignored;
  status = conn.ring_decoder.Feed(HelloBytes(hello), &ignored);
  if (!status.ok()) {
    munmap(memory, size);
    return status;
  }
  std::vector<uint64_t> stale;
  // The counts in the ring's header that the old reader has already added up carry over
  // (the header's counters are the process's totals).
  uint64_t counted_dropped = 0;
  uint64_t counted_rate_limited = 0;
  for (const auto& [key, other] : conns_) {
    if (other.get() != &conn && other->ring_memory != nullptr &&
        other->ring_dev == st.st_dev && other->ring_ino == st.st_ino) {
      stale.push_back(key);
      counted_dropped = std::max(counted_dropped, other->ring_dropped);
      counted_rate_limited = std::max(counted_rate_limited, other->ring_rate_limited);
    }
  }
  for (const uint64_t key : stale) {
    LogInfo("hook connection of pid %d: its ring moves to a new connection", hello.pid);
    DrainAndClose(key);
  }
  conn.ring_dropped = counted_dropped;
  conn.ring_rate_limited = counted_rate_limited;
  conn.ring_dev = st.st_dev;
  conn.ring_ino = st.st_ino;
  conn.ring_memory = memory;
  conn.ring_bytes = size;
  conn.ring_capacity = capacity;
  conn.ring = RingReader(static_cast<RingHeader*>(memory), capacity);
  ++rings_;
  return absl::OkStatus();
}

size_t HookServer::DrainRing(uint64_t key, Connection& conn, size_t budget, bool* closed) {
  *closed = false;
  if (conn.ring_memory == nullptr) return 0;
  // The process's own count (it could write anything there: a counter, never a size).
  const uint64_t dropped = conn.ring.dropped();
  if (dropped > conn.ring_dropped) {
    counters_->hook_events_dropped.fetch_add(dropped - conn.ring_dropped);
    conn.ring_dropped = dropped;
  }
  const uint64_t rate_limited = conn.ring.rate_limited();
  if (rate_limited > conn.ring_rate_limited) {
    counters_->hook_events_rate_limited.fetch_add(rate_limited - conn.ring_rate_limited);
    conn.ring_rate_limited = rate_limited;
  }
  size_t taken = 0;
  if (ring_buffer_.empty()) ring_buffer_.resize(kRingChunk * kMaxRecordSize);
  while (taken < budget) {
    size_t used = 0;
    size_t chunk = 0;
    for (; chunk < kRingChunk && taken < budget; ++chunk, ++taken) {
      const size_t n = conn.ring.Pop(ring_buffer_.data() + used);  // <= kMaxRecordSize
      if (n == 0) break;
      used += n;
    }
    if (chunk == 0) break;
    ring_records_.clear();
    absl::Status status =
        conn.ring_decoder.Feed(absl::string_view(ring_buffer_.data(), used), &ring_records_);
    // Never a hello (the decoder refuses a second one): Dispatch does not close.
    Dispatch(key, conn, ring_records_);
    if (!status.ok()) {
      counters_->records_malformed.fetch_add(1);
      LogWarning("hook connection of pid %d: malformed record in its ring, closing it: %s",
                 conn.pid, status.ToString());
      Close(key);
      *closed = true;
      return taken;
    }
    if (chunk < kRingChunk) break;  // empty for now
  }
  return taken;
}

size_t HookServer::DrainRings(size_t budget, double* fullest) {
  const bool periodic = budget != 0;
  // Monotonic: a wall clock set back would leave quiet rings unread until it caught up.
  const int64_t now_ns = periodic ? SteadyNowNs() : 0;
  // Keys first: a malformed ring closes its connection on the way.
  ring_keys_.clear();
  for (const auto& [key, conn] : conns_) {
    if (conn->ring_memory == nullptr) continue;
    if (periodic && now_ns < conn->ring_next_poll_ns) continue;  // quiet, not due yet
    ring_keys_.push_back(key);
  }
  size_t taken = 0;
  for (const uint64_t key : ring_keys_) {
    auto it = conns_.find(key);
    if (it == conns_.end()) continue;
    Connection& conn = *it->second;
    bool closed = false;
    const size_t n = DrainRing(key, conn, periodic ? budget : conn.ring_capacity, &closed);
    taken += n;
    if (fullest != nullptr && !closed && conn.ring_capacity > 0) {
      *fullest = std::max(*fullest, static_cast<double>(n) / conn.ring_capacity);
    }
    if (closed || !periodic) continue;
    if (n > 0) {
      conn.ring_poll_interval_ns = 0;
    } else {
      conn.ring_poll_interval_ns =
          std::clamp(2 * conn.ring_poll_interval_ns, kRingPollMinNs, kRingPollMaxNs);
    }
    conn.ring_next_poll_ns = now_ns + conn.ring_poll_interval_ns;
  }
  return taken;
}

void HookServer::DrainAndClose(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  bool closed = false;
  // Bounded by the capacity: all the ring can hold, and a process still writing (a
  // descendant that kept the mapping) cannot hold the loop.
  DrainRing(key, *it->second, it->second->ring_capacity, &closed);
  if (!closed) Close(key);
}

void HookServer::Close(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
  close(it->second->fd);
  if (it->second->ring_memory != nullptr) --rings_;
  conns_.erase(it);  // unmaps its ring
  open_connections_.store(conns_.size());
  builder_->OnProcessGone(key);
}

}  // namespace reptrace

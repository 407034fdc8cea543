#include "agent/hook_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace reptrace {
namespace {

absl::Status ErrnoError(absl::string_view what, int error) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(error)));
}

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerWakeup = 8;  // fairness between busy processes

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

void HookServer::Loop() {
  epoll_event events[64];
  const int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(tick_));
  absl::Time next_expiry = absl::Now() + tick_;
  while (!stopping_.load()) {
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
    // At most once a tick: it looks at every connection.
    const absl::Time now = absl::Now();
    if (now >= next_expiry) {
      builder_->ExpireIdle(now);
      next_expiry = now + tick_;
    }
  }
  while (!conns_.empty()) Close(conns_.begin()->first);
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
    conns_.emplace(key, std::move(conn));
    open_connections_.store(conns_.size());
  }
}

void HookServer::Read(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Connection& conn = *it->second;
  std::vector<Record> records;
  char buffer[kReadChunk];
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    const ssize_t n = read(conn.fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      LogWarning("hook connection of pid %d: read: %s", conn.pid, std::strerror(errno));
      Close(key);
      return;
    }
    if (n == 0) {
      absl::Status end = conn.decoder.Finish();
      if (!end.ok()) {
        counters_->records_malformed.fetch_add(1);
        LogWarning("hook connection of pid %d: %s", conn.pid, end.ToString());
      }
      Close(key);
      return;
    }
    records.clear();
    absl::Status status = conn.decoder.Feed(absl::string_view(buffer, n), &records);
    Dispatch(key, conn, records);
    if (!status.ok()) {
      counters_->records_malformed.fetch_add(1);
      LogWarning("hook connection of pid %d: malformed input, closing it: %s", conn.pid,
                 status.ToString());
      Close(key);
      return;
    }
    if (static_cast<size_t>(n) < sizeof(buffer)) return;  // drained for now
  }
}

void HookServer::Dispatch(uint64_t key, Connection& conn,
                          const std::vector<Record>& records) {
  const absl::Time now = absl::Now();
  for (const Record& record : records) {
    if (const auto* data = std::get_if<DataRecord>(&record)) {
      counters_->events_received.fetch_add(1);
      builder_->OnData(key, *data, now);
    } else if (const auto* event = std::get_if<EventRecord>(&record)) {
      counters_->events_received.fetch_add(1);
      builder_->OnEvent(key, *event, now);
    } else if (const auto* hello = std::get_if<HelloRecord>(&record)) {
      conn.pid = hello->pid;
      counters_->processes_connected.fetch_add(1);
      builder_->OnHello(key, *hello);
    } else if (const auto* stats = std::get_if<StatsRecord>(&record)) {
      uint64_t& latest = conn.dropped_by_pid[stats->pid];
      if (stats->events_dropped > latest) {
        counters_->hook_events_dropped.fetch_add(stats->events_dropped - latest);
      }
      latest = stats->events_dropped;
    }
  }
}

void HookServer::Close(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
  close(it->second->fd);
  conns_.erase(it);
  open_connections_.store(conns_.size());
  builder_->OnProcessGone(key);
}

}  // namespace reptrace

// A non-blocking, edge-triggered epoll echo server, for the invisibility tests.
//
//   epoll_echo_server PORT
//
// Listens on 127.0.0.1:PORT and echoes every byte back on the same connection. Sockets are
// non-blocking and registered once with EPOLLIN | EPOLLOUT | EPOLLET: on each event the
// server reads until EAGAIN, then writes until EAGAIN, keeping what the kernel did not take
// (partial writes) for the next EPOLLOUT. It keeps reading while output is pending, so a
// client that writes a large request before reading cannot deadlock it. On SIGTERM (seen
// through a signalfd in the same epoll set) it prints one summary line and exits 0.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

namespace {

struct Connection {
  std::string pending;  // received, not yet written back
  bool peer_closed = false;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "epoll_echo_server: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: epoll_echo_server PORT\n");
    return 2;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) Die("signalfd");

  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) Die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("bind");
  if (listen(listener, 128) != 0) Die("listen");

  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.fd = listener;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &ev);
  ev.events = EPOLLIN;
  ev.data.fd = signal_fd;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, signal_fd, &ev);

  std::map<int, Connection> connections;
  unsigned long long accepted = 0, bytes_in = 0, bytes_out = 0, partial_writes = 0;
  char buffer[16384];
  for (;;) {
    epoll_event events[64];
    const int n = epoll_wait(epoll_fd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == signal_fd) {
        // Closed connections first, so the summary counts what really happened.
        for (auto& [cfd, unused] : connections) close(cfd);
        // partial_writes depends on the kernel's buffers, not on the program: not printed.
        std::printf("accepted %llu bytes_in %llu bytes_out %llu open_at_exit %zu\n", accepted,
                    bytes_in, bytes_out, connections.size());
        std::fflush(stdout);
        std::fprintf(stderr, "partial_writes %llu\n", partial_writes);
        return 0;
      }
      if (fd == listener) {
        for (;;) {
          const int client = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (client < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            Die("accept4");
          }
          ++accepted;
          connections[client];
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
          cev.data.fd = client;
          if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, client, &cev) != 0) Die("epoll_ctl");
        }
        continue;
      }
      Connection& c = connections[fd];
      bool failed = false;
      // Edge-triggered: drain the socket.
      while (!c.peer_closed) {
        const ssize_t got = read(fd, buffer, sizeof(buffer));
        if (got > 0) {
          bytes_in += static_cast<unsigned long long>(got);
          c.pending.append(buffer, static_cast<size_t>(got));
        } else if (got == 0) {
          c.peer_closed = true;
        } else if (errno == EINTR) {
          continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
          break;
        } else {
          failed = true;
          break;
        }
      }
      // Then write back as much as the kernel takes.
      while (!failed && !c.pending.empty()) {
        const ssize_t put = write(fd, c.pending.data(), c.pending.size());
        if (put > 0) {
          bytes_out += static_cast<unsigned long long>(put);
          if (static_cast<size_t>(put) < c.pending.size()) ++partial_writes;
          c.pending.erase(0, static_cast<size_t>(put));
        } else if (put < 0 && errno == EINTR) {
          continue;
        } else if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          break;  // EPOLLOUT will tell us when there is room
        } else {
          failed = true;
        }
      }
      if (failed || (c.peer_closed && c.pending.empty())) {
        close(fd);
        connections.erase(fd);
      }
    }
  }
}

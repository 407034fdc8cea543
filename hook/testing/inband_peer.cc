// A line-protocol server and client for the in-band mode tests (inband_hook_test.cc),
// each run under the hook or not. Every call style the framing must survive is one mode.
//
//   inband_peer server STYLE
//     Listens on 127.0.0.1 (port 0), prints the port, then serves connections one after
//     the other: for every '\n'-ended line received it answers "ok N\n" (N: the line's
//     length), and at the end of each connection prints "conn BYTES HASH" (all bytes it
//     received, FNV-1a 64 in hex). STYLE, how it reads: read (64 KiB reads), read1 (one
//     byte per read), readv (three iovecs of 5, 7 and 4096 bytes), peek (a 16-byte
//     MSG_PEEK, then a read of what the peek showed), nonblock (O_NONBLOCK, poll, 100-byte
//     reads; prints "eagain N" with the EAGAINs it got), recvmsg, waitall (MSG_WAITALL
//     reads of 10 bytes, until the end of the stream), greet (sends "hello\n" first, then
//     reads as read does), edge (nginx's way: O_NONBLOCK, edge-triggered epoll, a 1-byte
//     MSG_PEEK, then 100-byte reads until EAGAIN, and only then a wait: it stalls, and
//     exits 4, if an EAGAIN ever came while bytes were still waiting).
//   inband_peer client PORT STYLE LINES [CONNECTIONS]
//     Sends LINES lines of sizes from 1 byte to 200 KB on each of CONNECTIONS (default 1)
//     connections, one at a time, reading each answer; prints "sent BYTES HASH" per
//     connection; exits 1 at a wrong answer. STYLE, how it writes: write, writev (three
//     iovecs), sendmsg, sendfile (from a temporary file), nonblock (O_NONBLOCK, a 4 KiB
//     send buffer, poll on EAGAIN), greeted (as write, for a greeting server: sends its
//     first line at once, then reads the greeting, then the answer).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace {

struct Hash {
  uint64_t value = 1469598103934665603ULL;
  uint64_t bytes = 0;
  void Add(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      value ^= static_cast<unsigned char>(p[i]);
      value *= 1099511628211ULL;
    }
    bytes += n;
  }
};

[[noreturn]] void Die(const char* what) {
  fprintf(stderr, "inband_peer: %s: %s\n", what, strerror(errno));
  exit(2);
}

// The edge style's epoll instance, watching the connection being served.
int g_edge_epoll = -1;

// One read in the server's style; returns what the program got (0: end, -1: error).
ssize_t ReadSome(int fd, const std::string& style, char* buf, size_t size, long* eagains) {
  if (style == "read" || style == "greet") return read(fd, buf, size);
  if (style == "read1") return read(fd, buf, 1);
  if (style == "readv") {
    iovec iov[3] = {{buf, 5}, {buf + 5, 7}, {buf + 12, 4096}};
    return readv(fd, iov, 3);
  }
  if (style == "peek") {
    char peeked[16];
    const ssize_t n = recv(fd, peeked, sizeof(peeked), MSG_PEEK);
    if (n <= 0) return n;
    const ssize_t r = read(fd, buf, static_cast<size_t>(n));
    if (r != n || memcmp(peeked, buf, static_cast<size_t>(n)) != 0) {
      fprintf(stderr, "inband_peer: the peek showed other bytes than the read took\n");
      exit(3);
    }
    return r;
  }
  if (style == "nonblock") {
    for (;;) {
      const ssize_t r = read(fd, buf, 100);
      if (r >= 0 || errno != EAGAIN) return r;
      ++*eagains;
      pollfd p = {fd, POLLIN, 0};
      poll(&p, 1, 5000);
    }
  }
  if (style == "recvmsg") {
    iovec iov[2] = {{buf, 3}, {buf + 3, size - 3}};
    msghdr msg = {};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    return recvmsg(fd, &msg, 0);
  }
  if (style == "waitall") return recv(fd, buf, 10, MSG_WAITALL);
  if (style == "edge") {
    for (;;) {
      char first;
      ssize_t r = recv(fd, &first, 1, MSG_PEEK);
      if (r > 0) r = read(fd, buf, 100);
      if (r >= 0 || errno != EAGAIN) return r;
      ++*eagains;
      epoll_event ev;
      if (epoll_wait(g_edge_epoll, &ev, 1, 5000) == 0) {
        fprintf(stderr, "inband_peer: stalled: no new bytes after EAGAIN for 5 s\n");
        exit(4);
      }
    }
  }
  fprintf(stderr, "inband_peer: unknown style %s\n", style.c_str());
  exit(2);
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int Server(const std::string& style) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 16) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("listen");
  }
  printf("%d\n", ntohs(addr.sin_port));
  fflush(stdout);
  static char buf[65536];
  for (;;) {
    const int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) Die("accept");
    if (style == "nonblock" || style == "edge") {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    if (style == "edge") {  // a fresh instance per connection (fd numbers are reused)
      if (g_edge_epoll >= 0) close(g_edge_epoll);
      g_edge_epoll = epoll_create1(0);
      epoll_event ev = {};
      ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
      ev.data.fd = fd;
      if (epoll_ctl(g_edge_epoll, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl");
    }
    if (style == "greet" && !WriteAll(fd, "hello\n", 6)) Die("write greeting");
    Hash hash;
    size_t line = 0;
    long eagains = 0;
    for (;;) {
      const ssize_t n = ReadSome(fd, style, buf, sizeof(buf), &eagains);
      if (n < 0) Die("read");
      if (n == 0) break;
      hash.Add(buf, static_cast<size_t>(n));
      for (ssize_t i = 0; i < n; ++i) {
        ++line;
        if (buf[i] != '\n') continue;
        char answer[32];
        const int k = snprintf(answer, sizeof(answer), "ok %zu\n", line);
        line = 0;
        if (style == "nonblock" || style == "edge") {
          // A small answer into an empty send buffer: one write takes it whole.
          if (write(fd, answer, static_cast<size_t>(k)) != k) Die("write answer");
        } else if (!WriteAll(fd, answer, static_cast<size_t>(k))) {
          Die("write answer");
        }
      }
    }
    close(fd);
    printf("conn %llu %016llx\n", static_cast<unsigned long long>(hash.bytes),
           static_cast<unsigned long long>(hash.value));
    if (style == "nonblock") printf("eagain %ld\n", eagains);
    fflush(stdout);
  }
}

std::string Line(int i) {
  static const size_t kSizes[] = {1, 17, 31, 32, 33, 100, 1500, 4096, 65536, 200000};
  const size_t n = kSizes[i % (sizeof(kSizes) / sizeof(kSizes[0]))];
  std::string s(n, 'a');
  for (size_t k = 0; k + 1 < n; ++k) s[k] = static_cast<char>('a' + (k * 7 + i) % 26);
  s[n - 1] = '\n';
  return s;
}

bool SendLine(int fd, const std::string& style, const std::string& line) {
  const char* p = line.data();
  size_t n = line.size();
  if (style == "write" || style == "greeted") return WriteAll(fd, p, n);
  if (style == "writev" || style == "sendmsg") {
    while (n > 0) {
      const size_t a = n / 3, b = n / 3;
      iovec iov[3] = {{const_cast<char*>(p), a},
                      {const_cast<char*>(p + a), b},
                      {const_cast<char*>(p + a + b), n - a - b}};
      ssize_t w;
      if (style == "writev") {
        w = writev(fd, iov, 3);
      } else {
        msghdr msg = {};
        msg.msg_iov = iov;
        msg.msg_iovlen = 3;
        w = sendmsg(fd, &msg, 0);
      }
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  if (style == "sendfile") {
    char path[] = "/tmp/inband-peer-XXXXXX";
    const int file = mkstemp(path);
    if (file < 0) return false;
    unlink(path);
    const bool written = WriteAll(file, p, n);
    off_t offset = 0;
    while (written && static_cast<size_t>(offset) < n) {
      if (sendfile(fd, file, &offset, n - static_cast<size_t>(offset)) <= 0) break;
    }
    close(file);
    return written && static_cast<size_t>(offset) == n;
  }
  if (style == "nonblock") {
    while (n > 0) {
      const ssize_t w = send(fd, p, n, 0);
      if (w < 0 && errno == EAGAIN) {
        pollfd pf = {fd, POLLOUT, 0};
        poll(&pf, 1, 5000);
        continue;
      }
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  fprintf(stderr, "inband_peer: unknown style %s\n", style.c_str());
  exit(2);
}

// The answer to one line: "ok N\n", read a byte at a time (no read past it).
bool ReadAnswer(int fd, bool nonblocking, std::string* answer) {
  answer->clear();
  char c;
  for (;;) {
    const ssize_t r = read(fd, &c, 1);
    if (r < 0 && nonblocking && errno == EAGAIN) {
      pollfd pf = {fd, POLLIN, 0};
      poll(&pf, 1, 5000);
      continue;
    }
    if (r <= 0) return false;
    if (c == '\n') return true;
    answer->push_back(c);
  }
}

int Client(int port, const std::string& style, int lines, int connections) {
  for (int c = 0; c < connections; ++c) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (style == "nonblock") {
      const int small = 4096;
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect");
    if (style == "nonblock") fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    Hash hash;
    for (int i = 0; i < lines; ++i) {
      const std::string line = Line(i);
      if (!SendLine(fd, style, line)) Die("send");
      hash.Add(line.data(), line.size());
      std::string answer;
      if (style == "greeted" && i == 0) {
        if (!ReadAnswer(fd, false, &answer) || answer != "hello") {
          fprintf(stderr, "inband_peer: greeting \"%s\"\n", answer.c_str());
          return 1;
        }
      }
      if (!ReadAnswer(fd, style == "nonblock", &answer)) Die("read answer");
      if (answer != "ok " + std::to_string(line.size())) {
        fprintf(stderr, "inband_peer: line %d of %zu bytes answered \"%s\"\n", i, line.size(),
                answer.c_str());
        return 1;
      }
    }
    close(fd);
    printf("sent %llu %016llx\n", static_cast<unsigned long long>(hash.bytes),
           static_cast<unsigned long long>(hash.value));
    fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "server") == 0) return Server(argv[2]);
  if (argc >= 5 && strcmp(argv[1], "client") == 0) {
    return Client(atoi(argv[2]), argv[3], atoi(argv[4]), argc >= 6 ? atoi(argv[5]) : 1);
  }
  fprintf(stderr, "usage: inband_peer server STYLE | client PORT STYLE LINES [CONNECTIONS]\n");
  return 2;
}

// Loopback sockets for the small programs that tests and benchmarks run under the hook
// (hook_test_peer, hook_coverage_peer, socket_flood, hook_call_bench). Header-only, plain
// C library calls and no allocation, so those programs link nothing else.
#ifndef REPTRACE_TESTS_TESTING_LOOPBACK_H_
#define REPTRACE_TESTS_TESTING_LOOPBACK_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

namespace reptrace::testing {

// Fills *addr with ::1 (v6) or 127.0.0.1 and `port` (host order; 0: any); returns its length.
inline socklen_t LoopbackAddress(bool v6, uint16_t port, sockaddr_storage* addr) {
  *addr = {};
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(addr);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(port);
    return sizeof(*a);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(addr);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(port);
  return sizeof(*a);
}

// A connected TCP pair over 127.0.0.1 (TCP_NODELAY on both ends, the listener closed);
// false if any step failed (whatever was opened is closed).
inline bool LoopbackTcpPair(int* client, int* server) {
  *client = *server = -1;
  sockaddr_storage addr;
  socklen_t len = LoopbackAddress(false, 0, &addr);
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  bool ok = listener >= 0 && bind(listener, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
            listen(listener, 1) == 0 &&
            getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  if (ok) {
    *client = socket(AF_INET, SOCK_STREAM, 0);
    ok = *client >= 0 && connect(*client, reinterpret_cast<sockaddr*>(&addr), len) == 0;
  }
  if (ok) {
    *server = accept(listener, nullptr, nullptr);
    ok = *server >= 0;
  }
  if (listener >= 0) close(listener);
  if (!ok) {
    if (*client >= 0) close(*client);
    if (*server >= 0) close(*server);
    *client = *server = -1;
    return false;
  }
  const int one = 1;
  setsockopt(*client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(*server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return true;
}

// Reads exactly `n` bytes (short reads continue); false on end of stream or error.
inline bool ReadExactly(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_TESTING_LOOPBACK_H_

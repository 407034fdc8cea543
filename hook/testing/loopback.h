// Loopback socket addresses for the hook's test programs (hook_test_peer,
// hook_coverage_peer). Header-only, plain C library calls.
#ifndef REPTRACE_HOOK_TESTING_LOOPBACK_H_
#define REPTRACE_HOOK_TESTING_LOOPBACK_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

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

}  // namespace reptrace::testing

#endif  // REPTRACE_HOOK_TESTING_LOOPBACK_H_

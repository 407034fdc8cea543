// Declarations of the glibc entry points that no public header declares (the _FORTIFY_SOURCE
// variants), so libreptrace.so can define and resolve them.
#ifndef REPTRACE_HOOK_INTERPOSED_H_
#define REPTRACE_HOOK_INTERPOSED_H_

#include <sys/socket.h>
#include <sys/types.h>

extern "C" {
ssize_t __read_chk(int fd, void* buf, size_t nbytes, size_t buflen);
ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void* __restrict buf, size_t len, size_t buflen, int flags,
                       sockaddr* __restrict addr, socklen_t* __restrict addrlen);
}

#endif  // REPTRACE_HOOK_INTERPOSED_H_

// The libc functions libreptrace.so interposes, resolved once with dlsym(RTLD_NEXT, ...).
//
// ResolveRealCalls() runs in the library constructor. Until it has run (or if a symbol
// could not be resolved, or resolved back to ourselves), every Real*() wrapper below goes
// straight to syscall(), so a call that arrives before set-up still does the right thing.
// Nothing here allocates or takes a lock.
#ifndef REPTRACE_HOOK_REAL_CALLS_H_
#define REPTRACE_HOOK_REAL_CALLS_H_

#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

namespace reptrace::hook {

struct RealCalls {
  int (*connect)(int, const sockaddr*, socklen_t);
  int (*accept)(int, sockaddr*, socklen_t*);
  int (*accept4)(int, sockaddr*, socklen_t*, int);
  int (*close)(int);
  ssize_t (*read)(int, void*, size_t);
  ssize_t (*write)(int, const void*, size_t);
  ssize_t (*recv)(int, void*, size_t, int);
  ssize_t (*send)(int, const void*, size_t, int);
  ssize_t (*readv)(int, const iovec*, int);
  ssize_t (*writev)(int, const iovec*, int);
  ssize_t (*recvfrom)(int, void*, size_t, int, sockaddr*, socklen_t*);
  ssize_t (*sendto)(int, const void*, size_t, int, const sockaddr*, socklen_t);
  ssize_t (*sendfile)(int, int, off_t*, size_t);
  ssize_t (*sendfile64)(int, int, off64_t*, size_t);
  ssize_t (*read_chk)(int, void*, size_t, size_t);
  ssize_t (*recv_chk)(int, void*, size_t, size_t, int);
  ssize_t (*recvfrom_chk)(int, void*, size_t, size_t, int, sockaddr*, socklen_t*);
  int (*shutdown)(int, int);
  ssize_t (*recvmsg)(int, msghdr*, int);
  ssize_t (*sendmsg)(int, const msghdr*, int);
  int (*recvmmsg)(int, mmsghdr*, unsigned int, int, timespec*);
  int (*sendmmsg)(int, mmsghdr*, unsigned int, int);
  int (*dup)(int);
  int (*dup2)(int, int);
  int (*dup3)(int, int, int);
  int (*fcntl)(int, int, ...);
  int (*fcntl64)(int, int, ...);
  int (*close_range)(unsigned int, unsigned int, int);
  void (*closefrom)(int);
  int (*execve)(const char*, char* const*, char* const*);
  int (*execvpe)(const char*, char* const*, char* const*);
  int (*fexecve)(int, char* const*, char* const*);
  int (*posix_spawn)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                     const posix_spawnattr_t*, char* const*, char* const*);
  int (*posix_spawnp)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                      const posix_spawnattr_t*, char* const*, char* const*);
  int (*pthread_create)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  int (*getsockopt)(int, int, int, void*, socklen_t*);
};

// Zero until ResolveRealCalls() has run.
extern RealCalls g_real;

// Fills g_real. Idempotent; call from the library constructor only.
void ResolveRealCalls();

inline int RealConnect(int fd, const sockaddr* addr, socklen_t len) {
  if (g_real.connect != nullptr) return g_real.connect(fd, addr, len);
  return static_cast<int>(syscall(SYS_connect, fd, addr, len));
}
inline int RealGetsockopt(int fd, int level, int name, void* value, socklen_t* len) {
  if (g_real.getsockopt != nullptr) return g_real.getsockopt(fd, level, name, value, len);
  return static_cast<int>(syscall(SYS_getsockopt, fd, level, name, value, len));
}
inline int RealAccept(int fd, sockaddr* addr, socklen_t* len) {
  if (g_real.accept != nullptr) return g_real.accept(fd, addr, len);
  return static_cast<int>(syscall(SYS_accept, fd, addr, len));
}
inline int RealAccept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  if (g_real.accept4 != nullptr) return g_real.accept4(fd, addr, len, flags);
  return static_cast<int>(syscall(SYS_accept4, fd, addr, len, flags));
}
inline int RealClose(int fd) {
  if (g_real.close != nullptr) return g_real.close(fd);
  return static_cast<int>(syscall(SYS_close, fd));
}
inline ssize_t RealRead(int fd, void* buf, size_t n) {
  if (g_real.read != nullptr) return g_real.read(fd, buf, n);
  return syscall(SYS_read, fd, buf, n);
}
inline ssize_t RealWrite(int fd, const void* buf, size_t n) {
  if (g_real.write != nullptr) return g_real.write(fd, buf, n);
  return syscall(SYS_write, fd, buf, n);
}
inline ssize_t RealRecv(int fd, void* buf, size_t n, int flags) {
  if (g_real.recv != nullptr) return g_real.recv(fd, buf, n, flags);
  return syscall(SYS_recvfrom, fd, buf, n, flags, nullptr, nullptr);
}
inline ssize_t RealSend(int fd, const void* buf, size_t n, int flags) {
  if (g_real.send != nullptr) return g_real.send(fd, buf, n, flags);
  return syscall(SYS_sendto, fd, buf, n, flags, nullptr, 0);
}
inline ssize_t RealReadv(int fd, const iovec* iov, int iovcnt) {
  if (g_real.readv != nullptr) return g_real.readv(fd, iov, iovcnt);
  return syscall(SYS_readv, fd, iov, iovcnt);
}
inline ssize_t RealWritev(int fd, const iovec* iov, int iovcnt) {
  if (g_real.writev != nullptr) return g_real.writev(fd, iov, iovcnt);
  return syscall(SYS_writev, fd, iov, iovcnt);
}
inline ssize_t RealRecvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr,
                            socklen_t* len) {
  if (g_real.recvfrom != nullptr) return g_real.recvfrom(fd, buf, n, flags, addr, len);
  return syscall(SYS_recvfrom, fd, buf, n, flags, addr, len);
}
inline ssize_t RealSendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr,
                          socklen_t len) {
  if (g_real.sendto != nullptr) return g_real.sendto(fd, buf, n, flags, addr, len);
  return syscall(SYS_sendto, fd, buf, n, flags, addr, len);
}
inline ssize_t RealSendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  if (g_real.sendfile != nullptr) return g_real.sendfile(out_fd, in_fd, offset, count);
  return syscall(SYS_sendfile, out_fd, in_fd, offset, count);
}
inline ssize_t RealSendfile64(int out_fd, int in_fd, off64_t* offset, size_t count) {
  if (g_real.sendfile64 != nullptr) return g_real.sendfile64(out_fd, in_fd, offset, count);
  return syscall(SYS_sendfile, out_fd, in_fd, offset, count);
}

inline int RealShutdown(int fd, int how) {
  if (g_real.shutdown != nullptr) return g_real.shutdown(fd, how);
  return static_cast<int>(syscall(SYS_shutdown, fd, how));
}
inline ssize_t RealRecvmsg(int fd, msghdr* msg, int flags) {
  if (g_real.recvmsg != nullptr) return g_real.recvmsg(fd, msg, flags);
  return syscall(SYS_recvmsg, fd, msg, flags);
}
inline ssize_t RealSendmsg(int fd, const msghdr* msg, int flags) {
  if (g_real.sendmsg != nullptr) return g_real.sendmsg(fd, msg, flags);
  return syscall(SYS_sendmsg, fd, msg, flags);
}
inline int RealRecvmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags, timespec* timeout) {
  if (g_real.recvmmsg != nullptr) return g_real.recvmmsg(fd, msgs, n, flags, timeout);
  return static_cast<int>(syscall(SYS_recvmmsg, fd, msgs, n, flags, timeout));
}
inline int RealSendmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags) {
  if (g_real.sendmmsg != nullptr) return g_real.sendmmsg(fd, msgs, n, flags);
  return static_cast<int>(syscall(SYS_sendmmsg, fd, msgs, n, flags));
}
inline int RealDup(int fd) {
  if (g_real.dup != nullptr) return g_real.dup(fd);
  return static_cast<int>(syscall(SYS_dup, fd));
}
inline int RealDup2(int fd, int fd2) {
  if (g_real.dup2 != nullptr) return g_real.dup2(fd, fd2);
  return static_cast<int>(syscall(SYS_dup2, fd, fd2));
}
inline int RealDup3(int fd, int fd2, int flags) {
  if (g_real.dup3 != nullptr) return g_real.dup3(fd, fd2, flags);
  return static_cast<int>(syscall(SYS_dup3, fd, fd2, flags));
}
// fcntl's third argument as glibc reads it: one pointer-sized value, passed on unchanged.
inline int RealFcntl(int fd, int cmd, void* arg) {
  if (g_real.fcntl != nullptr) return g_real.fcntl(fd, cmd, arg);
  return static_cast<int>(syscall(SYS_fcntl, fd, cmd, arg));
}
inline int RealFcntl64(int fd, int cmd, void* arg) {
  if (g_real.fcntl64 != nullptr) return g_real.fcntl64(fd, cmd, arg);
  return RealFcntl(fd, cmd, arg);
}
inline int RealCloseRange(unsigned int first, unsigned int last, int flags) {
  if (g_real.close_range != nullptr) return g_real.close_range(first, last, flags);
  return static_cast<int>(syscall(SYS_close_range, first, last, flags));
}
inline int RealExecve(const char* path, char* const* argv, char* const* envp) {
  if (g_real.execve != nullptr) return g_real.execve(path, argv, envp);
  return static_cast<int>(syscall(SYS_execve, path, argv, envp));
}

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_REAL_CALLS_H_

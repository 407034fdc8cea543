// A program that exercises, under libreptrace.so, the calls hook_test checks for coverage
// and invisibility. Usage: hook_coverage_peer MODE [ARGS]; prints what the test compares
// and exits 0 on success, 1 (with a message on stderr) on failure. Behaves the same with
// and without the hook.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/testing/loopback.h"

namespace {

using reptrace::testing::LoopbackAddress;
using reptrace::testing::LoopbackTcpPair;
using reptrace::testing::ReadExactly;

int Fail(const char* what) {
  std::fprintf(stderr, "hook_coverage_peer: %s: %s\n", what, std::strerror(errno));
  return 1;
}


// dup, dup2, fcntl(F_DUPFD_CLOEXEC): one connection whichever fd sends.
int Dup() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  const int d1 = dup(client);
  const int d2 = dup2(client, 200);
  const int d3 = fcntl(client, F_DUPFD_CLOEXEC, 300);
  if (d1 < 0 || d2 != 200 || d3 < 300) return Fail("dup");
  if (write(client, "aaaa", 4) != 4 || write(d1, "bbb", 3) != 3) return Fail("write");
  close(client);  // the connection goes on through its duplicates
  if (send(d2, "cc", 2, 0) != 2) return Fail("send");
  close(d1);
  close(d2);
  if (write(d3, "d", 1) != 1) return Fail("write d3");
  close(d3);  // the last one: the connection ends here
  char buf[16];
  if (!ReadExactly(server, buf, 10)) return Fail("read");
  close(server);
  std::printf("%.10s\n", buf);
  return 0;
}

// MSG_PEEK, MSG_WAITALL and EAGAIN on the server side.
int Peek() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  char buf[32];
  // Nothing there yet: EAGAIN, which moves nothing.
  if (recv(server, buf, sizeof(buf), MSG_DONTWAIT) != -1 || errno != EAGAIN) {
    return Fail("EAGAIN expected");
  }
  if (write(client, "0123456789", 10) != 10) return Fail("write");
  if (recv(server, buf, 10, MSG_PEEK | MSG_WAITALL) != 10) return Fail("peek");
  if (write(client, "abcdef", 6) != 6) return Fail("write 2");
  if (recv(server, buf, 16, MSG_WAITALL) != 16) return Fail("waitall");
  close(client);
  if (recv(server, buf, sizeof(buf), 0) != 0) return Fail("eof");
  close(server);
  std::printf("%.16s\n", buf);
  return 0;
}

// UDP request/response between an unconnected client and a server, then recvmmsg/sendmmsg
// and sendmsg/recvmsg. family: "4", "6", or "mapped" (a v6 client talking to 127.0.0.1).
int Udp(const char* family) {
  const bool v6 = std::strcmp(family, "6") == 0;
  const bool mapped = std::strcmp(family, "mapped") == 0;
  const int server = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
  sockaddr_storage addr;
  socklen_t len = LoopbackAddress(v6, 0, &addr);
  if (bind(server, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Fail("bind");
  }
  sockaddr_storage to = addr;
  socklen_t to_len = len;
  if (mapped) {  // the same server, as ::ffff:127.0.0.1 from a v6 socket
    const auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    sockaddr_in6 m = {};
    m.sin6_family = AF_INET6;
    m.sin6_port = a->sin_port;
    m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&m.sin6_addr.s6_addr[12], &a->sin_addr, 4);
    std::memcpy(&to, &m, sizeof(m));
    to_len = sizeof(m);
  }
  const int client = socket(v6 || mapped ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
  if (sendto(client, "ping", 4, 0, reinterpret_cast<sockaddr*>(&to), to_len) != 4) {
    return Fail("sendto");
  }
  char buf[64];
  sockaddr_storage from = {};
  socklen_t from_len = sizeof(from);
  if (recvfrom(server, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &from_len) != 4) {
    return Fail("recvfrom");
  }
  if (sendto(server, "pong!", 5, 0, reinterpret_cast<sockaddr*>(&from), from_len) != 5) {
    return Fail("reply");
  }
  if (recvfrom(client, buf, sizeof(buf), 0, nullptr, nullptr) != 5) return Fail("response");
  // Three datagrams in one sendmmsg, received by one recvmmsg.
  const char* texts[3] = {"one", "three", "seven!!"};
  mmsghdr out[3] = {};
  iovec out_iov[3];
  for (int i = 0; i < 3; ++i) {
    out_iov[i] = {const_cast<char*>(texts[i]), std::strlen(texts[i])};
    out[i].msg_hdr.msg_iov = &out_iov[i];
    out[i].msg_hdr.msg_iovlen = 1;
    out[i].msg_hdr.msg_name = &to;
    out[i].msg_hdr.msg_namelen = to_len;
  }
  if (sendmmsg(client, out, 3, 0) != 3) return Fail("sendmmsg");
  mmsghdr in[4] = {};
  char in_buf[4][16];
  iovec in_iov[4];
  sockaddr_storage in_from[4];
  for (int i = 0; i < 4; ++i) {
    in_iov[i] = {in_buf[i], sizeof(in_buf[i])};
    in[i].msg_hdr.msg_iov = &in_iov[i];
    in[i].msg_hdr.msg_iovlen = 1;
    in[i].msg_hdr.msg_name = &in_from[i];
    in[i].msg_hdr.msg_namelen = sizeof(in_from[i]);
  }
  int got = 0;
  while (got < 3) {
    const int r = recvmmsg(server, in + got, 3 - got, MSG_WAITFORONE, nullptr);
    if (r <= 0) return Fail("recvmmsg");
    got += r;
  }
  // sendmsg with two iovecs, recvmsg into two.
  iovec two[2] = {{const_cast<char*>("vec"), 3}, {const_cast<char*>("tor"), 3}};
  msghdr m = {};
  m.msg_name = &in_from[0];
  m.msg_namelen = in[0].msg_hdr.msg_namelen;
  m.msg_iov = two;
  m.msg_iovlen = 2;
  if (sendmsg(server, &m, 0) != 6) return Fail("sendmsg");
  char r1[2], r2[8];
  iovec rtwo[2] = {{r1, 2}, {r2, 8}};
  msghdr rm = {};
  rm.msg_iov = rtwo;
  rm.msg_iovlen = 2;
  if (recvmsg(client, &rm, 0) != 6) return Fail("recvmsg");
  close(client);
  close(server);
  std::printf("%.2s%.4s\n", r1, r2);
  return 0;
}

// A daemon: makes traced traffic, then closes every fd (mode "close": a close() loop,
// "range": close_range, "dup2": dup2 of a file over every fd, then closing them), then
// writes known lines into `path` while making more traced traffic. The file must hold
// exactly those lines, and (close/range) open() must give fd 0 again.
int Daemon(const char* mode, const char* path) {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  if (write(client, "hello", 5) != 5) return Fail("write");
  usleep(100 * 1000);  // the hook's agent connection is up by now
  int file = -1;
  if (std::strcmp(mode, "close") == 0) {
    for (int fd = 0; fd < 1024; ++fd) close(fd);
  } else if (std::strcmp(mode, "range") == 0) {
    if (close_range(0, ~0u, 0) != 0) return Fail("close_range");
  } else {
    file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (file < 0) return Fail("open");
    for (int fd = 0; fd < 1024; ++fd) {
      if (fd != file) dup2(file, fd);
    }
    usleep(50 * 1000);  // hook traffic now would land in the file
    for (int fd = 0; fd < 1024; ++fd) {
      if (fd != file) close(fd);
    }
  }
  if (file < 0) {
    file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (file != 0) return 2;  // stdio is gone: the exit code says it
  }
  for (int i = 0; i < 20; ++i) {
    if (!LoopbackTcpPair(&client, &server)) return 3;
    if (write(client, "traced", 6) != 6) return 4;
    char buf[8];
    if (!ReadExactly(server, buf, 6)) return 5;
    close(client);
    close(server);
    const std::string line = "line " + std::to_string(i) + "\n";
    if (write(file, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 6;
    usleep(10 * 1000);
  }
  close(file);
  return 0;
}

// A connection that outlives the hook's agent connection: an exchange, then every fd above
// 63 closed (the hook's agent socket lives high; the pair stays), then more exchanges on
// the same connection, which the hook must re-announce to its new agent connection.
// Prints what the server read.
int Reannounce() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  char buf[16] = {};
  if (write(client, "hello", 5) != 5 || !ReadExactly(server, buf, 5)) return Fail("hello");
  usleep(100 * 1000);  // shipped on the first agent connection by now
  if (close_range(40, ~0u, 0) != 0) return Fail("close_range");  // the hook's fds: 48 up
  if (write(server, "ok", 2) != 2 || !ReadExactly(client, buf + 5, 2)) return Fail("ok");
  if (write(client, "again", 5) != 5 || !ReadExactly(server, buf + 7, 5)) return Fail("again");
  close(client);
  close(server);
  std::printf("%s\n", buf);
  return 0;
}

void* ThreadMain(void* fd) {
  std::printf("%ld\n", static_cast<long>(syscall(SYS_gettid)));
  std::fflush(stdout);
  write(*static_cast<int*>(fd), "from thread", 11);
  return nullptr;
}

// pthread_create after traced traffic: prints the parent's tid, then the thread's.
int Thread() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  if (write(client, "main", 4) != 4) return Fail("write");
  std::printf("%ld\n", static_cast<long>(syscall(SYS_gettid)));
  std::fflush(stdout);
  pthread_t thread;
  if (pthread_create(&thread, nullptr, ThreadMain, &client) != 0) return Fail("pthread_create");
  pthread_join(thread, nullptr);
  char buf[16];
  if (!ReadExactly(server, buf, 15)) return Fail("read");
  return 0;
}

// "thread-ends": threads leave through pthread_exit (unwinding a C++ destructor through
// the hook's start trampoline), through cancellation, and 1000 times in a row (more than
// the trampoline pool holds); prints what each join returned.
struct Announce {
  ~Announce() { std::printf("destructor ran\n"); }
};
void* ExitWith42(void*) { pthread_exit(reinterpret_cast<void*>(42)); }
void* ExitThroughDestructor(void*) {
  Announce announce;
  pthread_exit(reinterpret_cast<void*>(7));
}
void* WaitForCancel(void*) {
  for (;;) {
    pthread_testcancel();
    usleep(1000);
  }
}

int ThreadEnds() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return Fail("tcp pair");
  if (write(client, "go", 2) != 2) return Fail("write");  // so the hook wraps new threads
  pthread_t thread;
  void* result = nullptr;
  pthread_create(&thread, nullptr, ExitWith42, nullptr);
  pthread_join(thread, &result);
  std::printf("pthread_exit %ld\n", reinterpret_cast<long>(result));
  pthread_create(&thread, nullptr, ExitThroughDestructor, nullptr);
  pthread_join(thread, &result);
  std::printf("after destructor %ld\n", reinterpret_cast<long>(result));
  pthread_create(&thread, nullptr, WaitForCancel, nullptr);
  usleep(10000);
  pthread_cancel(thread);
  pthread_join(thread, &result);
  std::printf("cancelled %d\n", result == PTHREAD_CANCELED);
  long sum = 0;
  for (int i = 0; i < 1000; ++i) {
    if (pthread_create(&thread, nullptr, ExitWith42, nullptr) != 0) return Fail("create");
    pthread_join(thread, &result);
    sum += reinterpret_cast<long>(result);
  }
  std::printf("1000 threads %ld\n", sum);
  return 0;
}

// One traced exchange on a loopback TCP connection.
bool TracedExchange(const char* what) {
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) return false;
  const size_t n = strlen(what);
  char buf[64];
  const bool ok = write(client, what, n) == static_cast<ssize_t>(n) && n <= sizeof(buf) &&
                  ReadExactly(server, buf, n);
  close(client);
  close(server);
  return ok;
}

// Run by "exec": traced traffic, then its LD_PRELOAD, REPTRACE_SOCKET and REPTRACE_CAUSE
// (which the hook must have taken out of the environment) on stdout.
int ExecChild() {
  if (!TracedExchange("exec'd")) return Fail("traced exchange");
  const char* preload = getenv("LD_PRELOAD");
  const char* socket_path = getenv("REPTRACE_SOCKET");
  const char* cause = getenv("REPTRACE_CAUSE");
  std::printf("pid=%d LD_PRELOAD=%s REPTRACE_SOCKET=%s REPTRACE_CAUSE=%s\n", getpid(),
              preload ? preload : "(none)", socket_path ? socket_path : "(none)",
              cause ? cause : "(none)");
  return 0;
}

// After traced traffic of its own: fork + execve with an empty environment, then
// posix_spawn with only a user LD_PRELOAD.
int Exec(const char* self) {
  if (!TracedExchange("exec parent")) return Fail("traced exchange");
  std::printf("parent=%d\n", getpid());
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    char* argv[] = {const_cast<char*>(self), const_cast<char*>("exec-child"), nullptr};
    char* envp[] = {nullptr};
    execve(self, argv, envp);
    _exit(127);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Fail("execve child");
  }
  char* argv[] = {const_cast<char*>(self), const_cast<char*>("exec-child"), nullptr};
  char user_preload[] = "LD_PRELOAD=libm.so.6";
  char* envp[] = {user_preload, nullptr};
  pid_t spawned;
  if (posix_spawn(&spawned, self, nullptr, nullptr, argv, envp) != 0) return Fail("spawn");
  if (waitpid(spawned, &status, 0) != spawned || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    return Fail("spawned child");
  }
  return 0;
}

// A request and a response over a Unix-domain stream socket bound at `path`.
int Unix(const char* path) {
  const int listener = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
  unlink(path);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0) {
    return Fail("unix listen");
  }
  const int client = socket(AF_UNIX, SOCK_STREAM, 0);
  if (client < 0 || connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Fail("unix connect");
  }
  const int server = accept(listener, nullptr, nullptr);
  if (server < 0) return Fail("unix accept");
  char buf[8];
  if (write(client, "PING\n", 5) != 5 || !ReadExactly(server, buf, 5) ||
      write(server, "PONG\n", 5) != 5 || !ReadExactly(client, buf, 5)) {
    return Fail("unix exchange");
  }
  close(client);
  close(server);
  close(listener);
  unlink(path);
  std::printf("%.5s", buf);
  return 0;
}

// Socket calls from a signal handler, on a traced connection of their own, while the main
// flow does traced request/response on another: a timer interrupts the program 20 µs
// after each handler returns, often inside the hook. Every byte must arrive intact both
// ways. The timer is one-shot, re-armed by the handler: a periodic one livelocks the
// program when a handler (two socket calls) takes longer than the period, as it does on a
// loaded machine, and the main flow then never finishes.
int g_signal_client = -1;
int g_signal_server = -1;
volatile sig_atomic_t g_signals_handled = 0;
volatile sig_atomic_t g_signal_failed = 0;
volatile sig_atomic_t g_signal_rearm = 0;
constexpr suseconds_t kSignalGapUs = 20;

void ArmSignalTimer() {
  itimerval timer = {};
  timer.it_value.tv_usec = kSignalGapUs;
  setitimer(ITIMER_REAL, &timer, nullptr);  // async-signal-safe
}

void OnAlarm(int) {
  const int saved = errno;
  char out[8], in[8];
  std::memcpy(out, "signal!!", 8);
  if (write(g_signal_client, out, sizeof(out)) != sizeof(out) ||
      !ReadExactly(g_signal_server, in, sizeof(in)) || std::memcmp(in, out, 8) != 0) {
    g_signal_failed = 1;
  }
  g_signals_handled = g_signals_handled + 1;
  if (g_signal_rearm) ArmSignalTimer();
  errno = saved;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t written = write(fd, data, n);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    data += written;
    n -= static_cast<size_t>(written);
  }
  return true;
}

int Signals() {
  int client, server;
  if (!LoopbackTcpPair(&client, &server) ||
      !LoopbackTcpPair(&g_signal_client, &g_signal_server)) {
    return Fail("tcp pairs");
  }
  struct sigaction action = {};
  action.sa_handler = OnAlarm;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGALRM, &action, nullptr) != 0) return Fail("sigaction");
  g_signal_rearm = 1;
  itimerval timer = {};
  timer.it_value.tv_usec = kSignalGapUs;
  if (setitimer(ITIMER_REAL, &timer, nullptr) != 0) return Fail("setitimer");
  char request[64], reply[64];
  for (int i = 0; i < 1000; ++i) {
    std::snprintf(request, sizeof(request), "request %08d %046d", i, i);
    if (!WriteAll(client, request, sizeof(request)) ||
        !ReadExactly(server, reply, sizeof(reply)) ||
        std::memcmp(request, reply, sizeof(request)) != 0) {
      return Fail("request/response under signals");
    }
  }
  g_signal_rearm = 0;
  timer = {};
  setitimer(ITIMER_REAL, &timer, nullptr);
  if (g_signal_failed) return Fail("socket calls in the signal handler");
  if (g_signals_handled < 50) {
    std::fprintf(stderr, "hook_coverage_peer: only %d signals\n",
                 static_cast<int>(g_signals_handled));
    return 1;
  }
  close(client);
  close(server);
  close(g_signal_client);
  close(g_signal_server);
  std::printf("ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 1;
  const std::string mode = argv[1];
  if (mode == "dup") return Dup();
  if (mode == "peek") return Peek();
  if (mode == "udp" && argc > 2) return Udp(argv[2]);
  if (mode == "daemon" && argc > 3) return Daemon(argv[2], argv[3]);
  if (mode == "reannounce") return Reannounce();
  if (mode == "thread") return Thread();
  if (mode == "thread-ends") return ThreadEnds();
  if (mode == "exec") return Exec(argv[0]);
  if (mode == "unix" && argc > 2) return Unix(argv[2]);
  if (mode == "exec-child") return ExecChild();
  if (mode == "signals") return Signals();
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 1;
}

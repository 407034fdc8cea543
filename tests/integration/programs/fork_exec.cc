// A program that forks and execs, for the invisibility tests.
//
//   fork_exec URL
//
// One after the other, each waited for before the next starts (so the output's order is
// fixed):
//   1. fork, the child execs /bin/echo;
//   1b. fork, the child execs `env -u LD_PRELOAD ls /proc/self/fd`: the fds an exec'ed
//      program (not itself preloaded) inherits — only 0, 1, 2 and ls's own 3 if every
//      other fd of ours is close-on-exec;
//   2. fork, the child execvp's curl to fetch URL (http://127.0.0.1:PORT/PATH);
//   3. fork, the child (no exec) fetches URL itself over a raw socket, prints the body;
//   4. posix_spawnp /bin/sh -c 'echo spawned $0' via PATH;
//   5. the parent fetches URL itself.
// Prints each child's exit status. Exits 0 only if every step succeeded.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern char** environ;

namespace {

// GET of http://127.0.0.1:PORT/PATH with HTTP/1.0; the body, or "" on any failure.
std::string Fetch(const std::string& url) {
  const std::string prefix = "http://127.0.0.1:";
  if (url.compare(0, prefix.size(), prefix) != 0) return "";
  const size_t slash = url.find('/', prefix.size());
  const int port = std::atoi(url.substr(prefix.size(), slash - prefix.size()).c_str());
  const std::string path = slash == std::string::npos ? "/" : url.substr(slash);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  for (;;) {
    const ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    response.append(buffer, static_cast<size_t>(got));
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.compare(0, 12, "HTTP/1.0 200") != 0 || body == std::string::npos) return "";
  return response.substr(body + 4);
}

int WaitFor(pid_t pid, const char* what) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      std::printf("%s: waitpid failed\n", what);
      return -1;
    }
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::printf("%s exited %d\n", what, code);
  std::fflush(stdout);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fork_exec URL\n");
    return 2;
  }
  const std::string url = argv[1];
  int failures = 0;
  std::printf("parent starts\n");
  std::fflush(stdout);

  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/echo", "echo", "hello from the exec'ed child", static_cast<char*>(nullptr));
    _exit(127);
  }
  failures += WaitFor(pid, "echo") != 0;

  pid = fork();
  if (pid == 0) {
    execl("/usr/bin/env", "env", "-u", "LD_PRELOAD", "/bin/ls", "/proc/self/fd",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  failures += WaitFor(pid, "ls /proc/self/fd") != 0;

  pid = fork();
  if (pid == 0) {
    execlp("curl", "curl", "-sS", "--fail", "--max-time", "10", url.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  failures += WaitFor(pid, "curl") != 0;

  pid = fork();
  if (pid == 0) {
    const std::string body = Fetch(url);
    std::printf("forked child fetched %zu bytes: %s", body.size(), body.c_str());
    std::fflush(stdout);
    _exit(body.empty() ? 1 : 0);
  }
  failures += WaitFor(pid, "forked child") != 0;

  char arg0[] = "sh", arg1[] = "-c", arg2[] = "echo spawned $0 $1", arg3[] = "by",
       arg4[] = "posix_spawnp";
  char* spawn_argv[] = {arg0, arg1, arg2, arg3, arg4, nullptr};
  if (posix_spawnp(&pid, "sh", nullptr, nullptr, spawn_argv, environ) == 0) {
    failures += WaitFor(pid, "posix_spawnp") != 0;
  } else {
    std::printf("posix_spawnp failed\n");
    ++failures;
  }

  const std::string body = Fetch(url);
  std::printf("parent fetched %zu bytes: %s", body.size(), body.c_str());
  failures += body.empty();
  std::printf("parent ends with %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}

// A daemon that closes every fd, for the invisibility tests.
//
//   fd_closing_daemon DIR PORT [close|close_range]
//
// Double-forks (the first child calls setsid and exits, the parent waits for it and exits
// 0). The grandchild talks once to the echo server on 127.0.0.1:PORT, then closes fds
// 0..1023 one by one with close() (or all of them at once with close_range(0, ~0U, 0)) —
// whatever a preload library had open goes too — and reopens /dev/null as 0, 1, 2. It then opens DIR/daemon.out and four DIR/aux<i> files
// (taking the lowest free fd numbers, where a preload library's old fd used to be), connects
// to the echo server again and does 20 exchanges, writing one line per exchange to
// daemon.out; the aux files get one line each. Every line written is fixed, so the files'
// contents are known exactly. Last, it renames daemon.out to DIR/daemon.done: the sign that
// it finished.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t put = write(fd, data.data() + done, data.size() - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    done += static_cast<size_t>(put);
  }
  return true;
}

// Sends `message` and reads the echo back; true if it is the same bytes.
bool Exchange(int fd, const std::string& message) {
  if (!WriteAll(fd, message)) return false;
  std::string echo(message.size(), '\0');
  size_t done = 0;
  while (done < echo.size()) {
    const ssize_t got = read(fd, echo.data() + done, echo.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    done += static_cast<size_t>(got);
  }
  return echo == message;
}

[[noreturn]] void Daemon(const std::string& dir, int port, bool use_close_range) {
  // Before closing: a first exchange, so a preload library is connected and busy.
  int fd = Connect(port);
  const bool first_ok = fd >= 0 && Exchange(fd, "hello before closing\n");
  usleep(100 * 1000);

  if (use_close_range) {
    if (close_range(0, ~0U, 0) != 0) _exit(9);
  } else {
    for (int i = 0; i < 1024; ++i) close(i);
  }
  const int null_fd = open("/dev/null", O_RDWR);
  if (null_fd != 0 || dup(0) != 1 || dup(0) != 2) _exit(10);

  const std::string out_path = dir + "/daemon.out";
  const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0) _exit(11);
  int aux[4];
  for (int i = 0; i < 4; ++i) {
    aux[i] = open((dir + "/aux" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                  0644);
    if (aux[i] < 0) _exit(12);
  }
  WriteAll(out, std::string("first exchange ") + (first_ok ? "ok" : "failed") + "\n");

  fd = Connect(port);
  WriteAll(out, std::string("connect ") + (fd >= 0 ? "ok" : "failed") + "\n");
  for (int i = 0; fd >= 0 && i < 20; ++i) {
    const std::string message =
        "message " + std::to_string(i) + " from the daemon " + std::string(i * 50, 'x') + "\n";
    WriteAll(out, "exchange " + std::to_string(i) + (Exchange(fd, message) ? " ok\n" : " wrong\n"));
    usleep(20 * 1000);  // time for a preload library's background thread to act
  }
  if (fd >= 0) close(fd);
  for (int i = 0; i < 4; ++i) {
    WriteAll(aux[i], "aux file " + std::to_string(i) + "\n");
    close(aux[i]);
  }
  WriteAll(out, "daemon done\n");
  close(out);
  rename(out_path.c_str(), (dir + "/daemon.done").c_str());
  _exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: fd_closing_daemon DIR PORT [close|close_range]\n");
    return 2;
  }
  const bool use_close_range = argc == 4 && std::strcmp(argv[3], "close_range") == 0;
  const std::string dir = argv[1];
  const int port = std::atoi(argv[2]);
  std::printf("daemon starting\n");
  std::fflush(stdout);
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    setsid();
    const pid_t grandchild = fork();
    if (grandchild < 0) _exit(1);
    if (grandchild == 0) Daemon(dir, port, use_close_range);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  std::printf("first child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

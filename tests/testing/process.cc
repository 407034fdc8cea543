#include "tests/testing/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace reptrace::testing {
namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void Redirect(const std::string& path, int target_fd, int flags) {
  if (path.empty()) return;  // keep the test's own
  int fd = open(path.c_str(), flags, 0644);
  if (fd < 0) _exit(126);
  dup2(fd, target_fd);
  close(fd);
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  // Build argv and envp before forking: the child must not allocate.
  std::vector<std::string> env_strings;
  for (char** e = options.clear_env ? nullptr : environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    std::string key = entry.substr(0, entry.find('='));
    bool dropped = options.env.count(key) > 0;
    for (const auto& u : options.unset_env) dropped |= (u == key);
    if (!dropped) env_strings.push_back(entry);
  }
  for (const auto& [key, value] : options.env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (auto& s : args) c_argv.push_back(s.data());
  c_argv.push_back(nullptr);

  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);  // its own group, so Stop() reaches its children too
    Redirect(options.stdin_path, 0, O_RDONLY);
    Redirect(options.stdout_path, 1, O_WRONLY | O_CREAT | O_TRUNC);
    Redirect(options.stderr_path, 2, O_WRONLY | O_CREAT | O_TRUNC);
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(126);
    execvpe(c_argv[0], c_argv.data(), envp.data());
    _exit(127);
  }
}

Process::~Process() {
  if (started() && !exit_code_) Stop(absl::Seconds(3));
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), exit_code_(other.exit_code_) {
  other.pid_ = -1;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (started() && !exit_code_) Stop(absl::Seconds(3));
    pid_ = other.pid_;
    exit_code_ = other.exit_code_;
    other.pid_ = -1;
  }
  return *this;
}

bool Process::Running() {
  if (!started() || exit_code_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = DecodeWaitStatus(status);
    return false;
  }
  return true;
}

std::optional<int> Process::Wait(absl::Duration timeout) {
  if (!started()) return std::nullopt;
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() > deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return exit_code_;
}

void Process::Kill(int signal) {
  if (started() && !exit_code_) {
    kill(-pid_, signal);
    kill(pid_, signal);
  }
}

int Process::Stop(absl::Duration grace) {
  if (!started()) return -1;
  if (exit_code_) return *exit_code_;
  Kill(SIGTERM);
  if (auto code = Wait(grace)) return *code;
  Kill(SIGKILL);
  auto code = Wait(absl::Seconds(10));
  return code ? *code : -1;
}

CommandResult RunCommand(const std::vector<std::string>& argv, ProcessOptions options,
                         absl::Duration timeout) {
  const std::string dir = MakeTempDir("reptrace-cmd");
  options.stdout_path = dir + "/out";
  options.stderr_path = dir + "/err";
  CommandResult result;
  {
    Process process(argv, options);
    auto code = process.Wait(timeout);
    result.timed_out = !code.has_value();
    result.exit_code = code ? *code : process.Stop(absl::Seconds(1));
  }
  result.out = ReadFile(dir + "/out");
  result.err = ReadFile(dir + "/err");
  RemoveTree(dir);
  return result;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::optional<std::string> FindLine(const std::string& path, const std::string& needle) {
  const std::string text = ReadFile(path);
  size_t start = 0;
  size_t newline;
  while ((newline = text.find('\n', start)) != std::string::npos) {
    std::string line = text.substr(start, newline - start);
    if (line.find(needle) != std::string::npos) return line;
    start = newline + 1;
  }
  return std::nullopt;
}

std::string WaitForLine(Process& process, const std::string& path, const std::string& needle,
                        absl::Duration timeout) {
  std::optional<std::string> line;
  WaitUntil(
      [&] {
        const bool running = process.Running();
        line = FindLine(path, needle);  // after the exit check: an exited child wrote all
        return line.has_value() || !running;
      },
      timeout, absl::Milliseconds(10));
  return line.value_or("");
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + prefix + ".XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  chmod(buffer.data(), 0755);  // hooked processes of other users (nginx workers) enter it
  return buffer.data();
}

void RemoveTree(const std::string& path) {
  std::error_code ignored;
  if (!path.empty()) std::filesystem::remove_all(path, ignored);
}

int ConnectUnix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

BoundPort::BoundPort() {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port_ = ntohs(addr.sin_port);
  }
}

BoundPort::~BoundPort() {
  if (fd_ >= 0) close(fd_);
}

bool WaitForPort(int port, absl::Duration timeout) {
  return WaitUntil(
      [port] {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<uint16_t>(port));
        bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
        close(fd);
        return ok;
      },
      timeout);
}

}  // namespace reptrace::testing

// The reptrace-controller binary, run as a child process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_database.h"

namespace {

using ::testing::HasSubstr;

std::string ControllerPath() {
  const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
  return std::string(build_dir != nullptr ? build_dir : ".") +
         "/controller/reptrace-controller";
}

// A child process with its stderr on a pipe; killed and reaped on destruction if the
// test did not wait for it.
class Controller {
 public:
  explicit Controller(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDERR_FILENO);
      std::vector<char*> argv;
      std::string path = ControllerPath();
      argv.push_back(path.data());
      std::vector<std::string> copy = args;
      for (std::string& arg : copy) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(path.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    stderr_fd_ = fds[0];
  }
  ~Controller() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stderr_fd_ >= 0) close(stderr_fd_);
  }

  bool started() const { return pid_ > 0; }

  // Reads stderr until a line contains `needle` (returns that line) or `timeout` passes
  // or stderr closes (returns "").
  std::string WaitForLine(const std::string& needle, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      size_t newline;
      while ((newline = output_.find('\n', scanned_)) != std::string::npos) {
        std::string line = output_.substr(scanned_, newline - scanned_);
        scanned_ = newline + 1;
        if (line.find(needle) != std::string::npos) return line;
      }
      if (!ReadSome(deadline)) return "";
    }
    return "";
  }

  // Waits for exit; returns the exit code, or -1 on timeout or a signal death.
  int WaitForExit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (ReadSome(deadline)) {
    }
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      usleep(20'000);
    }
    return -1;
  }

  void Signal(int signal_number) { kill(pid_, signal_number); }
  const std::string& output() const { return output_; }

 private:
  // Reads what is available before `deadline`; false at end of file or deadline.
  bool ReadSome(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{stderr_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[4096];
    const ssize_t n = read(stderr_fd_, buffer, sizeof(buffer));
    if (n <= 0) return false;
    output_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  std::string output_;
  size_t scanned_ = 0;
};

TEST(ControllerMainTest, AWrongDatabaseIsOneClearLineAndExitCodeOne) {
  Controller controller({"--listen", "127.0.0.1:0", "--db",
                         "host=127.0.0.1 port=1 dbname=nothing connect_timeout=3"});
  ASSERT_TRUE(controller.started());

  const int code = controller.WaitForExit(std::chrono::seconds(30));

  EXPECT_EQ(code, 1);
  std::vector<std::string> lines =
      absl::StrSplit(controller.output(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << controller.output();
  EXPECT_THAT(lines[0], HasSubstr("cannot connect to database: "));
}

TEST(ControllerMainTest, ListensOnTheRealPortAndStopsOnSigterm) {
  reptrace::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  Controller controller({"--listen", "127.0.0.1:0", "--db", db.conninfo()});
  ASSERT_TRUE(controller.started());

  const std::string line = controller.WaitForLine("listening on ", std::chrono::seconds(30));
  ASSERT_FALSE(line.empty()) << controller.output();
  const std::string address = line.substr(line.find("listening on ") + 13);
  ASSERT_EQ(address.rfind("127.0.0.1:", 0), 0u) << line;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(address.substr(10), &port)) << line;
  ASSERT_GT(port, 0);

  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << "nothing listens on " << address;
  close(fd);

  controller.Signal(SIGTERM);
  EXPECT_EQ(controller.WaitForExit(std::chrono::seconds(20)), 0) << controller.output();
  EXPECT_THAT(controller.output(), HasSubstr("shutting down"));
}

}  // namespace

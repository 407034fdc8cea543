// Runs the reptrace-agent binary between a test client on its Unix socket and a real
// in-process IngestService.
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/testing/hook_script.h"
#include "agent/testing/recording_ingest.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

using testing::AsBytes;
using testing::HookScript;
using testing::TestController;

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(15)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return condition();
}

// The agent as a child process; killed in the destructor if still running.
class AgentProcess {
 public:
  AgentProcess(const std::vector<std::string>& args, const std::string& log_path) {
    const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
    const std::string binary = absl::StrCat(build_dir ? build_dir : ".", "/agent/reptrace-agent");
    pid_ = fork();
    if (pid_ == 0) {
      FILE* log = std::fopen(log_path.c_str(), "w");
      if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~AgentProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Sends `signal` and returns the exit status (-1 if it did not exit within `timeout`).
  int StopWith(int signal, absl::Duration timeout) {
    kill(pid_, signal);
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return -1;
  }
  bool running() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<v1::Span> ReceivedSpans(const TestController& controller) {
  std::vector<v1::Span> spans;
  for (const v1::AgentMessage& m : controller.service().messages()) {
    if (m.has_batch()) spans.insert(spans.end(), m.batch().spans().begin(), m.batch().spans().end());
  }
  return spans;
}

class AgentBinaryTest : public ::testing::Test {
 protected:
  static std::string MakeTempDir() {
    char dir[] = "/tmp/reptrace-agent-binary-test-XXXXXX";
    return mkdtemp(dir);
  }
  ~AgentBinaryTest() override { std::filesystem::remove_all(dir_); }

  // Writes one whole HTTP exchange of a hooked server process, and disconnects.
  void RunHookedExchange(const std::string& path) {
    const int fd = ConnectUnix(socket_path_);
    ASSERT_GE(fd, 0);
    HookScript script(555);
    std::string bytes = AsBytes(script.Hello("web", "nginx"));
    bytes += AsBytes(script.Accept(1, 9, 1000));
    bytes += AsBytes(script.Recv(1, 9, 2000, "GET " + path + " HTTP/1.1\r\n\r\n"));
    bytes += AsBytes(script.Send(1, 9, 3000, "HTTP/1.1 200 OK\r\n\r\n"));
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(fd);
  }

  const std::string dir_ = MakeTempDir();
  const std::string socket_path_ = dir_ + "/run/reptrace/agent.sock";
  const std::string log_path_ = dir_ + "/agent.log";
};

TEST_F(AgentBinaryTest, DeliversTheSpansOfHookedProcessesToTheController) {
  TestController controller(/*ack=*/true);
  ASSERT_TRUE(controller.started());
  AgentProcess agent({"--socket", socket_path_, "--controller", controller.address(),
                      "--node=node-7", "--batch-interval-ms", "20", "--buffer-spans=1000",
                      "--batch-max-spans=10"},
                     log_path_);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(socket_path_); }))
      << ReadFile(log_path_);
  RunHookedExchange("/hello");
  ASSERT_TRUE(WaitFor([&] { return ReceivedSpans(controller).size() == 1; }))
      << ReadFile(log_path_);
  const v1::Span span = ReceivedSpans(controller)[0];
  EXPECT_EQ(span.name(), "GET /hello");
  EXPECT_EQ(span.node(), "node-7");
  EXPECT_EQ(span.service(), "web");
  EXPECT_EQ(span.pid(), 555u);
  const std::vector<v1::AgentMessage> messages = controller.service().messages();
  ASSERT_TRUE(messages[0].has_hello());
  const std::string agent_id = messages[0].hello().agent_id();
  EXPECT_EQ(agent_id.size(), 36u);

  EXPECT_EQ(agent.StopWith(SIGTERM, absl::Seconds(5)), 0);
  const std::string log = ReadFile(log_path_);
  EXPECT_NE(log.find(absl::StrCat("I agent] agent ", agent_id, " node node-7 listening on ",
                                  socket_path_, ", controller ", controller.address())),
            std::string::npos)
      << log;
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
}

TEST_F(AgentBinaryTest, SigtermFlushesWhatIsBuffered) {
  TestController controller(/*ack=*/true);
  // Batches would only leave by time after an hour: what arrives came with the final flush.
  AgentProcess agent({"--socket", socket_path_, "--controller", controller.address(),
                      "--batch-interval-ms", "3600000"},
                     log_path_);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(socket_path_); }));
  RunHookedExchange("/last-words");
  absl::SleepFor(absl::Milliseconds(200));  // let the agent read it
  EXPECT_TRUE(ReceivedSpans(controller).empty());
  EXPECT_EQ(agent.StopWith(SIGINT, absl::Seconds(5)), 0);
  const std::vector<v1::Span> spans = ReceivedSpans(controller);
  ASSERT_EQ(spans.size(), 1u) << ReadFile(log_path_);
  EXPECT_EQ(spans[0].name(), "GET /last-words");
}

TEST_F(AgentBinaryTest, StopsWithinTheFlushBoundWhenTheControllerIsDown) {
  std::string address;
  {
    TestController gone(/*ack=*/true);
    address = gone.address();
  }
  AgentProcess agent({"--socket", socket_path_, "--controller", address}, log_path_);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(socket_path_); }));
  RunHookedExchange("/nobody-listens");
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  EXPECT_EQ(agent.StopWith(SIGTERM, absl::Seconds(10)), 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST_F(AgentBinaryTest, RefusesAnUnusableSocketPath) {
  std::filesystem::create_directories(dir_ + "/file");
  AgentProcess agent({"--socket", dir_ + "/file", "--controller", "127.0.0.1:1"}, log_path_);
  ASSERT_TRUE(WaitFor([&] { return !agent.running(); }, absl::Seconds(10)));
  EXPECT_NE(ReadFile(log_path_).find("cannot listen"), std::string::npos) << ReadFile(log_path_);
}

}  // namespace
}  // namespace reptrace

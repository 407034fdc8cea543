// Runs the reptrace-agent binary between a test client on its Unix socket and a real
// in-process IngestService.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/testing/hook_script.h"
#include "agent/testing/recording_ingest.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

using testing::AsBytes;
using testing::ConnectUnix;
using testing::HookScript;
using testing::Process;
using testing::ReadFile;
using testing::TestController;
using testing::WaitUntil;

constexpr absl::Duration kWait = absl::Seconds(15);
constexpr absl::Duration kPoll = absl::Milliseconds(10);

// The agent as a child process (stopped in the destructor if still running), its stderr in
// `log_path`.
Process StartAgent(const std::vector<std::string>& args, const std::string& log_path) {
  const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
  std::vector<std::string> argv = {
      absl::StrCat(build_dir ? build_dir : ".", "/agent/reptrace-agent")};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::ProcessOptions options;
  options.stdout_path = "";  // the test's own
  options.stderr_path = log_path;
  return Process(argv, options);
}

// Sends `signal` and returns the exit status (-1 if it did not exit within `timeout`).
int StopWith(Process& agent, int signal, absl::Duration timeout) {
  agent.Kill(signal);
  return agent.Wait(timeout).value_or(-1);
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
  ~AgentBinaryTest() override { testing::RemoveTree(dir_); }

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

  const std::string dir_ = testing::MakeTempDir("reptrace-agent-binary-test");
  const std::string socket_path_ = dir_ + "/run/reptrace/agent.sock";
  const std::string log_path_ = dir_ + "/agent.log";
};

TEST_F(AgentBinaryTest, DeliversTheSpansOfHookedProcessesToTheController) {
  TestController controller(/*ack=*/true);
  ASSERT_TRUE(controller.started());
  Process agent = StartAgent({"--socket", socket_path_, "--controller", controller.address(),
                                "--node=node-7", "--batch-interval-ms", "20",
                                "--buffer-spans=1000", "--buffer-mib=8",
                                "--batch-max-spans=10"},
                               log_path_);
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(socket_path_); }, kWait, kPoll))
      << ReadFile(log_path_);
  RunHookedExchange("/hello");
  ASSERT_TRUE(WaitUntil([&] { return ReceivedSpans(controller).size() == 1; }, kWait, kPoll))
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

  EXPECT_EQ(StopWith(agent, SIGTERM, absl::Seconds(5)), 0);
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
  Process agent = StartAgent({"--socket", socket_path_, "--controller", controller.address(),
                                "--batch-interval-ms", "3600000"},
                               log_path_);
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(socket_path_); }, kWait, kPoll));
  RunHookedExchange("/last-words");
  absl::SleepFor(absl::Milliseconds(200));  // let the agent read it
  EXPECT_TRUE(ReceivedSpans(controller).empty());
  EXPECT_EQ(StopWith(agent, SIGINT, absl::Seconds(5)), 0);
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
  Process agent = StartAgent({"--socket", socket_path_, "--controller", address}, log_path_);
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(socket_path_); }, kWait, kPoll));
  RunHookedExchange("/nobody-listens");
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  EXPECT_EQ(StopWith(agent, SIGTERM, absl::Seconds(10)), 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST_F(AgentBinaryTest, RefusesAnUnusableSocketPath) {
  std::filesystem::create_directories(dir_ + "/file");
  Process agent =
      StartAgent({"--socket", dir_ + "/file", "--controller", "127.0.0.1:1"}, log_path_);
  ASSERT_TRUE(WaitUntil([&] { return !agent.Running(); }, absl::Seconds(10), kPoll));
  EXPECT_NE(ReadFile(log_path_).find("cannot listen"), std::string::npos) << ReadFile(log_path_);
}

TEST_F(AgentBinaryTest, ABufferBoundThatIsNotPositiveIsAClearError) {
  for (const char* flag : {"--buffer-mib=0", "--buffer-spans=-1"}) {
    const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
    const testing::CommandResult result = testing::RunCommand(
        {absl::StrCat(build_dir ? build_dir : ".", "/agent/reptrace-agent"), "--socket",
         socket_path_, flag},
        {}, absl::Seconds(10));
    EXPECT_EQ(result.exit_code, 2) << flag;
    EXPECT_NE(result.err.find("must be positive"), std::string::npos) << result.err;
  }
}

}  // namespace
}  // namespace reptrace

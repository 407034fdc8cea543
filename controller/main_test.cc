// The reptrace-controller binary, run as a child process.
#include <signal.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"
#include "tests/testing/test_database.h"

namespace {

using ::reptrace::testing::Process;
using ::testing::HasSubstr;

std::string ControllerPath() {
  const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
  return std::string(build_dir != nullptr ? build_dir : ".") +
         "/controller/reptrace-controller";
}

// The controller as a child process, its stderr in a file we read while it runs; stopped
// on destruction if the test did not wait for it.
class Controller {
 public:
  explicit Controller(const std::vector<std::string>& args)
      : dir_(reptrace::testing::MakeTempDir("reptrace-controller-main-test")),
        stderr_path_(dir_ + "/stderr") {
    std::vector<std::string> argv = {ControllerPath()};
    argv.insert(argv.end(), args.begin(), args.end());
    reptrace::testing::ProcessOptions options;
    options.stdout_path = "";  // the test's own
    options.stderr_path = stderr_path_;
    process_ = Process(argv, options);
  }
  ~Controller() {
    process_ = Process();  // stops it
    reptrace::testing::RemoveTree(dir_);
  }

  bool started() const { return !dir_.empty() && process_.started(); }
  Process& process() { return process_; }
  std::string output() const { return reptrace::testing::ReadFile(stderr_path_); }
  // The first stderr line containing `needle`; "" if it exits or `timeout` passes first.
  std::string WaitForLine(const std::string& needle, absl::Duration timeout) {
    return reptrace::testing::WaitForLine(process_, stderr_path_, needle, timeout);
  }

 private:
  const std::string dir_;
  const std::string stderr_path_;
  Process process_;
};

TEST(ControllerMainTest, AWrongDatabaseIsOneClearLineAndExitCodeOne) {
  Controller controller({"--listen", "127.0.0.1:0", "--db",
                         "host=127.0.0.1 port=1 dbname=nothing connect_timeout=3"});
  ASSERT_TRUE(controller.started());

  const int code = controller.process().Wait(absl::Seconds(30)).value_or(-1);

  EXPECT_EQ(code, 1);
  std::vector<std::string> lines =
      absl::StrSplit(controller.output(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << controller.output();
  EXPECT_THAT(lines[0], HasSubstr("cannot connect to database: "));
}

TEST(ControllerMainTest, ANonPositiveSamplingDecisionWaitIsRefused) {
  Controller controller({"--listen", "127.0.0.1:0", "--sampling_decision_wait=0s", "--db",
                         "host=127.0.0.1 port=1 dbname=nothing connect_timeout=3"});
  ASSERT_TRUE(controller.started());

  const int code = controller.process().Wait(absl::Seconds(30)).value_or(-1);

  EXPECT_EQ(code, 1);
  std::vector<std::string> lines =
      absl::StrSplit(controller.output(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << controller.output();
  EXPECT_THAT(lines[0], HasSubstr("--sampling_decision_wait must be positive"));
}

TEST(ControllerMainTest, HelpExplainsTheSamplingDecisionWait) {
  const std::string dir = reptrace::testing::MakeTempDir("reptrace-controller-help-test");
  reptrace::testing::ProcessOptions options;
  options.stdout_path = dir + "/stdout";
  options.stderr_path = dir + "/stderr";
  Process help({ControllerPath(), "--help"}, options);
  help.Wait(absl::Seconds(30));
  const std::string text = reptrace::testing::ReadFile(dir + "/stdout") +
                           reptrace::testing::ReadFile(dir + "/stderr");
  reptrace::testing::RemoveTree(dir);

  EXPECT_THAT(text, HasSubstr("--sampling_decision_wait"));
  EXPECT_THAT(text, HasSubstr("default: 5s"));
  EXPECT_THAT(text, HasSubstr("batch interval"));
}

TEST(ControllerMainTest, ListensOnTheRealPortAndStopsOnSigterm) {
  reptrace::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  Controller controller({"--listen", "127.0.0.1:0", "--db", db.conninfo()});
  ASSERT_TRUE(controller.started());

  const std::string line = controller.WaitForLine("listening on ", absl::Seconds(30));
  ASSERT_FALSE(line.empty()) << controller.output();
  const std::string address = line.substr(line.find("listening on ") + 13);
  ASSERT_EQ(address.rfind("127.0.0.1:", 0), 0u) << line;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(address.substr(10), &port)) << line;
  ASSERT_GT(port, 0);

  // One connection attempt, now.
  EXPECT_TRUE(reptrace::testing::WaitForPort(port, absl::ZeroDuration()))
      << "nothing listens on " << address;

  controller.process().Kill(SIGTERM);
  EXPECT_EQ(controller.process().Wait(absl::Seconds(20)).value_or(-1), 0)
      << controller.output();
  EXPECT_THAT(controller.output(), HasSubstr("shutting down"));
}

}  // namespace

// Child processes for integration tests: started with fork/exec, output to files, and always
// stopped (SIGTERM, then SIGKILL) when the owning object goes away, even if a test fails.
#ifndef REPTRACE_TESTS_TESTING_PROCESS_H_
#define REPTRACE_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reptrace::testing {

struct ProcessOptions {
  std::map<std::string, std::string> env;  // added to (or replacing in) the test's own
  std::vector<std::string> unset_env;
  // Start from an empty environment instead of the test's own: the child gets `env` only.
  bool clear_env = false;
  // Files (or devices, e.g. a pseudo-terminal) for the standard streams; an empty path
  // leaves the stream the test's own.
  std::string stdout_path = "/dev/null";
  std::string stderr_path = "/dev/null";
  std::string stdin_path = "/dev/null";
  std::string cwd;
};

class Process {
 public:
  Process() = default;
  Process(const std::vector<std::string>& argv, const ProcessOptions& options);
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  // Still running (not yet reaped)?
  bool Running();
  // Waits up to `timeout` for the exit; returns the exit code (128+signal if killed), or
  // nullopt on time-out.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, then SIGKILL after `grace`; returns the exit code.
  int Stop(absl::Duration grace = absl::Seconds(5));
  void Kill(int signal);

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

struct CommandResult {
  int exit_code = -1;
  bool timed_out = false;  // killed because it did not finish within the time-out
  std::string out;
  std::string err;
};

// Runs argv to completion (killed after `timeout`), capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv, ProcessOptions options = {},
                         absl::Duration timeout = absl::Seconds(60));

std::string ReadFile(const std::string& path);
// The first complete (newline-terminated) line of the file at `path` that contains
// `needle`, without its newline; nullopt if there is none yet.
std::optional<std::string> FindLine(const std::string& path, const std::string& needle);
// Waits for such a line in a file a running child writes (its stdout or stderr); "" if
// `process` exits without writing one or the time-out passes.
std::string WaitForLine(Process& process, const std::string& path, const std::string& needle,
                        absl::Duration timeout);
// A fresh directory under $TMPDIR or /tmp, removed by the caller with RemoveTree.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);
// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();
// A stream socket connected to the Unix socket at `path` (close-on-exec), or -1.
int ConnectUnix(const std::string& path);
// A TCP port on 127.0.0.1 held bound but not listening while the object lives: connections
// to it are refused (until the test calls listen(fd(), ...)), and no other process can take
// it meanwhile. port() is 0 if binding failed.
class BoundPort {
 public:
  BoundPort();
  ~BoundPort();
  BoundPort(const BoundPort&) = delete;
  BoundPort& operator=(const BoundPort&) = delete;
  int fd() const { return fd_; }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};
// Polls until something accepts on 127.0.0.1:port or the time-out passes.
bool WaitForPort(int port, absl::Duration timeout);
// Polls `predicate` every `interval` until it returns true or the time-out passes.
template <typename Predicate>
bool WaitUntil(Predicate predicate, absl::Duration timeout,
               absl::Duration interval = absl::Milliseconds(50));

}  // namespace reptrace::testing

#include "absl/time/clock.h"

namespace reptrace::testing {
template <typename Predicate>
bool WaitUntil(Predicate predicate, absl::Duration timeout, absl::Duration interval) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(interval);
  }
}
}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_TESTING_PROCESS_H_

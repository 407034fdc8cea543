// A whole reptrace stack for integration tests: a fresh PostgreSQL database (TestDatabase),
// the real reptrace-controller and reptrace-agent binaries on private ports and sockets,
// helpers to run real programs under the hook and to query through the real reptracectl.
// Everything is stopped and removed when the Stack goes away, even after a failed test.
#ifndef REPTRACE_TESTS_INTEGRATION_STACK_H_
#define REPTRACE_TESTS_INTEGRATION_STACK_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/testing/process.h"
#include "tests/testing/test_database.h"

namespace reptrace::testing {

// Paths of the built artefacts, from $REPTRACE_BUILD_DIR (set by ctest).
std::string BuildPath(const std::string& relative);

// The last `lines` lines of `text` (for failure messages that show a log's end).
std::string Tail(const std::string& text, int lines);

// Runs reptracectl with ARGS (its --controller given) wherever the caller's processes run.
using CtlRunner = std::function<CommandResult(const std::vector<std::string>& args)>;
// reptracectl ARGS --json through `ctl`, parsed; a null json if it failed.
nlohmann::json CtlJsonVia(const CtlRunner& ctl, std::vector<std::string> args);
// Traces that hold a span of `service` (all if empty), newest first; [] if it failed.
nlohmann::json TracesVia(const CtlRunner& ctl, const std::string& service, int limit);

class Stack {
 public:
  Stack();
  ~Stack();

  // Starts the controller on 127.0.0.1:`port` (0 = any) with `extra_flags` after the
  // usual ones; false if it did not come up.
  bool StartController(int port = 0, const std::vector<std::string>& extra_flags = {});
  // Another controller replica on the same database, on a port of its own: its address,
  // "" if it did not come up. Stopped with the stack.
  std::string StartControllerReplica();
  // Sends `signal` to the controller and waits for it to exit.
  void StopController(int signal);
  bool StartAgent(const std::vector<std::string>& extra_flags = {});
  void StopAgent(int signal);

  const std::string& dir() const { return dir_; }
  const std::string& controller_address() const { return controller_address_; }
  int controller_port() const { return controller_port_; }
  std::string socket_path() const { return dir_ + "/agent.sock"; }
  const std::string& db_conninfo() const { return db_.conninfo(); }

  // Environment that puts a program under the hook, reporting to this stack's agent.
  std::map<std::string, std::string> HookEnv(const std::string& service = "") const;
  Process StartTraced(const std::vector<std::string>& argv, const std::string& log_name,
                      const std::string& service = "");
  CommandResult RunTraced(const std::vector<std::string>& argv,
                          const std::string& service = "");

  // reptracectl --controller <ours> ARGS.
  CommandResult Ctl(const std::vector<std::string>& args);
  // reptracectl ... --json, parsed; a null json if it failed.
  nlohmann::json CtlJson(std::vector<std::string> args);

  // Starts python3's http.server on a free port, serving `root`, traced; returns its port.
  // `extra_args` go after the module name (e.g. "--cgi").
  int StartPythonServer(const std::string& root, const std::string& service = "",
                        const std::vector<std::string>& extra_args = {});
  // Starts nginx (one worker, traced, with `extra_env` too) with `server_block` inside
  // http {}; the text "$PORT" in it is replaced by a free port, which is returned.
  int StartNginx(const std::string& server_block,
                 const std::map<std::string, std::string>& extra_env = {});

  // Traces that hold a span of `service`, newest first (reptracectl traces --json).
  nlohmann::json Traces(const std::string& service, int limit = 100);
  nlohmann::json Trace(const std::string& trace_id);

  // The last lines of the controller's and agent's logs, for failure messages.
  std::string Logs() const;

 private:
  bool LaunchController(int port, const std::vector<std::string>& extra_flags,
                        Process* process, int* bound_port);

  TestDatabase db_;
  std::string dir_;
  Process controller_;
  Process agent_;
  std::vector<Process> replicas_;
  std::vector<Process> services_;
  std::string controller_address_;
  int controller_port_ = 0;
  int controller_starts_ = 0;
};

}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_INTEGRATION_STACK_H_

#include "tests/integration/stack.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace reptrace::testing {

std::string Tail(const std::string& text, int lines) {
  std::vector<std::string> all = absl::StrSplit(text, '\n');
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
       i < all.size(); ++i) {
    absl::StrAppend(&out, all[i], "\n");
  }
  return out;
}

std::string BuildPath(const std::string& relative) {
  // ctest sets REPTRACE_BUILD_DIR; run by hand, the test falls back to the build tree it
  // was compiled in. Always absolute: traced programs run in other directories.
  const char* build = std::getenv("REPTRACE_BUILD_DIR");
  return absl::StrCat(build != nullptr ? build : REPTRACE_DEFAULT_BUILD_DIR, "/", relative);
}

Stack::Stack() : dir_(MakeTempDir("reptrace-it")) {}

Stack::~Stack() {
  for (auto& service : services_) service.Stop(absl::Seconds(3));
  agent_.Stop(absl::Seconds(3));
  controller_.Stop(absl::Seconds(3));
  for (auto& replica : replicas_) replica.Stop(absl::Seconds(3));
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- logs of the failed test's stack ----\n" << Logs();
  }
  RemoveTree(dir_);
}

bool Stack::LaunchController(int port, const std::vector<std::string>& extra_flags,
                             Process* process, int* bound_port) {
  if (!db_.ok()) return false;
  const std::string log = absl::StrCat(dir_, "/controller.", ++controller_starts_, ".log");
  ProcessOptions options;
  options.stderr_path = log;
  options.stdout_path = log + ".out";
  std::vector<std::string> argv = {BuildPath("controller/reptrace-controller"), "--listen",
                                  absl::StrCat("127.0.0.1:", port), "--db", db_.conninfo()};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  *process = Process(argv, options);
  static const std::regex kListening("listening on ([0-9.]+):([0-9]+)");
  bool up = WaitUntil(
      [&] {
        std::smatch match;
        std::string text = ReadFile(log);
        if (std::regex_search(text, match, kListening)) {
          *bound_port = std::stoi(match[2]);
          return true;
        }
        return !process->Running();
      },
      absl::Seconds(30));
  if (!up || !process->Running()) {
    ADD_FAILURE() << "controller did not start:\n" << ReadFile(log);
    return false;
  }
  return true;
}

bool Stack::StartController(int port, const std::vector<std::string>& extra_flags) {
  if (!LaunchController(port, extra_flags, &controller_, &controller_port_)) return false;
  controller_address_ = absl::StrCat("127.0.0.1:", controller_port_);
  return true;
}

std::string Stack::StartControllerReplica() {
  replicas_.emplace_back();
  int port = 0;
  if (!LaunchController(0, {}, &replicas_.back(), &port)) return "";
  return absl::StrCat("127.0.0.1:", port);
}

void Stack::StopController(int signal) {
  controller_.Kill(signal);
  controller_.Wait(absl::Seconds(10));
  controller_.Stop();
}

bool Stack::StartAgent(const std::vector<std::string>& extra_flags) {
  ProcessOptions options;
  options.stderr_path = dir_ + "/agent.log";
  std::vector<std::string> argv = {BuildPath("agent/reptrace-agent"), "--socket",
                                   socket_path(), "--controller", controller_address_,
                                   "--node", "it-node"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  agent_ = Process(argv, options);
  bool up = WaitUntil(
      [&] {
        struct stat st;
        return (stat(socket_path().c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ||
               !agent_.Running();
      },
      absl::Seconds(20));
  if (!up || !agent_.Running()) {
    ADD_FAILURE() << "agent did not start:\n" << ReadFile(dir_ + "/agent.log");
    return false;
  }
  return true;
}

void Stack::StopAgent(int signal) {
  agent_.Kill(signal);
  agent_.Wait(absl::Seconds(10));
  agent_.Stop();
}

std::map<std::string, std::string> Stack::HookEnv(const std::string& service) const {
  std::map<std::string, std::string> env = {
      {"LD_PRELOAD", BuildPath("hook/libreptrace.so")},
      {"REPTRACE_SOCKET", socket_path()},
  };
  if (!service.empty()) env["REPTRACE_SERVICE"] = service;
  return env;
}

Process Stack::StartTraced(const std::vector<std::string>& argv, const std::string& log_name,
                           const std::string& service) {
  ProcessOptions options;
  options.env = HookEnv(service);
  if (service.empty()) options.unset_env.push_back("REPTRACE_SERVICE");
  options.stdout_path = absl::StrCat(dir_, "/", log_name, ".out");
  options.stderr_path = absl::StrCat(dir_, "/", log_name, ".err");
  return Process(argv, options);
}

CommandResult Stack::RunTraced(const std::vector<std::string>& argv,
                               const std::string& service) {
  ProcessOptions options;
  options.env = HookEnv(service);
  if (service.empty()) options.unset_env.push_back("REPTRACE_SERVICE");
  return RunCommand(argv, options);
}

CommandResult Stack::Ctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BuildPath("cli/reptracectl"), "--controller",
                                   controller_address_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, {}, absl::Seconds(30));
}

nlohmann::json CtlJsonVia(const CtlRunner& ctl, std::vector<std::string> args) {
  args.push_back("--json");
  CommandResult result = ctl(args);
  if (result.exit_code != 0) return nlohmann::json();
  return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
}

nlohmann::json TracesVia(const CtlRunner& ctl, const std::string& service, int limit) {
  std::vector<std::string> args = {"traces", "--limit", std::to_string(limit)};
  if (!service.empty()) {
    args.push_back("--service");
    args.push_back(service);
  }
  nlohmann::json json = CtlJsonVia(ctl, args);
  if (!json.is_object() || !json.contains("traces")) return nlohmann::json::array();
  return json["traces"];
}

nlohmann::json Stack::CtlJson(std::vector<std::string> args) {
  return CtlJsonVia([this](const std::vector<std::string>& a) { return Ctl(a); },
                    std::move(args));
}

int Stack::StartPythonServer(const std::string& root, const std::string& service,
                             const std::vector<std::string>& extra_args) {
  const int port = FreePort();
  ProcessOptions options;
  options.env = HookEnv(service);
  if (service.empty()) options.unset_env.push_back("REPTRACE_SERVICE");
  options.cwd = root;
  options.stderr_path = absl::StrCat(dir_, "/python.", port, ".err");
  std::vector<std::string> argv = {"/usr/bin/python3", "-m", "http.server"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.insert(argv.end(), {"--bind", "127.0.0.1", std::to_string(port)});
  services_.emplace_back(argv, options);
  if (!WaitForPort(port, absl::Seconds(20))) {
    ADD_FAILURE() << "python3 http.server did not start";
    return -1;
  }
  return port;
}

int Stack::StartNginx(const std::string& server_block,
                      const std::map<std::string, std::string>& extra_env) {
  const int port = FreePort();
  const std::string prefix = absl::StrCat(dir_, "/nginx.", port);
  mkdir(prefix.c_str(), 0755);
  const std::string conf = absl::StrCat(
      "worker_processes 1;\ndaemon off;\npid ", prefix, "/nginx.pid;\nerror_log ", prefix,
      "/error.log warn;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n",
      "  client_body_temp_path ", prefix, "/body;\n  proxy_temp_path ", prefix, "/proxy;\n",
      "  fastcgi_temp_path ", prefix, "/fastcgi;\n  uwsgi_temp_path ", prefix, "/uwsgi;\n",
      "  scgi_temp_path ", prefix, "/scgi;\n",
      absl::StrReplaceAll(server_block, {{"$PORT", std::to_string(port)}}), "\n}\n");
  std::ofstream(prefix + "/nginx.conf") << conf;
  ProcessOptions options;
  options.env = HookEnv();
  options.env.insert(extra_env.begin(), extra_env.end());
  options.unset_env.push_back("REPTRACE_SERVICE");
  options.stderr_path = prefix + "/stderr.log";
  services_.emplace_back(
      std::vector<std::string>{"nginx", "-p", prefix, "-c", prefix + "/nginx.conf"}, options);
  if (!WaitForPort(port, absl::Seconds(20))) {
    ADD_FAILURE() << "nginx did not start: " << ReadFile(prefix + "/error.log")
                  << ReadFile(prefix + "/stderr.log");
    return -1;
  }
  return port;
}

nlohmann::json Stack::Traces(const std::string& service, int limit) {
  return TracesVia([this](const std::vector<std::string>& a) { return Ctl(a); }, service,
                   limit);
}

nlohmann::json Stack::Trace(const std::string& trace_id) { return CtlJson({"trace", trace_id}); }

std::string Stack::Logs() const {
  std::string out;
  for (int i = 1; i <= controller_starts_; ++i) {
    absl::StrAppend(&out, "== controller (start ", i, ") ==\n",
                    Tail(ReadFile(absl::StrCat(dir_, "/controller.", i, ".log")), 30));
  }
  absl::StrAppend(&out, "== agent ==\n", Tail(ReadFile(dir_ + "/agent.log"), 30));
  return out;
}

}  // namespace reptrace::testing

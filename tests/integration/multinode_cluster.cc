#include "tests/integration/multinode_cluster.h"

#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <regex>

#include <pqxx/pqxx>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

constexpr char kBridge[] = "br0";
constexpr char kNodeInterface[] = "eth0";

// The directory of the database server's Unix socket, so a controller in another network
// namespace reaches the server the test's conninfo names by 127.0.0.1.
absl::StatusOr<std::string> UnixSocketDirectory(const std::string& conninfo) {
  try {
    pqxx::connection conn(conninfo);
    pqxx::nontransaction tx(conn);
    const std::string dirs = tx.exec1("SHOW unix_socket_directories")[0].as<std::string>();
    const std::vector<std::string> list = absl::StrSplit(dirs, ',', absl::SkipWhitespace());
    if (list.empty()) {
      return absl::FailedPreconditionError(
          "the PostgreSQL server has no Unix socket: a controller in a network namespace "
          "cannot reach it");
    }
    return std::string(absl::StripAsciiWhitespace(list[0]));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("PostgreSQL: ", e.what()));
  }
}

}  // namespace

MultiNodeCluster::MultiNodeCluster() : dir_(MakeTempDir("reptrace-multinode")) {
  // nginx's worker runs as nobody: it must reach its node's agent socket under here.
  chmod(dir_.c_str(), 0755);
}

MultiNodeCluster::~MultiNodeCluster() {
  for (auto& service : services_) service.Stop(absl::Seconds(3));
  for (auto& node : nodes_) node.agent.Stop(absl::Seconds(3));
  controller_.Stop(absl::Seconds(3));
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- logs of the failed test's cluster ----\n" << Logs();
  }
  nodes_.clear();      // deletes the node namespaces (and their veth pairs)
  switch_ns_.reset();  // and the bridge
  for (const std::string& etc : etc_dirs_) {
    unlink((etc + "/hosts").c_str());
    rmdir(etc.c_str());
  }
  // Only if empty (another cluster running at the same time may still use it, and may
  // have been the one to make it); an empty /etc/netns means nothing to iproute2.
  rmdir("/etc/netns");
  RemoveTree(dir_);
}

std::string MultiNodeCluster::NodeName(int node) { return absl::StrCat("node-", node); }

std::string MultiNodeCluster::NodeAddress(int node) { return absl::StrCat("10.78.0.", node); }

absl::Status MultiNodeCluster::Start(int node_count) {
  if (absl::Status s = NetNamespace::Supported(); !s.ok()) return s;
  if (!db_.ok()) return absl::FailedPreconditionError("no test database");
  absl::StatusOr<std::unique_ptr<NetNamespace>> sw = NetNamespace::Create("swit");
  if (!sw.ok()) return sw.status();
  switch_ns_ = std::move(*sw);
  for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
           {"ip", "link", "add", kBridge, "type", "bridge"},
           {"ip", "addr", "add", absl::StrCat(kSwitchAddress, "/24"), "dev", kBridge},
           {"ip", "link", "set", kBridge, "up"}}) {
    if (absl::Status s = switch_ns_->Run(step); !s.ok()) return s;
  }
  for (int i = 1; i <= node_count; ++i) {
    absl::StatusOr<std::unique_ptr<NetNamespace>> ns = NetNamespace::Create(absl::StrCat("n", i));
    if (!ns.ok()) return ns.status();
    Node node;
    node.ns = std::move(*ns);
    node.dir = absl::StrCat(dir_, "/", NodeName(i));
    mkdir(node.dir.c_str(), 0755);
    // Interface names are per namespace: every node's end is "eth0", the switch's "p<i>".
    const std::string port = absl::StrCat("p", i);
    for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
             {"ip", "link", "add", port, "type", "veth", "peer", "name", kNodeInterface,
              "netns", node.ns->name()},
             {"ip", "link", "set", port, "master", kBridge},
             {"ip", "link", "set", port, "up"}}) {
      if (absl::Status s = switch_ns_->Run(step); !s.ok()) return s;
    }
    if (absl::Status s = node.ns->Run({"ip", "addr", "add", absl::StrCat(NodeAddress(i), "/24"),
                                       "dev", kNodeInterface});
        !s.ok()) {
      return s;
    }
    nodes_.push_back(std::move(node));
    if (absl::Status s = SetLinkUp(i, true); !s.ok()) return s;
  }
  if (absl::Status s = WriteHostsFiles(); !s.ok()) return s;
  if (absl::Status s = StartController(); !s.ok()) return s;
  for (int i = 1; i <= node_count; ++i) {
    if (absl::Status s = StartAgent(i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// python3's http.server looks its own address up (socket.getfqdn) when it binds; with
// nothing in /etc/hosts the lookup goes to a DNS server the namespace cannot reach, and
// takes 10 s. Every namespace of the cluster gets a hosts file that names all nodes.
absl::Status MultiNodeCluster::WriteHostsFiles() {
  std::string hosts = "127.0.0.1 localhost\n::1 localhost\n";
  absl::StrAppend(&hosts, kSwitchAddress, " switch\n");
  for (int i = 1; i <= node_count(); ++i) absl::StrAppend(&hosts, NodeAddress(i), " ", NodeName(i), "\n");
  std::vector<const NetNamespace*> all = {switch_ns_.get()};
  for (const Node& node : nodes_) all.push_back(node.ns.get());
  for (const NetNamespace* ns : all) {
    const std::string etc = "/etc/netns/" + ns->name();
    // A cluster going away at the same time removes /etc/netns when it empties it.
    bool made = false;
    for (int attempt = 0; attempt < 3 && !made; ++attempt) {
      mkdir("/etc/netns", 0755);  // EEXIST is fine
      made = mkdir(etc.c_str(), 0755) == 0;
    }
    if (!made) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create ", etc));
    }
    etc_dirs_.push_back(etc);
    std::ofstream(etc + "/hosts") << hosts;
  }
  return absl::OkStatus();
}

absl::Status MultiNodeCluster::StartController() {
  absl::StatusOr<std::string> socket_dir = UnixSocketDirectory(db_.conninfo());
  if (!socket_dir.ok()) return socket_dir.status();
  // libpq takes the last value of a repeated keyword: the same database, by its socket.
  const std::string db = absl::StrCat(db_.conninfo(), " host=", *socket_dir);
  const std::string log = dir_ + "/controller.log";
  ProcessOptions options;
  options.unset_env.push_back("LD_PRELOAD");
  options.stderr_path = log;
  options.stdout_path = log + ".out";
  controller_ = Process(switch_ns_->Wrap({BuildPath("controller/reptrace-controller"),
                                          "--listen", absl::StrCat(kSwitchAddress, ":0"),
                                          "--db", db}),
                        options);
  static const std::regex kListening("listening on ([0-9.]+):([0-9]+)");
  std::string port;
  WaitUntil(
      [&] {
        std::smatch match;
        const std::string text = ReadFile(log);
        if (std::regex_search(text, match, kListening)) {
          port = match[2];
          return true;
        }
        return !controller_.Running();
      },
      absl::Seconds(30));
  if (port.empty() || !controller_.Running()) {
    return absl::UnavailableError(absl::StrCat("controller did not start:\n", ReadFile(log)));
  }
  controller_address_ = absl::StrCat(kSwitchAddress, ":", port);
  return absl::OkStatus();
}

absl::Status MultiNodeCluster::StartAgent(int node_number) {
  Node& node = nodes_.at(node_number - 1);
  const std::string log = absl::StrCat(node.dir, "/agent.", ++node.agent_starts, ".log");
  ProcessOptions options;
  options.unset_env.push_back("LD_PRELOAD");
  options.stderr_path = log;
  const std::string socket = SocketPath(node_number);
  node.agent = Process(node.ns->Wrap({BuildPath("agent/reptrace-agent"), "--socket", socket,
                                      "--controller", controller_address_, "--node",
                                      NodeName(node_number)}),
                       options);
  const bool up = WaitUntil(
      [&] {
        struct stat st;
        return (stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ||
               !node.agent.Running();
      },
      absl::Seconds(20));
  if (!up || !node.agent.Running()) {
    return absl::UnavailableError(
        absl::StrCat(NodeName(node_number), "'s agent did not start:\n", ReadFile(log)));
  }
  return absl::OkStatus();
}

void MultiNodeCluster::KillAgent(int node_number, int signal) {
  Node& node = nodes_.at(node_number - 1);
  node.agent.Kill(signal);
  node.agent.Wait(absl::Seconds(10));
  node.agent.Stop();
}

absl::Status MultiNodeCluster::SetLinkUp(int node, bool up) {
  const NetNamespace& ns = node_ns(node);
  if (absl::Status s = ns.Run({"ip", "link", "set", kNodeInterface, up ? "up" : "down"});
      !s.ok()) {
    return s;
  }
  if (!up) return absl::OkStatus();
  // Taking the link down removed the routes through it; the subnet's own route comes back
  // with the link, the default route does not.
  return ns.Run({"ip", "route", "replace", "default", "via", kSwitchAddress});
}

absl::Status MultiNodeCluster::AddServiceVip(int client_node, const std::string& vip,
                                             int vip_port, int backend_node,
                                             int backend_port) {
  return node_ns(client_node)
      .Run({"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", vip, "--dport",
            std::to_string(vip_port), "-j", "DNAT", "--to-destination",
            absl::StrCat(NodeAddress(backend_node), ":", backend_port)});
}

std::map<std::string, std::string> MultiNodeCluster::HookEnv(int node,
                                                             const std::string& service) const {
  std::map<std::string, std::string> env = {
      {"LD_PRELOAD", BuildPath("hook/libreptrace.so")},
      {"REPTRACE_SOCKET", SocketPath(node)},
  };
  if (!service.empty()) env["REPTRACE_SERVICE"] = service;
  return env;
}

CommandResult MultiNodeCluster::RunTraced(int node, const std::vector<std::string>& argv,
                                          const std::string& service) {
  ProcessOptions options;
  options.env = HookEnv(node, service);
  if (service.empty()) options.unset_env.push_back("REPTRACE_SERVICE");
  return RunCommand(node_ns(node).Wrap(argv), options, absl::Seconds(30));
}

absl::Status MultiNodeCluster::WaitForListener(int node, const std::string& address, int port,
                                               Process& process, const std::string& log) {
  // A bare connect, no request: the probe must not make spans of its own.
  const std::string probe = absl::StrCat("exec 3<>/dev/tcp/", address, "/", port);
  const bool up = WaitUntil(
      [&] { return !process.Running() || node_ns(node).Run({"bash", "-c", probe}).ok(); },
      absl::Seconds(20), absl::Milliseconds(100));
  if (!up || !process.Running()) {
    return absl::UnavailableError(absl::StrCat("nothing listens on ", address, ":", port,
                                               " in ", NodeName(node), ":\n", ReadFile(log)));
  }
  return absl::OkStatus();
}

absl::Status MultiNodeCluster::StartPythonServer(int node, int port, const std::string& root) {
  ProcessOptions options;
  options.env = HookEnv(node);
  options.unset_env.push_back("REPTRACE_SERVICE");
  options.cwd = root;
  options.stderr_path = absl::StrCat(dir_, "/python.", NodeName(node), ".err");
  services_.emplace_back(node_ns(node).Wrap({"/usr/bin/python3", "-m", "http.server", "--bind",
                                             NodeAddress(node), std::to_string(port)}),
                         options);
  return WaitForListener(node, NodeAddress(node), port, services_.back(),
                         options.stderr_path);
}

absl::Status MultiNodeCluster::StartNginxProxy(int node, int port, const std::string& upstream) {
  const std::string prefix = absl::StrCat(dir_, "/nginx.", NodeName(node));
  mkdir(prefix.c_str(), 0755);
  std::ofstream(prefix + "/nginx.conf") << absl::StrCat(
      "worker_processes 1;\ndaemon off;\npid ", prefix, "/nginx.pid;\nerror_log ", prefix,
      "/error.log warn;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n",
      "  client_body_temp_path ", prefix, "/body;\n  proxy_temp_path ", prefix, "/proxy;\n",
      "  fastcgi_temp_path ", prefix, "/fastcgi;\n  uwsgi_temp_path ", prefix, "/uwsgi;\n",
      "  scgi_temp_path ", prefix, "/scgi;\n  server {\n    listen ", NodeAddress(node), ":",
      port, ";\n    location / { proxy_pass http://", upstream, "; }\n  }\n}\n");
  ProcessOptions options;
  options.env = HookEnv(node);
  options.unset_env.push_back("REPTRACE_SERVICE");
  options.stderr_path = prefix + "/stderr.log";
  services_.emplace_back(
      node_ns(node).Wrap({"nginx", "-p", prefix, "-c", prefix + "/nginx.conf"}), options);
  return WaitForListener(node, NodeAddress(node), port, services_.back(),
                         prefix + "/error.log");
}

CommandResult MultiNodeCluster::Ctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BuildPath("cli/reptracectl"), "--controller",
                                   controller_address_};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions options;
  options.unset_env.push_back("LD_PRELOAD");
  return RunCommand(switch_ns_->Wrap(argv), options, absl::Seconds(30));
}

nlohmann::json MultiNodeCluster::CtlJson(std::vector<std::string> args) {
  return CtlJsonVia([this](const std::vector<std::string>& a) { return Ctl(a); },
                    std::move(args));
}

nlohmann::json MultiNodeCluster::Traces(const std::string& service, int limit) {
  return TracesVia([this](const std::vector<std::string>& a) { return Ctl(a); }, service,
                   limit);
}

nlohmann::json MultiNodeCluster::Trace(const std::string& trace_id) {
  return CtlJson({"trace", trace_id});
}

std::string MultiNodeCluster::Logs() const {
  std::string out = absl::StrCat("== controller ==\n",
                                 Tail(ReadFile(dir_ + "/controller.log"), 30));
  for (size_t i = 0; i < nodes_.size(); ++i) {
    for (int start = 1; start <= nodes_[i].agent_starts; ++start) {
      absl::StrAppend(&out, "== ", NodeName(i + 1), " agent (start ", start, ") ==\n",
                      Tail(ReadFile(absl::StrCat(nodes_[i].dir, "/agent.", start, ".log")), 20));
    }
  }
  return out;
}

}  // namespace reptrace::testing

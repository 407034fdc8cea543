// Several "nodes" on this one machine, for multi-node integration tests: each node is a
// network namespace the test creates, with its own address on a shared bridge, its own
// reptrace-agent (`--node node-N`, its own socket directory), and the programs the test runs
// under the hook inside it. Needs root, iproute2 and iptables (NetNamespace::Supported()).
//
// Layout (every address lives only inside namespaces the cluster creates; the host's own
// network is never touched):
//
//   "switch" namespace:  bridge br0 = kSwitchAddress (10.78.0.254/24), and the
//                        reptrace-controller listening on it. PostgreSQL stays on the host:
//                        the controller reaches it through the cluster's Unix socket
//                        (a Unix socket is a file, so it crosses network namespaces).
//   node namespace i:    eth0 = 10.78.0.i/24, the other end of its veth pair on br0;
//                        default route via kSwitchAddress (so Service VIPs route before
//                        DNAT rewrites them); reptrace-agent --node node-i.
//
// Each namespace also gets an /etc/hosts of its own naming every node (`ip netns exec`
// mounts /etc/netns/<namespace>/hosts over /etc/hosts; the cluster writes and removes it).
// reptracectl runs in the switch namespace. Everything (processes, namespaces, the test
// database) is stopped and removed by the destructor, also after a failed ASSERT.
#ifndef REPTRACE_TESTS_INTEGRATION_MULTINODE_CLUSTER_H_
#define REPTRACE_TESTS_INTEGRATION_MULTINODE_CLUSTER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "tests/testing/netns.h"
#include "tests/testing/process.h"
#include "tests/testing/test_database.h"

namespace reptrace::testing {

class MultiNodeCluster {
 public:
  static constexpr char kSwitchAddress[] = "10.78.0.254";

  MultiNodeCluster();
  ~MultiNodeCluster();
  MultiNodeCluster(const MultiNodeCluster&) = delete;
  MultiNodeCluster& operator=(const MultiNodeCluster&) = delete;

  // Creates the switch and `node_count` nodes (1..node_count), starts the controller and
  // one agent per node.
  absl::Status Start(int node_count);

  int node_count() const { return static_cast<int>(nodes_.size()); }
  static std::string NodeName(int node);     // "node-<node>"
  static std::string NodeAddress(int node);  // "10.78.0.<node>"
  const NetNamespace& node_ns(int node) const { return *nodes_.at(node - 1).ns; }
  const std::string& dir() const { return dir_; }
  const std::string& controller_address() const { return controller_address_; }

  // (Re)starts node `node`'s agent; waits for its socket.
  absl::Status StartAgent(int node);
  // Sends `signal` to node `node`'s agent and reaps it.
  void KillAgent(int node, int signal);

  // Takes node `node`'s link down (`ip link set eth0 down` in the node) or back up
  // (restoring the default route the kernel removed with the link).
  absl::Status SetLinkUp(int node, bool up);

  // A Kubernetes-Service-like virtual IP in `client_node`'s namespace: connections to
  // vip:vip_port go to NodeAddress(backend_node):backend_port (iptables DNAT in OUTPUT).
  absl::Status AddServiceVip(int client_node, const std::string& vip, int vip_port,
                             int backend_node, int backend_port);

  // Environment that puts a program under the hook of node `node`'s agent.
  std::map<std::string, std::string> HookEnv(int node, const std::string& service = "") const;
  // Runs `argv` traced inside node `node` to completion.
  CommandResult RunTraced(int node, const std::vector<std::string>& argv,
                          const std::string& service = "");
  // python3 http.server serving `root`, traced, on NodeAddress(node):port; waits until it
  // answers (from the node itself).
  absl::Status StartPythonServer(int node, int port, const std::string& root);
  // nginx (one worker, traced) on NodeAddress(node):port, proxying everything to
  // http://upstream; waits until it listens.
  absl::Status StartNginxProxy(int node, int port, const std::string& upstream);

  // reptracectl --controller <ours> ARGS (run in the switch namespace).
  CommandResult Ctl(const std::vector<std::string>& args);
  nlohmann::json CtlJson(std::vector<std::string> args);  // null json if it failed
  nlohmann::json Traces(const std::string& service, int limit = 100);
  nlohmann::json Trace(const std::string& trace_id);

  // The last lines of the controller's and agents' logs, for failure messages.
  std::string Logs() const;

 private:
  struct Node {
    std::unique_ptr<NetNamespace> ns;
    std::string dir;  // the agent's socket directory
    Process agent;
    int agent_starts = 0;
  };
  std::string SocketPath(int node) const { return nodes_.at(node - 1).dir + "/agent.sock"; }
  absl::Status StartController();
  absl::Status WriteHostsFiles();
  absl::Status WaitForListener(int node, const std::string& address, int port,
                               Process& process, const std::string& log);

  TestDatabase db_;
  std::string dir_;
  std::unique_ptr<NetNamespace> switch_ns_;
  std::vector<Node> nodes_;
  Process controller_;
  std::vector<Process> services_;
  std::string controller_address_;
  std::vector<std::string> etc_dirs_;  // /etc/netns/<namespace> directories we made
};

}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_INTEGRATION_MULTINODE_CLUSTER_H_

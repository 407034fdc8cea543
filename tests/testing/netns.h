// Network namespaces that a test creates, links and deletes: the "nodes" of multi-node
// tests, and the address translation of a Kubernetes Service (iptables DNAT), on this one
// machine. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2/iptables; tests check
// NetNamespace::Supported() and fail with its reason otherwise (never a silent skip).
//
// Addresses given to namespaces live only inside them: nothing here touches the host's
// own network.
#ifndef REPTRACE_TESTS_TESTING_NETNS_H_
#define REPTRACE_TESTS_TESTING_NETNS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reptrace::testing {

class NetNamespace {
 public:
  // OK if this process may create network namespaces and the tools are there.
  static absl::Status Supported();

  // A new namespace named "rt<pid>-<label>" with its loopback up.
  static absl::StatusOr<std::unique_ptr<NetNamespace>> Create(const std::string& label);
  ~NetNamespace();  // deletes the namespace (processes still in it keep it alive)
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  const std::string& name() const { return name_; }

  // `argv` run inside the namespace: {"ip", "netns", "exec", name, argv...}. The program
  // keeps the caller's environment (LD_PRELOAD included) and file system.
  std::vector<std::string> Wrap(const std::vector<std::string>& argv) const;

  // Runs `argv` inside the namespace to completion; an error with its output if it fails.
  absl::Status Run(const std::vector<std::string>& argv) const;

 private:
  explicit NetNamespace(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// Links two namespaces with a veth pair: `a` gets `a_cidr` (e.g. "10.77.0.1/24"), `b` gets
// `b_cidr`, both interfaces up.
absl::Status Link(const NetNamespace& a, const std::string& a_cidr, const NetNamespace& b,
                  const std::string& b_cidr);

}  // namespace reptrace::testing

#endif  // REPTRACE_TESTS_TESTING_NETNS_H_

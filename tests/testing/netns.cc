#include "tests/testing/netns.h"

#include <unistd.h>

#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/testing/process.h"

namespace reptrace::testing {
namespace {

absl::Status RunTool(const std::vector<std::string>& argv) {
  ProcessOptions options;
  options.unset_env.push_back("LD_PRELOAD");  // set-up commands are not the traced programs
  const CommandResult result = RunCommand(argv, options, absl::Seconds(20));
  if (result.exit_code == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(absl::StrJoin(argv, " "), " failed (exit ",
                                                    result.exit_code, "): ", result.err,
                                                    result.out));
}

}  // namespace

absl::Status NetNamespace::Supported() {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError("network namespace tests must run as root");
  }
  absl::StatusOr<std::unique_ptr<NetNamespace>> probe = Create("probe");
  if (!probe.ok()) return probe.status();
  return (*probe)->Run({"iptables", "-t", "nat", "-L", "-n"});
}

absl::StatusOr<std::unique_ptr<NetNamespace>> NetNamespace::Create(const std::string& label) {
  static std::atomic<int> counter{0};
  // Short: interface names derived from it must fit IFNAMSIZ (15 characters).
  std::string name = absl::StrCat("rt", getpid() % 100000, counter.fetch_add(1), label.substr(0, 4));
  if (absl::Status s = RunTool({"ip", "netns", "add", name}); !s.ok()) return s;
  std::unique_ptr<NetNamespace> ns(new NetNamespace(std::move(name)));
  if (absl::Status s = ns->Run({"ip", "link", "set", "lo", "up"}); !s.ok()) return s;
  return ns;
}

NetNamespace::~NetNamespace() { RunTool({"ip", "netns", "del", name_}).IgnoreError(); }

std::vector<std::string> NetNamespace::Wrap(const std::vector<std::string>& argv) const {
  std::vector<std::string> wrapped = {"ip", "netns", "exec", name_};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

absl::Status NetNamespace::Run(const std::vector<std::string>& argv) const {
  return RunTool(Wrap(argv));
}

absl::Status Link(const NetNamespace& a, const std::string& a_cidr, const NetNamespace& b,
                  const std::string& b_cidr) {
  static std::atomic<int> counter{0};
  const std::string id = absl::StrCat(getpid() % 100000, "x", counter.fetch_add(1));
  const std::string a_if = absl::StrCat("va", id), b_if = absl::StrCat("vb", id);
  for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
           {"ip", "link", "add", a_if, "netns", a.name(), "type", "veth", "peer", "name", b_if,
            "netns", b.name()},
           {"ip", "-n", a.name(), "addr", "add", a_cidr, "dev", a_if},
           {"ip", "-n", b.name(), "addr", "add", b_cidr, "dev", b_if},
           {"ip", "-n", a.name(), "link", "set", a_if, "up"},
           {"ip", "-n", b.name(), "link", "set", b_if, "up"}}) {
    if (absl::Status s = RunTool(step); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace reptrace::testing

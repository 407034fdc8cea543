// Spans name the pods their processes run in (issue 6): real programs (python3's
// http.server, curl) under the hook, each moved into a real cgroup named as the kubelet
// and containerd name a pod's container (systemd driver), the real agent reading their
// cgroups and listing the node's pods from an API server over HTTPS, the real controller
// and PostgreSQL.
//
// The API server is a stand-in (tests/integration/programs/kube_api_server.py): Debian
// ships no kube-apiserver. It answers the agent's one request as the API server does.
// Needs root (cgroups); run by CI as root, like the network-namespace tests.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/stack.h"
#include "tests/testing/process.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

// A cgroup hierarchy the test can make cgroups in: the v2 one (at /sys/fs/cgroup, or
// /sys/fs/cgroup/unified on a hybrid system), else v1's name=systemd one; "" if none.
std::string WritableCgroupMount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, v2, v1;
  while (std::getline(in, line)) {
    // "... MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS"
    const std::vector<std::string> halves = absl::StrSplit(line, " - ");
    if (halves.size() != 2) continue;
    const std::vector<std::string> before = absl::StrSplit(halves[0], ' ');
    const std::vector<std::string> after = absl::StrSplit(halves[1], ' ');
    if (before.size() < 5 || after.size() < 3) continue;
    if (after[0] == "cgroup2" && v2.empty()) v2 = before[4];
    if (after[0] == "cgroup" && after[2].find("name=systemd") != std::string::npos) {
      v1 = before[4];
    }
  }
  for (const std::string& mount : {v2, v1}) {
    if (mount.empty()) continue;
    const std::string probe = absl::StrCat(mount, "/reptrace-probe-", getpid());
    if (mkdir(probe.c_str(), 0755) == 0) {
      rmdir(probe.c_str());
      return mount;
    }
  }
  return "";
}

// The cgroups of a node's pods as the kubelet (systemd driver) and containerd make them,
// below a root of the test's own; removed, with any process left in them moved out first,
// when the object goes.
class PodCgroups {
 public:
  explicit PodCgroups(std::string mount)
      : mount_(std::move(mount)), root_(absl::StrCat(mount_, "/reptrace-kube-test-", getpid())) {}
  ~PodCgroups() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
      std::ifstream procs(*it + "/cgroup.procs");
      std::string pid;
      while (std::getline(procs, pid)) {
        std::ofstream(mount_ + "/cgroup.procs") << pid << "\n";
      }
      rmdir(it->c_str());
    }
  }
  // The container's cgroup.procs file: a process that writes its pid there is in it.
  std::string Container(const std::string& pod_uid, const std::string& container_id) {
    const std::string uid = absl::StrReplaceAll(pod_uid, {{"-", "_"}});
    std::string path = root_;
    for (const std::string& part :
         {std::string("kubepods.slice"), std::string("kubepods-besteffort.slice"),
          absl::StrCat("kubepods-besteffort-pod", uid, ".slice"),
          absl::StrCat("cri-containerd-", container_id, ".scope")}) {
      if (made_.empty()) Make(root_);
      path += "/" + part;
      Make(path);
    }
    return path + "/cgroup.procs";
  }

 private:
  void Make(const std::string& path) {
    if (mkdir(path.c_str(), 0755) == 0) made_.push_back(path);
  }
  std::string mount_;
  std::string root_;
  std::vector<std::string> made_;
};

// argv, run from inside the cgroup whose cgroup.procs is `procs` (the shell joins it, then
// execs the program: the hooked program connects to the agent from there).
std::vector<std::string> InCgroup(const std::string& procs, std::vector<std::string> argv) {
  std::vector<std::string> out = {"sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", procs};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string PodJson(const std::string& uid, const std::string& name, const std::string& ns,
                    const std::string& container, const std::string& container_id) {
  return json{{"metadata", {{"name", name}, {"namespace", ns}, {"uid", uid}}},
              {"spec", {{"nodeName", "it-node"}, {"containers", {{{"name", container}}}}}},
              {"status",
               {{"phase", "Running"},
                {"containerStatuses",
                 {{{"name", container}, {"containerID", "containerd://" + container_id}}}}}}}
      .dump();
}

const std::string kWebUid = "0a1b2c3d-0000-4000-8000-00000000000a";
const std::string kClientUid = "0a1b2c3d-0000-4000-8000-00000000000b";
const std::string kLateUid = "0a1b2c3d-0000-4000-8000-00000000000c";
const std::string kWebId = std::string(60, 'a') + "0001";
const std::string kClientId = std::string(60, 'b') + "0002";
const std::string kLateId = std::string(60, 'c') + "0003";

class KubeEnrichmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (makes cgroups)";
    mount_ = WritableCgroupMount();
    ASSERT_NE(mount_, "") << "no writable cgroup hierarchy (v2, or v1 name=systemd)";
    cgroups_ = std::make_unique<PodCgroups>(mount_);
    ASSERT_TRUE(stack_.StartController());
    const std::string dir = stack_.dir();
    const CommandResult cert = RunCommand(
        {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-api",
         "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout",
         dir + "/api-key.pem", "-out", dir + "/api-cert.pem"});
    ASSERT_EQ(cert.exit_code, 0) << cert.err;
    std::ofstream(dir + "/token") << "agent-token\n";
    WritePods({PodJson(kWebUid, "web-7d9f", "shop", "web", kWebId),
               PodJson(kClientUid, "client-x1", "jobs", "curl", kClientId)});
    ProcessOptions options;
    options.stdout_path = dir + "/api.out";
    options.stderr_path = dir + "/api.err";
    api_ = Process({"python3", REPTRACE_KUBE_API_SERVER, dir + "/api-cert.pem",
                    dir + "/api-key.pem", "agent-token", dir + "/pods.json",
                    dir + "/api-requests.log"},
                   options);
    const std::string line = WaitForLine(api_, dir + "/api.out", "listening on",
                                         absl::Seconds(20));
    ASSERT_NE(line, "") << ReadFile(dir + "/api.err");
    const std::string api_port = line.substr(line.rfind(' ') + 1);
    ASSERT_TRUE(stack_.StartAgent({"--kube-api-server=https://127.0.0.1:" + api_port,
                                   "--kube-token-file=" + dir + "/token",
                                   "--kube-ca-file=" + dir + "/api-cert.pem"}))
        << stack_.Logs();

    // The web pod's server.
    web_port_ = FreePort();
    mkdir((dir + "/www").c_str(), 0755);
    std::ofstream(dir + "/www/index.html") << "pod web\n";
    web_ = stack_.StartTraced(
        InCgroup(cgroups_->Container(kWebUid, kWebId),
                 {"python3", "-u", "-m", "http.server", "--bind", "127.0.0.1",
                  std::to_string(web_port_), "--directory", dir + "/www"}),
        "web", "web");
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (RunCommand({"curl", "-s", "-o", "/dev/null", Url()}).exit_code != 0) {
      ASSERT_LT(absl::Now(), deadline) << "web did not start: " << ReadFile(dir + "/web.log");
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  void WritePods(const std::vector<std::string>& pods) {
    std::string text = "[";
    for (size_t i = 0; i < pods.size(); ++i) absl::StrAppend(&text, i ? "," : "", pods[i]);
    std::ofstream(stack_.dir() + "/pods.json.new") << text << "]";
    rename((stack_.dir() + "/pods.json.new").c_str(), (stack_.dir() + "/pods.json").c_str());
  }
  std::string Url() const { return absl::StrCat("http://127.0.0.1:", web_port_, "/"); }

  // Runs curl under the hook (service `service`) in the given container, or outside any
  // if `procs` is empty.
  void Curl(const std::string& service, const std::string& procs) {
    std::vector<std::string> argv = {"curl", "-sS", "--fail", "--max-time", "10", Url()};
    if (!procs.empty()) argv = InCgroup(procs, argv);
    const CommandResult curl = stack_.RunTraced(argv, service);
    ASSERT_EQ(curl.exit_code, 0) << curl.err;
    EXPECT_EQ(curl.out, "pod web\n");
  }

  // The newest trace of `service` once it has both spans; null if none in 20 s.
  json WaitForTrace(const std::string& service) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      json traces = stack_.Traces(service, 10);
      if (!traces.empty() && traces[0]["span_count"] == 2) {
        return stack_.Trace(traces[0]["trace_id"]);
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return nullptr;
  }
  static const json* SpanOf(const json& trace, const std::string& service) {
    for (const json& span : trace["spans"]) {
      if (span["service"] == service) return &span;
    }
    return nullptr;
  }

  Stack stack_;
  std::string mount_;
  std::unique_ptr<PodCgroups> cgroups_;  // after stack_: its processes go first
  Process api_;
  Process web_;
  int web_port_ = 0;
};

TEST_F(KubeEnrichmentTest, SpansNameTheirPodNamespaceContainerAndNode) {
  Curl("shop-client", cgroups_->Container(kClientUid, kClientId));
  const json trace = WaitForTrace("shop-client");
  ASSERT_FALSE(trace.is_null()) << stack_.Logs();
  const json* client = SpanOf(trace, "shop-client");
  const json* server = SpanOf(trace, "web");
  ASSERT_NE(client, nullptr) << trace.dump(2);
  ASSERT_NE(server, nullptr) << trace.dump(2);
  EXPECT_EQ((*server)["parent_span_id"], (*client)["span_id"]);

  const json& c = (*client)["attributes"];
  EXPECT_EQ(c.value("k8s.pod.name", ""), "client-x1") << c.dump();
  EXPECT_EQ(c.value("k8s.namespace.name", ""), "jobs");
  EXPECT_EQ(c.value("k8s.container.name", ""), "curl");
  EXPECT_EQ(c.value("k8s.pod.uid", ""), kClientUid);
  EXPECT_EQ(c.value("container.id", ""), kClientId);
  EXPECT_EQ((*client)["node"], "it-node");
  const json& s = (*server)["attributes"];
  EXPECT_EQ(s.value("k8s.pod.name", ""), "web-7d9f") << s.dump();
  EXPECT_EQ(s.value("k8s.namespace.name", ""), "shop");
  EXPECT_EQ(s.value("k8s.container.name", ""), "web");
  EXPECT_EQ(s.value("k8s.pod.uid", ""), kWebUid);
  EXPECT_EQ(s.value("container.id", ""), kWebId);
  EXPECT_EQ(s.value("http.request.method", ""), "GET");  // the protocol's stay
  EXPECT_EQ((*server)["node"], "it-node");

  // The waterfall shows pods, not pids.
  const CommandResult shown = stack_.Ctl({"trace", trace["trace_id"], "--ascii"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("(pod jobs/client-x1)"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("(pod shop/web-7d9f)"), std::string::npos) << shown.out;

  // The agent asked for this node's pods only, with its token (the stand-in refuses
  // anything else).
  const std::string requests = ReadFile(stack_.dir() + "/api-requests.log");
  EXPECT_NE(requests.find("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dit-node 200"),
            std::string::npos)
      << requests;
  EXPECT_EQ(requests.find(" 40"), std::string::npos) << requests;
}

TEST_F(KubeEnrichmentTest, AProcessInNoContainerCarriesNoneOfIt) {
  Curl("host-client", "");
  const json trace = WaitForTrace("host-client");
  ASSERT_FALSE(trace.is_null()) << stack_.Logs();
  const json* client = SpanOf(trace, "host-client");
  ASSERT_NE(client, nullptr);
  // Unless this test itself runs in a container: then the container is this one's.
  std::ifstream self("/proc/self/cgroup");
  const std::string own((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
  const json& c = (*client)["attributes"];
  EXPECT_EQ(c.count("k8s.pod.name"), 0u) << c.dump();
  EXPECT_EQ(c.count("k8s.pod.uid"), 0u) << c.dump();
  if (own.find("kubepods") == std::string::npos && own.find("docker") == std::string::npos &&
      own.find("containerd") == std::string::npos) {
    EXPECT_EQ(c.count("container.id"), 0u) << c.dump();
  }
  // The server it called is still named.
  const json* server = SpanOf(trace, "web");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ((*server)["attributes"].value("k8s.pod.name", ""), "web-7d9f");
}

TEST_F(KubeEnrichmentTest, APodTheApiServerDoesNotListKeepsItsIdsAndIsNamedOnceListed) {
  const std::string procs = cgroups_->Container(kLateUid, kLateId);
  Curl("late-client", procs);
  json trace = WaitForTrace("late-client");
  ASSERT_FALSE(trace.is_null()) << stack_.Logs();
  const json* client = SpanOf(trace, "late-client");
  ASSERT_NE(client, nullptr);
  const json& c = (*client)["attributes"];
  EXPECT_EQ(c.value("container.id", ""), kLateId) << c.dump();
  EXPECT_EQ(c.value("k8s.pod.uid", ""), kLateUid);
  EXPECT_EQ(c.count("k8s.pod.name"), 0u) << c.dump();

  // Scheduled now: its next process is named without waiting for the 30 s list (the
  // agent lists again within a second of meeting a pod it does not know).
  WritePods({PodJson(kWebUid, "web-7d9f", "shop", "web", kWebId),
             PodJson(kClientUid, "client-x1", "jobs", "curl", kClientId),
             PodJson(kLateUid, "late-job-q2w", "batch", "job", kLateId)});
  std::string named;
  const absl::Time start = absl::Now();
  for (int attempt = 0; attempt < 20 && named.empty(); ++attempt) {
    absl::SleepFor(absl::Milliseconds(500));
    Curl("late-client", procs);
    trace = WaitForTrace("late-client");
    ASSERT_FALSE(trace.is_null());
    client = SpanOf(trace, "late-client");
    ASSERT_NE(client, nullptr);
    named = (*client)["attributes"].value("k8s.pod.name", "");
  }
  EXPECT_EQ(named, "late-job-q2w") << (*client).dump();
  EXPECT_EQ((*client)["attributes"].value("k8s.namespace.name", ""), "batch");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "named only by the periodic list";
}

}  // namespace
}  // namespace reptrace::testing

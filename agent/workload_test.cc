#include "agent/workload.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/pod_directory.h"
#include "agent/span_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using ::testing::Pair;

const std::string kId(64, 'a');
const std::string kOtherId = std::string(32, '0') + std::string(32, 'f');
const std::string kUid = "5f0a1c3e-8f2b-4d6a-9c1e-2b3d4e5f6a7b";
const std::string kUidUnderscores = "5f0a1c3e_8f2b_4d6a_9c1e_2b3d4e5f6a7b";

Workload Parse(const std::string& contents) { return ParseCgroupFile(contents); }

TEST(ParseCgroupFileTest, CgroupV2SystemdDriverContainerd) {
  const Workload w = Parse(absl::StrCat(
      "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod", kUidUnderscores,
      ".slice/cri-containerd-", kId, ".scope\n"));
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
  EXPECT_TRUE(w.in_container());
  EXPECT_FALSE(w.named());
}

TEST(ParseCgroupFileTest, GuaranteedQosSliceAndCrio) {
  const Workload w = Parse(absl::StrCat("0::/kubepods.slice/kubepods-pod", kUidUnderscores,
                                        ".slice/crio-", kId, ".scope\n"));
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(ParseCgroupFileTest, CgroupV1CgroupfsDriverEveryHierarchy) {
  std::string contents;
  for (const char* hierarchy : {"12:memory", "11:cpu,cpuacct", "1:name=systemd"}) {
    absl::StrAppend(&contents, hierarchy, ":/kubepods/besteffort/pod", kUid, "/", kId, "\n");
  }
  absl::StrAppend(&contents, "0::/\n");  // a hybrid system's empty v2 line
  const Workload w = Parse(contents);
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(ParseCgroupFileTest, SeenFromAnotherCgroupNamespace) {
  // The agent in its own pod's cgroup namespace reads another pod's process.
  const Workload w = Parse(absl::StrCat("0::/../../kubepods-besteffort-pod", kUidUnderscores,
                                        ".slice/cri-containerd-", kId, ".scope\n"));
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(ParseCgroupFileTest, NestedClusterTakesTheInnermostContainer) {
  // kind: the node is itself a Docker container, its kubelet's cgroup root "/kubelet".
  const Workload kind = Parse(absl::StrCat(
      "0::/system.slice/docker-", kOtherId, ".scope/kubelet.slice/kubelet-kubepods.slice/",
      "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod", kUidUnderscores,
      ".slice/cri-containerd-", kId, ".scope\n"));
  EXPECT_EQ(kind.container_id, kId);
  EXPECT_EQ(kind.pod_uid, kUid);
  const Workload cgroupfs = Parse(
      absl::StrCat("3:cpu:/docker/", kOtherId, "/kubepods/burstable/pod", kUid, "/", kId, "\n"));
  EXPECT_EQ(cgroupfs.container_id, kId);
  EXPECT_EQ(cgroupfs.pod_uid, kUid);
}

TEST(ParseCgroupFileTest, ContainerOutsideKubernetes) {
  for (const std::string& path :
       {absl::StrCat("/system.slice/docker-", kId, ".scope"), absl::StrCat("/docker/", kId),
        absl::StrCat("/machine.slice/libpod-", kId, ".scope")}) {
    const Workload w = Parse(absl::StrCat("0::", path, "\n"));
    EXPECT_EQ(w.container_id, kId) << path;
    EXPECT_EQ(w.pod_uid, "") << path;
    EXPECT_TRUE(w.named()) << path;  // nothing to ask the API server
  }
}

TEST(ParseCgroupFileTest, CrioConmonIsNotTheContainer) {
  const Workload w = Parse(absl::StrCat("0::/kubepods.slice/kubepods-besteffort.slice/",
                                        "kubepods-besteffort-pod", kUidUnderscores,
                                        ".slice/crio-conmon-", kId, ".scope\n"));
  EXPECT_EQ(w.container_id, "");
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(ParseCgroupFileTest, NamesNothingOutsideContainersOrWhenMalformed) {
  for (const std::string& contents : std::vector<std::string>{
           "", "0::/\n", "0::/user.slice/user-1000.slice/session-2.scope\n",
           "4:memory:/process_api/1cc106d0d7e1a3d1028c214f4cf010cf\n",  // 32 digits
           "garbage without colons\n", "0:\n",
           absl::StrCat("0::/docker/", std::string(63, 'a'), "\n"),       // one short
           absl::StrCat("0::/docker/", std::string(64, 'A'), "\n"),       // not lowercase
           absl::StrCat("0::/docker-", kId, ".slice\n"),                  // not a scope
           absl::StrCat("0::/kubepods/pod", kUid.substr(1), "x/\n"),      // bad uid
           absl::StrCat("0::/system.slice/pod", kUidUnderscores, ".slice\n")}) {
    const Workload w = Parse(contents);
    EXPECT_FALSE(w.in_container()) << contents;
  }
}

TEST(ParseCgroupFileTest, PathsWithColonsAndTheBestLineWins) {
  // A container-only line and a pod-and-container line: the latter names more.
  const Workload w = Parse(absl::StrCat("5:devices:/docker/", kOtherId, "\n",
                                        "0::/odd:name/kubepods/pod", kUid, "/", kId, "\n"));
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
}

TEST(ReadWorkloadOfTest, ReadsProcAndSaysNothingOfWhatItCannotRead) {
  const std::string root = testing::MakeTempDir("workload-proc");
  mkdir((root + "/42").c_str(), 0755);
  std::ofstream(root + "/42/cgroup")
      << absl::StrCat("0::/kubepods/besteffort/pod", kUid, "/", kId, "\n");
  const Workload w = ReadWorkloadOf(42, root);
  EXPECT_EQ(w.container_id, kId);
  EXPECT_EQ(w.pod_uid, kUid);
  EXPECT_FALSE(ReadWorkloadOf(43, root).in_container());
  EXPECT_FALSE(ReadWorkloadOf(0, root).in_container());  // not visible to the agent
  // This very process, through the real /proc: whatever it is in, the read works and its
  // container (if any) is the one its own cgroup file names.
  std::ifstream self("/proc/self/cgroup");
  const std::string own((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
  EXPECT_EQ(ReadWorkloadOf(getpid()).container_id, ParseCgroupFile(own).container_id);
  testing::RemoveTree(root);
}

TEST(ReadWorkloadOfTest, AProcessGoneBetweenOpenAndReadIsNothingNotACrash) {
  // The race that crashed the agent (std::ifstream threw on the read's ESRCH), made
  // deterministic: the cgroup file is opened while the process lives and read after it
  // was reaped.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  const int fd = open(absl::StrCat("/proc/", child, "/cgroup").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(ReadAll(fd), std::nullopt);
  close(fd);
  EXPECT_FALSE(ReadWorkloadOf(child).in_container());
}

TEST(ReadSmallFileTest, ReadsWholeFilesUpToTheLimit) {
  const std::string dir = testing::MakeTempDir("read-small");
  std::ofstream(dir + "/f") << std::string(10000, 'x');
  EXPECT_EQ(ReadSmallFile(dir + "/f"), std::string(10000, 'x'));
  EXPECT_EQ(ReadSmallFile(dir + "/f", 100), std::string(100, 'x'));
  EXPECT_EQ(ReadSmallFile(dir + "/missing"), std::nullopt);
  testing::RemoveTree(dir);
}

TEST(AddWorkloadAttributesTest, SetsWhatIsKnownInKeyOrder) {
  Workload w;
  w.container_id = kId;
  w.pod_uid = kUid;
  SpanRecord span;
  span.SetAttribute("http.method", "GET");
  AddWorkloadAttributes(w, &span);
  ASSERT_EQ(span.attributes.size(), 3u);
  EXPECT_EQ(span.attributes[0].key, "container.id");
  EXPECT_EQ(span.attributes[1].key, "http.method");
  EXPECT_EQ(span.attributes[2].key, "k8s.pod.uid");
  w.pod_name = "web-7d9f";
  w.pod_namespace = "shop";
  w.container_name = "web";
  AddWorkloadAttributes(w, &span);
  const v1::Span proto = ToSpanProto(span);
  EXPECT_THAT(proto.attributes(),
              UnorderedElementsAre(Pair("container.id", kId), Pair("http.method", "GET"),
                                   Pair("k8s.container.name", "web"),
                                   Pair("k8s.namespace.name", "shop"),
                                   Pair("k8s.pod.name", "web-7d9f"), Pair("k8s.pod.uid", kUid)));
}

// A PodList as the API server writes it (trimmed to what matters, plus noise).
std::string PodJson(const std::string& uid, const std::string& name, const std::string& ns,
                    const std::string& node, const std::string& container_id) {
  return absl::StrCat(
      R"({"metadata":{"name":")", name, R"(","namespace":")", ns, R"(","uid":")", uid,
      R"(","labels":{"app":"web"}},"spec":{"nodeName":")", node,
      R"(","containers":[{"name":"web","image":"nginx"}]},"status":{"phase":"Running",)",
      R"("initContainerStatuses":[{"name":"init","containerID":"containerd://)", kOtherId,
      R"("}],"containerStatuses":[{"name":"web","ready":true,"containerID":"containerd://)",
      container_id, R"("},{"name":"sidecar","state":{"waiting":{}}}]}})");
}

TEST(ParsePodListTest, PodsAndTheirStartedContainers) {
  const std::string json = absl::StrCat(
      R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[)",
      PodJson(kUid, "web-7d9f", "shop", "node-a", kId), R"(,{"metadata":{"name":"x"}}]})");
  const absl::StatusOr<std::vector<PodMeta>> pods = ParsePodList(json);
  ASSERT_TRUE(pods.ok()) << pods.status();
  ASSERT_EQ(pods->size(), 1u);  // the item without a uid is skipped
  const PodMeta& pod = (*pods)[0];
  EXPECT_EQ(pod.uid, kUid);
  EXPECT_EQ(pod.name, "web-7d9f");
  EXPECT_EQ(pod.namespace_name, "shop");
  // The sidecar has not started (no containerID): not listed.
  EXPECT_THAT(pod.containers, UnorderedElementsAre(Pair(kId, "web"), Pair(kOtherId, "init")));
  // An empty list can say "items": null.
  const auto empty = ParsePodList(R"({"kind":"PodList","items":null})");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(ParsePodListTest, SaysWhatCameInstead) {
  const auto forbidden = ParsePodList(
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":)"
      R"("pods is forbidden: User \"system:serviceaccount:reptrace:default\" cannot list)"
      R"( resource \"pods\"","reason":"Forbidden","code":403})");
  ASSERT_FALSE(forbidden.ok());
  EXPECT_THAT(forbidden.status().message(), HasSubstr("pods is forbidden"));
  EXPECT_THAT(forbidden.status().message(), HasSubstr("(403)"));
  const auto html = ParsePodList("<html>502 Bad Gateway</html>");
  ASSERT_FALSE(html.ok());
  EXPECT_THAT(html.status().message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(html.status().message(), HasSubstr("502 Bad Gateway"));
  EXPECT_THAT(ParsePodList(R"({"kind":"NodeList","items":[]})").status().message(),
              HasSubstr("not a PodList"));
  EXPECT_FALSE(ParsePodList(R"({"kind":"PodList","items":{}})").ok());
  EXPECT_FALSE(ParsePodList("[1,2]").ok());
}

// The real directory (libcurl, TLS, the token) against the stand-in API server.
class PodDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("pod-directory");
    const testing::CommandResult cert = testing::RunCommand(
        {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-api",
         "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", dir_ + "/key.pem",
         "-out", dir_ + "/cert.pem"});
    ASSERT_EQ(cert.exit_code, 0) << cert.err;
    std::ofstream(dir_ + "/token") << "secret-token\n";
    WritePods({PodJson(kUid, "web-7d9f", "shop", "node-a", kId),
               PodJson("11111111-2222-3333-4444-555555555555", "db-0", "shop", "node-b",
                       kOtherId)});
    testing::ProcessOptions options;
    options.stdout_path = dir_ + "/server.out";
    options.stderr_path = dir_ + "/server.err";
    server_ = testing::Process({"python3", REPTRACE_KUBE_API_SERVER, dir_ + "/cert.pem",
                                dir_ + "/key.pem", "secret-token", dir_ + "/pods.json",
                                dir_ + "/requests.log"},
                               options);
    const std::string line =
        testing::WaitForLine(server_, dir_ + "/server.out", "listening on", absl::Seconds(20));
    ASSERT_NE(line, "") << testing::ReadFile(dir_ + "/server.err");
    port_ = std::stoi(line.substr(line.rfind(' ') + 1));
  }
  void TearDown() override {
    server_.Stop();
    testing::RemoveTree(dir_);
  }
  void WritePods(const std::vector<std::string>& pods) {
    std::string json = "[";
    for (size_t i = 0; i < pods.size(); ++i) absl::StrAppend(&json, i ? "," : "", pods[i]);
    std::ofstream(dir_ + "/pods.json.new") << json << "]";
    rename((dir_ + "/pods.json.new").c_str(), (dir_ + "/pods.json").c_str());
  }
  PodDirectory::Options Options() const {
    PodDirectory::Options options;
    options.api_server = absl::StrCat("https://127.0.0.1:", port_);
    options.token_file = dir_ + "/token";
    options.ca_file = dir_ + "/cert.pem";
    options.node = "node-a";
    options.min_interval = absl::Milliseconds(100);
    return options;
  }

  std::string dir_;
  testing::Process server_;
  int port_ = 0;
};

TEST_F(PodDirectoryTest, NamesThisNodesPodsAndListsAgainForAPodItDoesNotKnow) {
  auto directory = PodDirectory::Start(Options());
  ASSERT_TRUE(directory.ok()) << directory.status();
  ASSERT_TRUE((*directory)->AwaitLists(1, absl::Seconds(20)));
  EXPECT_EQ((*directory)->stats().lists_ok, 1u);
  EXPECT_EQ((*directory)->stats().pods, 1u);  // node-b's pod is not this node's
  EXPECT_THAT(testing::ReadFile(dir_ + "/requests.log"),
              HasSubstr("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a 200"));

  Workload web;
  web.container_id = kId;
  web.pod_uid = kUid;
  EXPECT_TRUE((*directory)->Name(&web));
  EXPECT_EQ(web.pod_name, "web-7d9f");
  EXPECT_EQ(web.pod_namespace, "shop");
  EXPECT_EQ(web.container_name, "web");

  // A pod scheduled after the list: the miss asks for a list at once (not in 30 s).
  const std::string new_uid = "99999999-8888-7777-6666-555555555555";
  Workload fresh;
  const std::string fresh_id(64, 'b');
  fresh.container_id = fresh_id;
  fresh.pod_uid = new_uid;
  EXPECT_FALSE((*directory)->Name(&fresh));
  EXPECT_EQ(fresh.pod_name, "");
  WritePods({PodJson(kUid, "web-7d9f", "shop", "node-a", kId),
             PodJson(new_uid, "client-x1", "jobs", "node-a", fresh_id)});
  // The first early list may have run before the file changed: a second miss asks again.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!(*directory)->Name(&fresh) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(fresh.pod_name, "client-x1");
  EXPECT_EQ(fresh.pod_namespace, "jobs");
  EXPECT_EQ(fresh.container_name, "web");
  EXPECT_LE((*directory)->stats().lists_ok, 10u);  // min_interval apart, not a busy loop

  // Not in a pod: nothing to name, nothing asked.
  Workload docker;
  docker.container_id = kId;
  EXPECT_TRUE((*directory)->Name(&docker));
  EXPECT_EQ(docker.pod_name, "");
}

TEST_F(PodDirectoryTest, AContainerTheStatusDoesNotNameYetGetsThePodAndAsksAgain) {
  auto directory = PodDirectory::Start(Options());
  ASSERT_TRUE(directory.ok()) << directory.status();
  ASSERT_TRUE((*directory)->AwaitLists(1, absl::Seconds(20)));
  // A sidecar that just started: its pod is listed, its container id not yet.
  const std::string sidecar_id(64, 'd');
  Workload sidecar;
  sidecar.container_id = sidecar_id;
  sidecar.pod_uid = kUid;
  EXPECT_FALSE((*directory)->Name(&sidecar));
  EXPECT_EQ(sidecar.pod_name, "web-7d9f");
  EXPECT_EQ(sidecar.pod_namespace, "shop");
  EXPECT_EQ(sidecar.container_name, "");
  std::string pod = PodJson(kUid, "web-7d9f", "shop", "node-a", kId);
  const std::string web_status = absl::StrCat(R"({"name":"web","ready":true,)",
                                              R"("containerID":"containerd://)", kId, R"("})");
  ASSERT_NE(pod.find(web_status), std::string::npos);
  pod.replace(pod.find(web_status), web_status.size(),
              absl::StrCat(web_status, R"(,{"name":"sidecar","containerID":"cri-o://)",
                           sidecar_id, R"("})"));
  WritePods({pod});
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!(*directory)->Name(&sidecar) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(sidecar.container_name, "sidecar");
}

TEST_F(PodDirectoryTest, AFailingApiServerIsCountedAndNamesNothing) {
  std::ofstream(dir_ + "/token") << "wrong-token\n";
  auto directory = PodDirectory::Start(Options());
  ASSERT_TRUE(directory.ok()) << directory.status();
  ASSERT_TRUE((*directory)->AwaitLists(1, absl::Seconds(20)));
  EXPECT_EQ((*directory)->stats().lists_failed, 1u);
  EXPECT_EQ((*directory)->stats().lists_ok, 0u);
  Workload web;
  web.container_id = kId;
  web.pod_uid = kUid;
  EXPECT_FALSE((*directory)->Name(&web));
  EXPECT_EQ(web.pod_name, "");
  EXPECT_EQ(web.container_id, kId);  // what the cgroup said stays
  // The token is read for every request: once it is right, the next list names the pod.
  std::ofstream(dir_ + "/token") << "secret-token\n";
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!(*directory)->Name(&web) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(web.pod_name, "web-7d9f");
  EXPECT_THAT(testing::ReadFile(dir_ + "/requests.log"), HasSubstr(" 401\n"));
}

TEST_F(PodDirectoryTest, AnUntrustedCertificateIsAFailureNotAnAnswer) {
  PodDirectory::Options options = Options();
  options.ca_file = "/etc/ssl/certs/ca-certificates.crt";  // not the server's CA
  auto directory = PodDirectory::Start(options);
  ASSERT_TRUE(directory.ok());
  ASSERT_TRUE((*directory)->AwaitLists(1, absl::Seconds(20)));
  EXPECT_EQ((*directory)->stats().lists_failed, 1u);
  Workload web;
  web.pod_uid = kUid;
  EXPECT_FALSE((*directory)->Name(&web));
}

TEST(PodDirectoryStartTest, RefusesMissingSettings) {
  PodDirectory::Options options;
  options.node = "n";
  EXPECT_FALSE(PodDirectory::Start(options).ok());
  options.api_server = "https://127.0.0.1:1";
  options.node = "";
  EXPECT_FALSE(PodDirectory::Start(options).ok());
}

TEST(PodDirectoryStartTest, StopsPromptlyWhileTheApiServerDoesNotAnswer) {
  // A listening socket that never answers: the destructor must not wait for the timeout.
  testing::BoundPort port;
  ASSERT_GT(port.port(), 0);
  ASSERT_EQ(listen(port.fd(), 4), 0);
  PodDirectory::Options options;
  options.api_server = absl::StrCat("https://127.0.0.1:", port.port());
  options.node = "n";
  options.request_timeout = absl::Seconds(60);
  auto directory = PodDirectory::Start(options);
  ASSERT_TRUE(directory.ok());
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  directory->reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

}  // namespace
}  // namespace reptrace

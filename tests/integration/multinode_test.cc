// Several nodes (issue 6): network namespaces with their own addresses on a bridge, one
// agent per node, the controller on the bridge, a Service virtual IP in front of a backend
// (MultiNodeCluster). Every request goes curl (node-1) -> Service VIP -> nginx (node-2) ->
// python3 http.server (node-3).
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/multinode_cluster.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

constexpr int kClientNode = 1, kProxyNode = 2, kBackendNode = 3;
constexpr char kServiceVip[] = "10.96.0.10";  // the Service in front of nginx
constexpr int kServicePort = 80;
// Ports inside the nodes' own namespaces: nothing else can hold them there.
constexpr int kProxyPort = 8080, kBackendPort = 8080;

const json* FindSpan(const json& spans, const std::string& service, const std::string& kind) {
  for (const auto& span : spans) {
    if (span["service"] == service && span["kind"] == kind) return &span;
  }
  return nullptr;
}

int SpanCount(const json& traces) {
  int count = 0;
  for (const auto& t : traces) count += t["span_count"].get<int>();
  return count;
}

class MultiNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status started = cluster_.Start(3);
    ASSERT_TRUE(started.ok()) << started;
    www_ = cluster_.dir() + "/www";
    mkdir(www_.c_str(), 0755);
    for (int i = 0; i < 20; ++i) std::ofstream(absl::StrCat(www_, "/page", i)) << "page " << i;
    absl::Status s = cluster_.StartPythonServer(kBackendNode, kBackendPort, www_);
    ASSERT_TRUE(s.ok()) << s;
    s = cluster_.StartNginxProxy(
        kProxyNode, kProxyPort,
        absl::StrCat(MultiNodeCluster::NodeAddress(kBackendNode), ":", kBackendPort));
    ASSERT_TRUE(s.ok()) << s;
    s = cluster_.AddServiceVip(kClientNode, kServiceVip, kServicePort, kProxyNode, kProxyPort);
    ASSERT_TRUE(s.ok()) << s;
  }

  // Page `page` fetched by a traced curl on the client node through the Service.
  void Fetch(int page) {
    CommandResult curl = cluster_.RunTraced(
        kClientNode, {"curl", "-sS", "--fail", "--max-time", "10",
                      absl::StrCat("http://", kServiceVip, "/page", page)});
    ASSERT_EQ(curl.exit_code, 0) << curl.err;
    ASSERT_EQ(curl.out, absl::StrCat("page ", page));
  }

  // Waits until `count` traces hold a span of `service` and have `spans` spans each;
  // returns the traces of `service` (all of them, not only those).
  json WaitForTraces(const std::string& service, int count, int spans) {
    json traces;
    const bool reached = WaitUntil(
        [&] {
          traces = cluster_.Traces(service);
          int whole = 0;
          for (const auto& t : traces) whole += t["span_count"].get<int>() == spans;
          return whole >= count;
        },
        absl::Seconds(30), absl::Milliseconds(200));
    EXPECT_TRUE(reached) << "waiting for " << count << " traces of " << service << " with "
                         << spans << " spans:\n"
                         << traces.dump(2);
    return traces;
  }

  // The trace of `summary` is the request crossing the three nodes: curl's client span on
  // node-1 -> nginx's server and client spans on node-2 -> python3's server span on node-3.
  void ExpectCrossesThreeNodes(const json& summary) {
    ASSERT_EQ(summary["span_count"], 4) << summary.dump(2);
    const json trace = cluster_.Trace(summary["trace_id"]);
    ASSERT_TRUE(trace.is_object()) << "reptracectl trace failed";
    const json& spans = trace["spans"];
    ASSERT_EQ(spans.size(), 4u) << trace.dump(2);
    const json* curl = FindSpan(spans, "curl", "client");
    const json* nginx_server = FindSpan(spans, "nginx", "server");
    const json* nginx_client = FindSpan(spans, "nginx", "client");
    const json* python = FindSpan(spans, "python3", "server");
    ASSERT_TRUE(curl && nginx_server && nginx_client && python) << trace.dump(2);
    EXPECT_EQ((*curl)["node"], MultiNodeCluster::NodeName(kClientNode)) << trace.dump(2);
    EXPECT_EQ((*nginx_server)["node"], MultiNodeCluster::NodeName(kProxyNode));
    EXPECT_EQ((*nginx_client)["node"], MultiNodeCluster::NodeName(kProxyNode));
    EXPECT_EQ((*python)["node"], MultiNodeCluster::NodeName(kBackendNode));
    EXPECT_TRUE((*curl)["parent_span_id"].is_null() || (*curl)["parent_span_id"] == "");
    EXPECT_EQ((*nginx_server)["parent_span_id"], (*curl)["span_id"]) << trace.dump(2);
    EXPECT_EQ((*nginx_client)["parent_span_id"], (*nginx_server)["span_id"]) << trace.dump(2);
    EXPECT_EQ((*python)["parent_span_id"], (*nginx_client)["span_id"]) << trace.dump(2);
    EXPECT_EQ((*python)["name"], (*curl)["name"]);
    // The client saw the Service, nginx was reached at its own address.
    EXPECT_EQ((*curl)["peer"], absl::StrCat(kServiceVip, ":", kServicePort));
    EXPECT_EQ((*nginx_client)["peer"],
              absl::StrCat(MultiNodeCluster::NodeAddress(kBackendNode), ":", kBackendPort));
  }

  MultiNodeCluster cluster_;
  std::string www_;
};

TEST_F(MultiNodeTest, ARequestCrossingThreeNodesIsOneTrace) {
  for (int page = 0; page < 3; ++page) Fetch(page);
  const json traces = WaitForTraces("curl", 3, 4);
  ASSERT_EQ(traces.size(), 3u) << traces.dump(2);
  std::map<std::string, int> names;
  for (const auto& summary : traces) {
    ExpectCrossesThreeNodes(summary);
    ++names[summary["root_name"].get<std::string>()];
  }
  EXPECT_EQ(names.size(), 3u) << traces.dump(2);  // one trace per request
  // One agent per node, each connected to the controller across the bridge.
  const json agents = cluster_.CtlJson({"agents"});
  ASSERT_TRUE(agents.is_object()) << "reptracectl agents failed";
  std::map<std::string, bool> connected;
  for (const auto& agent : agents["agents"]) {
    connected[agent["node"].get<std::string>()] = agent["connected"].get<bool>();
  }
  EXPECT_EQ(connected, (std::map<std::string, bool>{
                           {"node-1", true}, {"node-2", true}, {"node-3", true}}))
      << agents.dump(2);
}

// SIGKILL of node-2's agent: node-1 and node-3 keep being traced meanwhile; nginx's records
// wait in its ring, and the restarted agent (which nginx finds when it next opens a
// connection) delivers them: every request ends up one whole three-node trace.
TEST_F(MultiNodeTest, AnAgentKilledOnOneNodeLeavesTheOthersWorkingAndCatchesUpAfterRestart) {
  int requests = 0;
  for (; requests < 2; ++requests) Fetch(requests);
  WaitForTraces("curl", 2, 4);

  cluster_.KillAgent(kProxyNode, SIGKILL);
  for (; requests < 5; ++requests) Fetch(requests);
  // The other nodes' spans arrive while node-2 has no agent.
  json curl_traces, python_traces;
  ASSERT_TRUE(WaitUntil(
      [&] {
        curl_traces = cluster_.Traces("curl");
        python_traces = cluster_.Traces("python3");
        return curl_traces.size() >= 5u && python_traces.size() >= 5u;
      },
      absl::Seconds(30), absl::Milliseconds(200)))
      << curl_traces.dump(2) << python_traces.dump(2);
  EXPECT_EQ(curl_traces.size(), 5u);
  EXPECT_EQ(python_traces.size(), 5u);
  EXPECT_EQ(cluster_.Traces("nginx").size(), 2u) << "node-2 has no agent: nothing new from it";

  const absl::Status restarted = cluster_.StartAgent(kProxyNode);
  ASSERT_TRUE(restarted.ok()) << restarted;
  // nginx looks for the agent again when it next opens a connection (with back-off, at
  // most 2 s): keep requests coming until node-2's spans of the outage are there.
  json nginx_traces;
  ASSERT_TRUE(WaitUntil(
      [&] {
        Fetch(requests++);
        nginx_traces = cluster_.Traces("nginx");
        return nginx_traces.size() >= 5u;
      },
      absl::Seconds(20), absl::Milliseconds(500)))
      << nginx_traces.dump(2);
  ASSERT_LE(requests, 20);  // pages there are

  // Every request, before, during and after the outage, is one whole three-node trace.
  const json traces = WaitForTraces("curl", requests, 4);
  ASSERT_EQ(traces.size(), static_cast<size_t>(requests)) << traces.dump(2);
  for (const auto& summary : traces) ExpectCrossesThreeNodes(summary);
  EXPECT_EQ(cluster_.Traces("nginx").size(), static_cast<size_t>(requests));
  EXPECT_EQ(cluster_.Traces("python3").size(), static_cast<size_t>(requests));
  // node-2 has had two agents: the killed one, disconnected, and its connected successor.
  const json agents = cluster_.CtlJson({"agents"});
  ASSERT_TRUE(agents.is_object()) << "reptracectl agents failed";
  int node2_connected = 0, node2_disconnected = 0;
  for (const auto& agent : agents["agents"]) {
    if (agent["node"] != MultiNodeCluster::NodeName(kProxyNode)) continue;
    (agent["connected"].get<bool>() ? node2_connected : node2_disconnected)++;
  }
  EXPECT_EQ(node2_connected, 1) << agents.dump(2);
  EXPECT_EQ(node2_disconnected, 1) << agents.dump(2);
}

// node-3's link down for 10 s: what the controller acknowledged before stays, and the spans
// node-3 made meanwhile (requests inside node-3) arrive once the link is back; exactly once.
TEST_F(MultiNodeTest, ANodesLinkDownForTenSecondsLosesNoAcknowledgedData) {
  constexpr int kBefore = 5, kDuring = 5;
  for (int page = 0; page < kBefore; ++page) Fetch(page);
  json before = WaitForTraces("curl", kBefore, 4);
  ASSERT_EQ(before.size(), static_cast<size_t>(kBefore));

  ASSERT_TRUE(cluster_.SetLinkUp(kBackendNode, false).ok());
  const absl::Time link_down = absl::Now();
  // Requests inside node-3 (its own address still answers there): curl and python3 spans
  // that node-3's agent cannot send yet.
  const std::string backend = absl::StrCat("http://", MultiNodeCluster::NodeAddress(kBackendNode),
                                           ":", kBackendPort);
  for (int page = 0; page < kDuring; ++page) {
    CommandResult curl = cluster_.RunTraced(
        kBackendNode,
        {"curl", "-sS", "--fail", "--max-time", "10", absl::StrCat(backend, "/page", page)},
        "local-curl");
    ASSERT_EQ(curl.exit_code, 0) << curl.err;
  }
  // The outage lasts 10 s, as the scenario says (not a wait for something: the cut itself).
  absl::SleepFor(link_down + absl::Seconds(10) - absl::Now());
  EXPECT_EQ(cluster_.Traces("local-curl").size(), 0u) << "the link was not really down";
  ASSERT_TRUE(cluster_.SetLinkUp(kBackendNode, true).ok());

  const json during = WaitForTraces("local-curl", kDuring, 2);
  EXPECT_EQ(during.size(), static_cast<size_t>(kDuring)) << during.dump(2);
  for (const auto& summary : during) {
    const json trace = cluster_.Trace(summary["trace_id"]);
    ASSERT_EQ(trace["spans"].size(), 2u) << trace.dump(2);
    for (const auto& span : trace["spans"]) {
      EXPECT_EQ(span["node"], MultiNodeCluster::NodeName(kBackendNode)) << span;
    }
  }
  // Nothing lost, nothing twice: the traces before the cut are still whole, and the span
  // counts are exact.
  const json after = cluster_.Traces("curl");
  ASSERT_EQ(after.size(), static_cast<size_t>(kBefore)) << after.dump(2);
  for (const auto& summary : after) ExpectCrossesThreeNodes(summary);
  EXPECT_EQ(SpanCount(after), kBefore * 4);
  EXPECT_EQ(SpanCount(cluster_.Traces("")), kBefore * 4 + kDuring * 2);
  EXPECT_EQ(cluster_.Traces("python3").size(), static_cast<size_t>(kBefore + kDuring));
}

}  // namespace
}  // namespace reptrace::testing

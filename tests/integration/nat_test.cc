// Linking across address translation, as a Kubernetes Service does it: the client connects
// to a virtual IP, an iptables DNAT rule sends the connection to the server's real address,
// so the two ends see different 4-tuples. Two network namespaces made by the test stand
// for the client's and the server's pods, a veth pair for the network between them.
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"
#include "tests/testing/netns.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

constexpr char kClientAddress[] = "10.77.0.1";
constexpr char kServerAddress[] = "10.77.0.2";
constexpr char kServiceAddress[] = "10.96.0.10";  // the Service's virtual IP
constexpr char kTranslatedAddress[] = "10.77.0.3";  // the client node's SNAT address
constexpr int kServerPort = 8080;

class NatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status supported = NetNamespace::Supported();
    ASSERT_TRUE(supported.ok()) << supported;
    absl::StatusOr<std::unique_ptr<NetNamespace>> client = NetNamespace::Create("cli");
    absl::StatusOr<std::unique_ptr<NetNamespace>> server = NetNamespace::Create("srv");
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE(server.ok()) << server.status();
    client_ns_ = std::move(*client);
    server_ns_ = std::move(*server);
    const absl::Status linked =
        Link(*client_ns_, absl::StrCat(kClientAddress, "/24"), *server_ns_,
             absl::StrCat(kServerAddress, "/24"));
    ASSERT_TRUE(linked.ok()) << linked;
    // The Service range must be routable for the client before DNAT rewrites it (kube-proxy
    // relies on the pod's default route the same way).
    const absl::Status route =
        client_ns_->Run({"ip", "route", "add", "default", "via", kServerAddress});
    ASSERT_TRUE(route.ok()) << route;
    ASSERT_TRUE(stack_.StartController());
    ASSERT_TRUE(stack_.StartAgent());
    www_ = stack_.dir() + "/www";
    mkdir(www_.c_str(), 0755);
    for (int i = 0; i < 10; ++i) std::ofstream(absl::StrCat(www_, "/page", i)) << "page " << i;
  }

  // In the client's namespace: connections to the Service's kServiceAddress:80 go to the
  // server's kServerAddress:kServerPort.
  void AddServiceDnat() {
    const absl::Status dnat = client_ns_->Run(
        {"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", kServiceAddress,
         "--dport", "80", "-j", "DNAT", "--to-destination",
         absl::StrCat(kServerAddress, ":", kServerPort)});
    ASSERT_TRUE(dnat.ok()) << dnat;
  }

  // In the client's namespace: connections to the server leave from kTranslatedAddress.
  // The translated source is another address of the client's node (the server's ARP for it
  // is answered by the client's side of the link), so the server never sees the client's
  // own address: translating only the port would leave it unchanged whenever the kernel's
  // ephemeral port already lies in the SNAT range, and the ends would rightly be linked.
  void AddSourceSnat() {
    const absl::Status alias = client_ns_->Run(
        {"ip", "addr", "add", absl::StrCat(kTranslatedAddress, "/32"), "dev", "lo"});
    ASSERT_TRUE(alias.ok()) << alias;
    const absl::Status snat = client_ns_->Run({"iptables", "-t", "nat", "-A", "POSTROUTING",
                                               "-p", "tcp", "-d", kServerAddress, "-j", "SNAT",
                                               "--to-source", kTranslatedAddress});
    ASSERT_TRUE(snat.ok()) << snat;
  }

  // python3's http.server, traced, on the server's real address inside its namespace.
  void StartServer() {
    ProcessOptions options;
    options.env = stack_.HookEnv("web");
    options.cwd = www_;
    options.stderr_path = stack_.dir() + "/web.err";
    server_ = Process(server_ns_->Wrap({"/usr/bin/python3", "-m", "http.server", "--bind",
                                        kServerAddress, std::to_string(kServerPort)}),
                      options);
    ASSERT_TRUE(WaitUntil(
        [&] {
          return client_ns_
              ->Run({"curl", "-s", "-o", "/dev/null",
                     absl::StrCat("http://", kServerAddress, ":", kServerPort, "/")})
              .ok();
        },
        absl::Seconds(20), absl::Milliseconds(200)))
        << ReadFile(stack_.dir() + "/web.err");
  }

  // Each page fetched by a traced curl in the client's namespace, through `address`;
  // `inband_ports`: the curl frames its requests to these ports (REPTRACE_INBAND_PORTS).
  void FetchPages(const std::string& address, const std::string& inband_ports = "") {
    for (int i = 0; i < 10; ++i) {
      std::vector<std::string> argv = {"curl", "-sS", "--fail", "--max-time", "10",
                                       absl::StrCat("http://", address, "/page", i)};
      if (!inband_ports.empty()) {
        argv.insert(argv.begin(), {"env", absl::StrCat("REPTRACE_INBAND_PORTS=", inband_ports)});
      }
      CommandResult curl = stack_.RunTraced(client_ns_->Wrap(argv), "shop");
      ASSERT_EQ(curl.exit_code, 0) << curl.err;
      ASSERT_EQ(curl.out, absl::StrCat("page ", i));
    }
  }

  // Waits for `count` traces of service "shop" with two spans each; checks each is the
  // client span of page i with the server span of page i as its child.
  void ExpectLinkedTraces(int count) {
    json traces;
    ASSERT_TRUE(WaitUntil(
        [&] {
          traces = stack_.Traces("shop", 100);
          int linked = 0;
          for (const auto& t : traces) linked += t["span_count"].get<int>() == 2;
          return linked >= count;
        },
        absl::Seconds(20)))
        << traces.dump(2) << stack_.Logs();
    ASSERT_EQ(traces.size(), static_cast<size_t>(count)) << traces.dump(2);
    std::map<std::string, int> seen;
    for (const auto& t : traces) {
      json trace = stack_.Trace(t["trace_id"]);
      ASSERT_EQ(trace["spans"].size(), 2u) << trace.dump(2);
      const json* client = nullptr;
      const json* server = nullptr;
      for (const auto& span : trace["spans"]) {
        if (span["kind"] == "client") client = &span;
        if (span["kind"] == "server") server = &span;
      }
      ASSERT_TRUE(client && server) << trace.dump(2);
      EXPECT_EQ((*client)["service"], "shop");
      EXPECT_EQ((*server)["service"], "web");
      EXPECT_EQ((*server)["parent_span_id"], (*client)["span_id"]) << trace.dump(2);
      EXPECT_EQ((*server)["name"], (*client)["name"]);
      ++seen[(*client)["name"].get<std::string>()];
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(count));
  }

  Stack stack_;
  std::unique_ptr<NetNamespace> client_ns_;
  std::unique_ptr<NetNamespace> server_ns_;
  Process server_;
  std::string www_;
};

TEST_F(NatTest, BothEndsOfAConnectionThroughAServiceVirtualIpAreLinked) {
  // kube-proxy's iptables mode: the Service IP:80 is rewritten to the pod's IP:8080 on the
  // way out of the client's pod; the client's own address is kept.
  AddServiceDnat();
  StartServer();
  FetchPages(kServiceAddress);
  ExpectLinkedTraces(10);
  // The two ends really saw different addresses: the client its Service, the server itself.
  json traces = stack_.Traces("shop", 1);
  json trace = stack_.Trace(traces[0]["trace_id"]);
  for (const auto& span : trace["spans"]) {
    if (span["kind"] == "client") {
      EXPECT_EQ(span["peer"], absl::StrCat(kServiceAddress, ":80"));
    } else {
      EXPECT_EQ(span["peer"].get<std::string>().rfind(kClientAddress, 0), 0u) << span;
    }
  }
}

// With the source translated too (SNAT, as a NodePort or an egress gateway does), no
// endpoint of the two ends agrees, only the bytes do: identical requests from many
// clients would make that a guess, so the ends stay apart rather than be linked wrongly.
TEST_F(NatTest, WhenTheSourceIsTranslatedTooTheEndsStayApart) {
  AddServiceDnat();
  AddSourceSnat();
  StartServer();
  FetchPages(kServiceAddress);
  json client_traces, server_traces;
  ASSERT_TRUE(WaitUntil(
      [&] {
        client_traces = stack_.Traces("shop", 100);
        server_traces = stack_.Traces("web", 100);
        return client_traces.size() >= 10 && server_traces.size() >= 10;
      },
      absl::Seconds(20)))
      << client_traces.dump(2) << server_traces.dump(2);
  for (const auto& t : client_traces) EXPECT_EQ(t["span_count"], 1) << t.dump();
  for (const auto& t : server_traces) EXPECT_EQ(t["span_count"], 1) << t.dump();
  // The translation really happened: the server saw the node's address, not the client's.
  json server_trace = stack_.Trace(server_traces[0]["trace_id"]);
  ASSERT_EQ(server_trace["spans"].size(), 1u) << server_trace.dump(2);
  EXPECT_EQ(server_trace["spans"][0]["peer"].get<std::string>().rfind(kTranslatedAddress, 0),
            0u)
      << server_trace.dump(2);
}

// In-band mode carries the client span's id in the stream itself: whatever both
// translations did to the addresses, each server span gets its exact client as parent.
TEST_F(NatTest, InBandModeLinksTheEndsEvenWhenTheSourceIsTranslatedToo) {
  AddServiceDnat();
  AddSourceSnat();
  StartServer();
  FetchPages(kServiceAddress, "80");
  ExpectLinkedTraces(10);
  json traces = stack_.Traces("shop", 1);
  json trace = stack_.Trace(traces[0]["trace_id"]);
  for (const auto& span : trace["spans"]) {
    if (span["kind"] == "server") {
      EXPECT_EQ(span["peer"].get<std::string>().rfind(kTranslatedAddress, 0), 0u) << span;
    }
  }
}

}  // namespace
}  // namespace reptrace::testing

// Live control (issue 5) on real parts: a config set through the real reptracectl reaches
// the real agent, which publishes it on its config page, and programs already running
// under the hook (nginx, python3) follow it: tracing off and on again with exact stream
// offsets, a port filter, a rate limit, and a change made on another controller replica.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/config_page.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

// A span as stored, with what these tests look at.
struct StoredSpan {
  int64_t span_id = 0;
  int64_t parent_span_id = 0;  // 0: none
  std::string service;
  int64_t start_ns = 0;
  int64_t request_offset = 0;
  int64_t response_offset = 0;
  int local_port = 0;
  int peer_port = 0;
};

// One line of keepalive_client.py: a request and the offsets it went at.
struct ClientRequest {
  int64_t start_ns = 0;
  int64_t request_offset = 0;
  int64_t response_offset = 0;
};

class LiveConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stack_.StartController());
    www_ = stack_.dir() + "/www";
    mkdir(www_.c_str(), 0755);
    std::ofstream(www_ + "/f") << "a small file\n";
  }

  // Every stored span of `service`.
  std::vector<StoredSpan> Spans(const std::string& service) {
    pqxx::connection conn(stack_.db_conninfo());
    pqxx::work tx(conn);
    std::vector<StoredSpan> spans;
    for (const auto& row : tx.exec_params(
             "SELECT span_id, COALESCE(parent_span_id, 0), service, start_ns, request_offset, "
             "response_offset, local_port, peer_port FROM spans WHERE service = $1 "
             "ORDER BY start_ns",
             service)) {
      StoredSpan span;
      span.span_id = row[0].as<int64_t>();
      span.parent_span_id = row[1].as<int64_t>();
      span.service = row[2].as<std::string>();
      span.start_ns = row[3].as<int64_t>();
      span.request_offset = row[4].as<int64_t>();
      span.response_offset = row[5].as<int64_t>();
      span.local_port = row[6].as<int>();
      span.peer_port = row[7].as<int>();
      spans.push_back(span);
    }
    return spans;
  }

  // The requests keepalive_client.py has made so far.
  std::vector<ClientRequest> ClientRequests(const std::string& log_name) {
    std::vector<ClientRequest> requests;
    std::ifstream in(absl::StrCat(stack_.dir(), "/", log_name, ".out"));
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> fields = absl::StrSplit(line, ' ');
      ClientRequest request;
      if (fields.size() != 5 || !absl::SimpleAtoi(fields[1], &request.start_ns) ||
          !absl::SimpleAtoi(fields[2], &request.request_offset) ||
          !absl::SimpleAtoi(fields[3], &request.response_offset)) {
        continue;  // a line being written
      }
      requests.push_back(request);
    }
    return requests;
  }

  // Waits until the agent has applied config `version` (reptracectl agents).
  bool AgentApplied(uint64_t version, absl::Duration timeout) {
    return WaitUntil(
        [&] {
          json agents = stack_.CtlJson({"agents"});
          return agents.is_object() && agents["agents"].size() == 1 &&
                 agents["agents"][0]["config_version"].get<uint64_t>() >= version;
        },
        timeout, absl::Milliseconds(50));
  }

  uint64_t CurrentVersion() {
    json config = stack_.CtlJson({"config", "get"});
    return config.is_object() ? config["version"].get<uint64_t>() : 0;
  }

  static int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

  int StartNginx() {
    return stack_.StartNginx(absl::StrCat(
        "server { listen 127.0.0.1:$PORT; keepalive_requests 100000; keepalive_timeout 60s; "
        "location / { root ", www_, "; } }"));
  }

  Stack stack_;
  std::string www_;
};

// The first test: a long-running traced server and client, tracing switched off
// through the CLI (no span starts more than 2 s after), then on again (spans again, whose
// stream offsets are the bytes really exchanged on the connection meanwhile).
TEST_F(LiveConfigTest, EnabledFalseStopsSpansWithinTwoSecondsAndTrueResumesWithExactOffsets) {
  ASSERT_TRUE(stack_.StartAgent());
  const int port = StartNginx();
  ASSERT_GT(port, 0);
  Process client = stack_.StartTraced(
      {"/usr/bin/python3", REPTRACE_KEEPALIVE_CLIENT, std::to_string(port), "/f", "40"},
      "kaclient", "kaclient");
  ASSERT_TRUE(WaitUntil([&] { return Spans("kaclient").size() >= 5; }, absl::Seconds(20)))
      << stack_.Logs();

  // Off.
  const uint64_t before = CurrentVersion();
  ASSERT_GT(before, 0u);
  // Times taken as the commands are issued: the change may be in force before they return.
  const int64_t off_ns = NowNs();
  CommandResult off = stack_.Ctl({"config", "set", "enabled=false"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  ASSERT_TRUE(AgentApplied(before + 1, absl::Seconds(2))) << stack_.Logs();
  absl::SleepFor(absl::Seconds(4));
  const size_t requests_while_off = ClientRequests("kaclient").size();

  // On again.
  const int64_t on_ns = NowNs();
  CommandResult on = stack_.Ctl({"config", "set", "enabled=true"});
  ASSERT_EQ(on.exit_code, 0) << on.err;
  ASSERT_TRUE(AgentApplied(before + 2, absl::Seconds(2))) << stack_.Logs();
  absl::SleepFor(absl::Seconds(4));
  ASSERT_TRUE(client.Running()) << "the client failed: tracing changed what it saw";
  client.Stop(absl::Seconds(3));
  // The last spans reach the store (the agent sends a batch at least every 200 ms).
  absl::SleepFor(absl::Seconds(2));

  const std::vector<ClientRequest> requests = ClientRequests("kaclient");
  ASSERT_GT(requests.size(), requests_while_off);
  std::set<std::pair<int64_t, int64_t>> real_offsets;
  for (const ClientRequest& r : requests) real_offsets.insert({r.request_offset, r.response_offset});

  const std::vector<StoredSpan> client_spans = Spans("kaclient");
  const std::vector<StoredSpan> server_spans = Spans("nginx");
  int off_window = 0, after_on = 0;
  std::set<int64_t> client_ids;
  for (const StoredSpan& span : client_spans) {
    client_ids.insert(span.span_id);
    // Every span's offsets are those of a real request on the connection.
    EXPECT_EQ(real_offsets.count({span.request_offset, span.response_offset}), 1u)
        << "client span at offsets " << span.request_offset << "/" << span.response_offset;
    if (span.start_ns > off_ns + 2'000'000'000 && span.start_ns < on_ns) {
      ++off_window;
      ADD_FAILURE() << "client span started " << (span.start_ns - off_ns) / 1'000'000
                    << " ms after enabled=false (" << (on_ns - off_ns) / 1'000'000
                    << " ms before enabled=true), at offsets " << span.request_offset << "/"
                    << span.response_offset;
    }
    if (span.start_ns > on_ns + 2'000'000'000) ++after_on;
  }
  EXPECT_EQ(off_window, 0) << "client spans started more than 2 s after enabled=false";
  EXPECT_GT(after_on, 10) << "too few client spans after enabled=true";
  int server_after_on = 0;
  for (const StoredSpan& span : server_spans) {
    EXPECT_EQ(real_offsets.count({span.request_offset, span.response_offset}), 1u)
        << "server span at offsets " << span.request_offset << "/" << span.response_offset;
    EXPECT_FALSE(span.start_ns > off_ns + 2'000'000'000 && span.start_ns < on_ns)
        << "a server span started more than 2 s after enabled=false";
    if (span.start_ns > on_ns + 2'000'000'000) {
      ++server_after_on;
      // Its client is found by the same bytes at the same offset: linked.
      EXPECT_EQ(client_ids.count(span.parent_span_id), 1u)
          << "server span at offset " << span.request_offset << " has no client parent";
    }
  }
  EXPECT_GT(server_after_on, 10);
  // The spans after the pause continue the stream: their offsets count the bytes of the
  // requests made while tracing was off.
  int64_t last_offset = 0;
  for (const StoredSpan& span : client_spans) last_offset = std::max(last_offset, span.request_offset);
  EXPECT_GE(last_offset, requests[requests_while_off - 1].request_offset);
}

// A filter excluding a port stops only that port's spans, in programs started before the
// change (nginx, python3's http.server) and after it (curl).
TEST_F(LiveConfigTest, AFilterExcludingAPortStopsOnlyThatPortsSpans) {
  ASSERT_TRUE(stack_.StartAgent());
  const int nginx_port = StartNginx();
  const int python_port = stack_.StartPythonServer(www_);
  ASSERT_GT(nginx_port, 0);
  ASSERT_GT(python_port, 0);
  auto curl = [&](int port) {
    CommandResult result = stack_.RunTraced(
        {"curl", "-sS", "--fail", "--max-time", "10", "-o", "/dev/null",
         absl::StrCat("http://127.0.0.1:", port, "/f")},
        "curl");
    EXPECT_EQ(result.exit_code, 0) << result.err;
  };
  auto spans_on = [&](int port, int64_t since_ns) {
    int n = 0;
    for (const std::string service : {"curl", "nginx", "python3"}) {
      for (const StoredSpan& span : Spans(service)) {
        if (span.start_ns > since_ns && (span.local_port == port || span.peer_port == port)) ++n;
      }
    }
    return n;
  };
  // Both ports traced to begin with.
  const int64_t start_ns = NowNs();
  curl(nginx_port);
  curl(python_port);
  ASSERT_TRUE(WaitUntil([&] { return spans_on(nginx_port, start_ns) == 2 &&
                                     spans_on(python_port, start_ns) == 2; },
                        absl::Seconds(20)))
      << stack_.Logs();

  const std::string file = stack_.dir() + "/exclude.yaml";
  std::ofstream(file) << "filters:\n"
                      << "  - action: ACTION_EXCLUDE\n    local_ports: [{first: " << nginx_port
                      << "}]\n"
                      << "  - action: ACTION_EXCLUDE\n    peer_ports: [{first: " << nginx_port
                      << "}]\n";
  const uint64_t before = CurrentVersion();
  CommandResult set = stack_.Ctl({"config", "set", "-f", file});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  ASSERT_TRUE(AgentApplied(before + 1, absl::Seconds(2))) << stack_.Logs();

  const int64_t filtered_ns = NowNs();
  for (int i = 0; i < 3; ++i) {
    curl(nginx_port);
    curl(python_port);
  }
  ASSERT_TRUE(WaitUntil([&] { return spans_on(python_port, filtered_ns) == 6; },
                        absl::Seconds(20)))
      << "the other port's spans stopped too\n" << stack_.Logs();
  absl::SleepFor(absl::Seconds(1));  // a batch that would carry nginx's
  EXPECT_EQ(spans_on(nginx_port, filtered_ns), 0);
  EXPECT_EQ(spans_on(python_port, filtered_ns), 6);
}

// capture_bytes: with none captured, the agent cannot read the request line and names
// spans by their peer; with the bytes back, by the request again. nginx runs throughout.
TEST_F(LiveConfigTest, CaptureBytesDecideWhatTheAgentCanNameSpansAfter) {
  ASSERT_TRUE(stack_.StartAgent());
  const int port = StartNginx();
  ASSERT_GT(port, 0);
  auto names_after = [&](int64_t since_ns) {
    std::multiset<std::string> names;
    pqxx::connection conn(stack_.db_conninfo());
    pqxx::work tx(conn);
    for (const auto& row : tx.exec_params(
             "SELECT name FROM spans WHERE service = 'nginx' AND start_ns > $1", since_ns)) {
      names.insert(row[0].as<std::string>());
    }
    return names;
  };
  auto curl = [&] {
    CommandResult result = stack_.RunTraced(
        {"curl", "-sS", "--fail", "--max-time", "10", "-o", "/dev/null",
         absl::StrCat("http://127.0.0.1:", port, "/f")},
        "curl");
    EXPECT_EQ(result.exit_code, 0) << result.err;
  };
  const uint64_t before = CurrentVersion();
  CommandResult none = stack_.Ctl({"config", "set", "capture_bytes=0"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  ASSERT_TRUE(AgentApplied(before + 1, absl::Seconds(2))) << stack_.Logs();
  const int64_t none_ns = NowNs();
  curl();
  std::multiset<std::string> names;
  ASSERT_TRUE(WaitUntil([&] { return (names = names_after(none_ns)).size() == 1; },
                        absl::Seconds(20)));
  EXPECT_EQ(names.count("GET /f"), 0u) << *names.begin();

  CommandResult all = stack_.Ctl({"config", "set", "capture_bytes=128"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  ASSERT_TRUE(AgentApplied(before + 2, absl::Seconds(2))) << stack_.Logs();
  const int64_t all_ns = NowNs();
  curl();
  ASSERT_TRUE(WaitUntil([&] { return (names = names_after(all_ns)).size() == 1; },
                        absl::Seconds(20)));
  EXPECT_EQ(names.count("GET /f"), 1u) << *names.begin();
}

// max_events_per_second: a process asking faster than its bucket refills makes fewer
// records, counted by the agent as rate-limited, and keeps working.
TEST_F(LiveConfigTest, ARateLimitDropsRecordsAndTheAgentCountsThem) {
  ASSERT_TRUE(stack_.StartAgent());
  const int port = StartNginx();
  ASSERT_GT(port, 0);
  const uint64_t before = CurrentVersion();
  CommandResult set = stack_.Ctl({"config", "set", "max_events_per_second=5"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  ASSERT_TRUE(AgentApplied(before + 1, absl::Seconds(2))) << stack_.Logs();
  // 100 requests a second, each one a send and a receive in the client.
  Process client = stack_.StartTraced(
      {"/usr/bin/python3", REPTRACE_KEEPALIVE_CLIENT, std::to_string(port), "/f", "10"},
      "kaclient", "kaclient");
  absl::SleepFor(absl::Seconds(3));
  ASSERT_TRUE(client.Running());
  client.Stop(absl::Seconds(3));
  const size_t requests = ClientRequests("kaclient").size();
  EXPECT_GT(requests, 100u);
  json agents;
  EXPECT_TRUE(WaitUntil(
      [&] {
        agents = stack_.CtlJson({"agents"});
        return agents.is_object() && agents["agents"].size() == 1 &&
               agents["agents"][0]["counters"]["hook_events_rate_limited"].get<uint64_t>() >
                   requests;
      },
      absl::Seconds(10)))
      << agents.dump(2);
  // nginx (limited too) and the client: at most about a bucket's worth each in 3 s.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_LT(Spans("kaclient").size(), requests / 4);
}

// Two controller replicas on one database: a change made on replica A reaches the agent
// connected to replica B within 2 s, and its config page.
TEST_F(LiveConfigTest, AChangeOnOneReplicaReachesAnAgentOfAnotherWithinTwoSeconds) {
  const std::string replica_b = stack_.StartControllerReplica();
  ASSERT_FALSE(replica_b.empty());
  ASSERT_TRUE(stack_.StartAgent({"--controller", replica_b}));
  const uint64_t before = CurrentVersion();
  ASSERT_TRUE(AgentApplied(before, absl::Seconds(10))) << stack_.Logs();

  CommandResult set = stack_.Ctl({"config", "set", "capture_bytes=16"});  // on replica A
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_TRUE(AgentApplied(before + 1, absl::Seconds(2))) << stack_.Logs();

  // The page the hooked processes map says so.
  const int fd = open((stack_.socket_path() + kConfigPageSuffix).c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* memory = mmap(nullptr, sizeof(ConfigPage), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(memory, MAP_FAILED);
  const auto* page = static_cast<const ConfigPage*>(memory);
  EXPECT_EQ(page->magic, kConfigPageMagic);
  EXPECT_EQ(page->body.config_version, before + 1);
  EXPECT_EQ(page->body.capture_bytes, 16u);
  EXPECT_EQ(page->seq.load() % 2, 0u);
  munmap(memory, sizeof(ConfigPage));
}

}  // namespace
}  // namespace reptrace::testing

// Trace sampling on the whole data path: curl -> nginx -> python3 under the hook, the real
// agent and controller, a real PostgreSQL; the sampling probability set through the
// ConfigService (reptracectl config set); after the decision wait, about half of the
// requests' traces are stored, each whole, the rest gone without a trace, and
// `reptracectl stats` counts both.
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

constexpr int kRequests = 400;

struct StoredSpan {
  int64_t id;
  int64_t parent;  // 0: none
  std::string service;
  int kind;        // 1 client, 2 server
};

TEST(SamplingEndToEndTest, HalfOfTheTracesAreKeptEachWholeAndTheRestAreGone) {
  Stack stack;
  // A short decision wait: every span of one of these requests reaches the controller
  // within the agent's batch interval (200 ms).
  ASSERT_TRUE(stack.StartController(0, {"--sampling_decision_wait=2s"}));
  ASSERT_TRUE(stack.StartAgent());
  const std::string www = stack.dir() + "/www";
  mkdir(www.c_str(), 0755);
  std::ofstream(www + "/index.html") << "hello from python3\n";
  const int python_port = stack.StartPythonServer(www);
  ASSERT_GT(python_port, 0);
  const int nginx_port = stack.StartNginx(absl::StrCat(
      "server { listen 127.0.0.1:$PORT; keepalive_requests 10000; location / { proxy_pass "
      "http://127.0.0.1:",
      python_port, "; } }"));
  ASSERT_GT(nginx_port, 0);

  CommandResult set = stack.Ctl({"config", "set", "sampling.probability=0.5"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  // The controller's sampler follows the config as its agent streams do: once the agent
  // acknowledges version 2 the controller has heard of it; a second more covers the
  // sampler's tick (a quarter of the wait).
  json agents;
  ASSERT_TRUE(WaitUntil(
      [&] {
        agents = stack.CtlJson({"agents"});
        return agents.is_object() && agents["agents"].size() == 1 &&
               agents["agents"][0]["config_version"].get<uint64_t>() == 2;
      },
      absl::Seconds(10)))
      << agents.dump(2) << stack.Logs();
  absl::SleepFor(absl::Seconds(1));

  // kRequests requests, one trace each, on one keep-alive connection to nginx.
  std::vector<std::string> argv = {"curl", "-sS", "--fail", "--max-time", "60"};
  for (int i = 0; i < kRequests; ++i) {
    argv.push_back("-o");
    argv.push_back("/dev/null");
    argv.push_back(absl::StrCat("http://127.0.0.1:", nginx_port, "/index.html?request=", i));
  }
  const absl::Time started = absl::Now();
  CommandResult curl = stack.RunTraced(argv);
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  const absl::Duration requests_took = absl::Now() - started;

  // Every trace decided: nothing pending, kRequests decisions counted.
  json stats;
  ASSERT_TRUE(WaitUntil(
      [&] {
        stats = stack.CtlJson({"stats"});
        if (!stats.is_object()) return false;
        const json& s = stats["sampling"];
        return s["traces_pending"] == 0 &&
               s["kept"]["probability"]["traces"].get<int64_t>() +
                       s["dropped"]["probability"]["traces"].get<int64_t>() >=
                   kRequests;
      },
      absl::Seconds(40), absl::Milliseconds(250)))
      << stats.dump(2) << stack.Logs();
  const json& sampling = stats["sampling"];
  const int64_t kept = sampling["kept"]["probability"]["traces"].get<int64_t>();
  const int64_t dropped = sampling["dropped"]["probability"]["traces"].get<int64_t>();
  EXPECT_EQ(kept + dropped, kRequests) << stats.dump(2);
  EXPECT_EQ(sampling["kept"]["error"]["traces"], 0);  // keep rules are off
  EXPECT_EQ(sampling["kept"]["slow"]["traces"], 0);
  EXPECT_EQ(sampling["kept"]["probability"]["spans"].get<int64_t>(), 4 * kept);
  EXPECT_EQ(sampling["dropped"]["probability"]["spans"].get<int64_t>(), 4 * dropped);
  EXPECT_GE(kept, kRequests * 40 / 100) << stats.dump(2);
  EXPECT_LE(kept, kRequests * 60 / 100) << stats.dump(2);
  ASSERT_EQ(stats["agents"].size(), 1u);
  // The agent's stored spans count before sampling: every span of every request.
  EXPECT_GE(stats["agents"][0]["spans_stored"].get<int64_t>(), 4 * kRequests);

  // What is stored: exactly the kept traces, each the four nested spans of one request.
  std::map<int64_t, std::vector<StoredSpan>> traces;
  {
    pqxx::connection conn(stack.db_conninfo());
    pqxx::nontransaction tx(conn);
    for (const auto& row :
         tx.exec("SELECT trace_id, span_id, coalesce(parent_span_id, 0), service, kind"
                 " FROM spans")) {
      traces[row[0].as<int64_t>()].push_back({row[1].as<int64_t>(), row[2].as<int64_t>(),
                                              row[3].as<std::string>(), row[4].as<int>()});
    }
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM traces")[0].as<int64_t>(), kept);
  }
  EXPECT_EQ(static_cast<int64_t>(traces.size()), kept);
  for (const auto& [trace_id, spans] : traces) {
    ASSERT_EQ(spans.size(), 4u) << "trace " << trace_id;
    auto find = [&](const std::string& service, int kind) -> const StoredSpan* {
      for (const StoredSpan& span : spans) {
        if (span.service == service && span.kind == kind) return &span;
      }
      return nullptr;
    };
    const StoredSpan* curl_client = find("curl", 1);
    const StoredSpan* nginx_server = find("nginx", 2);
    const StoredSpan* nginx_client = find("nginx", 1);
    const StoredSpan* python_server = find("python3", 2);
    ASSERT_TRUE(curl_client && nginx_server && nginx_client && python_server)
        << "trace " << trace_id;
    EXPECT_EQ(curl_client->id, trace_id);
    EXPECT_EQ(curl_client->parent, 0);
    EXPECT_EQ(nginx_server->parent, curl_client->id);
    EXPECT_EQ(nginx_client->parent, nginx_server->id);
    EXPECT_EQ(python_server->parent, nginx_client->id);
  }
  std::cout << "sampling end to end: " << kRequests << " requests in " << requests_took
            << ", " << kept << " traces kept, " << dropped << " dropped\n";
}

}  // namespace
}  // namespace reptrace::testing

// The whole data path on real parts: real programs (curl, nginx, python3) under the hook,
// the real agent and controller binaries, a real PostgreSQL, queried through reptracectl.
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <string>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "common/event_record.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stack_.StartController());
    ASSERT_TRUE(stack_.StartAgent());
    www_ = stack_.dir() + "/www";
    mkdir(www_.c_str(), 0755);
    std::ofstream(www_ + "/index.html") << "hello from python3\n";
  }

  // Waits until `service` has `count` traces of `spans` spans each; returns them.
  json WaitForTraces(const std::string& service, size_t count, int spans,
                     absl::Duration timeout = absl::Seconds(20)) {
    json traces;
    WaitUntil(
        [&] {
          traces = stack_.Traces(service, 1000);
          if (traces.size() < count) return false;
          for (const auto& t : traces) {
            if (t["span_count"].get<int>() < spans) return false;
          }
          return true;
        },
        timeout);
    return traces;
  }

  CommandResult Curl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"curl", "-sS", "--fail", "--max-time", "10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return stack_.RunTraced(argv);
  }

  Stack stack_;
  std::string www_;
};

const json* FindSpan(const json& spans, const std::string& service, const std::string& kind) {
  for (const auto& span : spans) {
    if (span["service"] == service && span["kind"] == kind) return &span;
  }
  return nullptr;
}

// The trace of one request curl -> nginx -> python3 for `path`: four nested spans, named
// after the request; returns the trace.
json ExpectFourNestedSpans(Stack& stack, const json& summary, const std::string& path) {
  EXPECT_EQ(summary["span_count"], 4) << summary.dump(2);
  json trace = stack.Trace(summary["trace_id"]);
  EXPECT_TRUE(trace.is_object()) << "reptracectl trace failed";
  if (!trace.is_object()) return trace;
  const json& spans = trace["spans"];
  EXPECT_EQ(spans.size(), 4u) << trace.dump(2);
  const json* curl_client = FindSpan(spans, "curl", "client");
  const json* nginx_server = FindSpan(spans, "nginx", "server");
  const json* nginx_client = FindSpan(spans, "nginx", "client");
  const json* python_server = FindSpan(spans, "python3", "server");
  EXPECT_TRUE(curl_client && nginx_server && nginx_client && python_server) << trace.dump(2);
  if (!(curl_client && nginx_server && nginx_client && python_server)) return trace;

  // The tree: curl client -> nginx server -> nginx client -> python server.
  EXPECT_TRUE((*curl_client)["parent_span_id"].is_null() ||
              (*curl_client)["parent_span_id"] == "");
  EXPECT_EQ((*nginx_server)["parent_span_id"], (*curl_client)["span_id"]);
  EXPECT_EQ((*nginx_client)["parent_span_id"], (*nginx_server)["span_id"]);
  EXPECT_EQ((*python_server)["parent_span_id"], (*nginx_client)["span_id"]);
  EXPECT_EQ((*curl_client)["name"], "GET " + path);
  EXPECT_EQ((*python_server)["name"], "GET " + path);

  // Durations nest: each child lies inside its parent.
  const json* chain[] = {curl_client, nginx_server, nginx_client, python_server};
  for (int i = 1; i < 4; ++i) {
    const json& parent = *chain[i - 1];
    const json& child = *chain[i];
    const int64_t parent_end = parent["start_ns"].get<int64_t>() +
                               parent["duration_ns"].get<int64_t>();
    const int64_t child_end = child["start_ns"].get<int64_t>() +
                              child["duration_ns"].get<int64_t>();
    EXPECT_LE(parent["start_ns"].get<int64_t>(), child["start_ns"].get<int64_t>()) << i;
    EXPECT_LE(child_end, parent_end) << i;
    EXPECT_GT(child["duration_ns"].get<int64_t>(), 0) << i;
  }
  return trace;
}

TEST_F(EndToEndTest, CurlThroughNginxToPythonIsOneTraceOfFourNestedSpans) {
  const int python_port = stack_.StartPythonServer(www_);
  const int nginx_port = stack_.StartNginx(absl::StrCat(
      "server { listen 127.0.0.1:$PORT; location / { proxy_pass http://127.0.0.1:",
      python_port, "; } }"));
  ASSERT_GT(nginx_port, 0);

  CommandResult curl = Curl({absl::StrCat("http://127.0.0.1:", nginx_port, "/index.html")});
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  EXPECT_EQ(curl.out, "hello from python3\n");

  json traces = WaitForTraces("curl", 1, 4);
  ASSERT_EQ(traces.size(), 1u) << traces.dump(2);
  ExpectFourNestedSpans(stack_, traces[0], "/index.html");

  // The human waterfall names every span.
  CommandResult waterfall = stack_.Ctl({"trace", traces[0]["trace_id"]});
  ASSERT_EQ(waterfall.exit_code, 0) << waterfall.err;
  for (const char* service : {"curl", "nginx", "python3"}) {
    EXPECT_NE(waterfall.out.find(service), std::string::npos) << waterfall.out;
  }
}

// In-band mode with real programs: curl frames to nginx, nginx to python3; nginx answers
// curl framed, a static file through sendfile() included. Every program sees exactly the
// bytes it would without the hook, and each server span's parent is the client span its
// request's frame named.
TEST_F(EndToEndTest, InBandModeThroughNginxGivesTheSameTreeWithParentsFromTheFrames) {
  std::string big(300 * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131 + i / 977) & 0xff);
  mkdir((www_ + "/static").c_str(), 0755);
  std::ofstream(www_ + "/static/big.bin", std::ios::binary) << big;
  const int python_port = stack_.StartPythonServer(www_);
  const int nginx_port = stack_.StartNginx(
      absl::StrCat("server { listen 127.0.0.1:$PORT; sendfile on; location /static/ { root ",
                   www_, "; } location / { proxy_pass http://127.0.0.1:", python_port,
                   "; } }"),
      {{"REPTRACE_INBAND_PORTS", std::to_string(python_port)}});
  ASSERT_GT(nginx_port, 0);
  auto curl = [&](const std::string& path, const std::string& out) {
    return stack_.RunTraced({"env", absl::StrCat("REPTRACE_INBAND_PORTS=", nginx_port), "curl",
                             "-sS", "--fail", "--max-time", "10", "-o", out,
                             absl::StrCat("http://127.0.0.1:", nginx_port, path)});
  };
  const std::string page = stack_.dir() + "/page.out", file = stack_.dir() + "/big.out";
  CommandResult fetched = curl("/index.html", page);
  ASSERT_EQ(fetched.exit_code, 0) << fetched.err;
  fetched = curl("/static/big.bin", file);
  ASSERT_EQ(fetched.exit_code, 0) << fetched.err;
  EXPECT_EQ(ReadFile(page), "hello from python3\n");
  EXPECT_TRUE(ReadFile(file) == big) << "the file sent with sendfile() arrived changed";

  WaitForTraces("python3", 1, 4);  // the proxied request's trace, whole
  json traces = WaitForTraces("curl", 2, 2);
  ASSERT_EQ(traces.size(), 2u) << traces.dump(2);
  for (const auto& summary : traces) {
    if (summary["root_name"] == "GET /index.html") {
      ExpectFourNestedSpans(stack_, summary, "/index.html");
    } else {
      EXPECT_EQ(summary["root_name"], "GET /static/big.bin");
      EXPECT_EQ(summary["span_count"], 2) << summary.dump(2);
    }
  }
  // The three server spans' parents came in frames: they carry the frame's trace id.
  pqxx::connection conn(stack_.db_conninfo());
  pqxx::read_transaction tx(conn);
  const pqxx::row row = tx.exec1(
      "SELECT count(*) FILTER (WHERE attributes ? 'inband.trace_id'), count(*) "
      "FROM spans WHERE kind = 2");
  EXPECT_EQ(row[0].as<int>(), 3);
  EXPECT_EQ(row[1].as<int>(), 3);
}

TEST_F(EndToEndTest, TenRequestsOnOneKeepAliveConnectionGiveTenTraces) {
  for (int i = 0; i < 10; ++i) std::ofstream(absl::StrCat(www_, "/f", i)) << "file " << i;
  const int nginx_port = stack_.StartNginx(absl::StrCat(
      "server { listen 127.0.0.1:$PORT; keepalive_requests 1000; location / { root ", www_,
      "; } }"));
  ASSERT_GT(nginx_port, 0);
  std::vector<std::string> args = {"-w", "%{num_connects}\\n"};
  for (int i = 0; i < 10; ++i) {
    args.push_back("-o");
    args.push_back("/dev/null");
    args.push_back(absl::StrCat("http://127.0.0.1:", nginx_port, "/f", i));
  }
  CommandResult curl = Curl(args);
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  // curl opened one connection and reused it for the other nine requests.
  EXPECT_EQ(curl.out, "1\n0\n0\n0\n0\n0\n0\n0\n0\n0\n");

  json traces = WaitForTraces("curl", 10, 2);
  ASSERT_EQ(traces.size(), 10u) << traces.dump(2);
  std::set<std::string> names;
  for (const auto& t : traces) {
    EXPECT_EQ(t["span_count"], 2) << t.dump();
    names.insert(t["root_name"].get<std::string>());
  }
  EXPECT_EQ(names.size(), 10u) << traces.dump(2);
  EXPECT_EQ(names.count("GET /f0"), 1u);
  EXPECT_EQ(names.count("GET /f9"), 1u);
}

// python3's CGI server forks and execs a shell script (which runs curl in turn) to answer:
// the curl inside it is a child of the request python read, across a fork, an exec, a
// shell that traces nothing itself, and another fork + exec.
TEST_F(EndToEndTest, ARequestsCallsThroughForkAndExecBelongToIt) {
  const int nginx_port = stack_.StartNginx(absl::StrCat(
      "server { listen 127.0.0.1:$PORT; location / { root ", www_, "; } }"));
  ASSERT_GT(nginx_port, 0);
  const std::string cgi_dir = www_ + "/cgi-bin";
  mkdir(cgi_dir.c_str(), 0755);
  const std::string script = cgi_dir + "/fetch.sh";
  std::ofstream(script) << "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n"
                        << "REPTRACE_SERVICE=cgi-curl curl -sS --max-time 10 http://127.0.0.1:"
                        << nginx_port << "/index.html\n";
  chmod(script.c_str(), 0755);
  const int python_port = stack_.StartPythonServer(www_, "", {"--cgi"});
  ASSERT_GT(python_port, 0);

  CommandResult curl = Curl({absl::StrCat("http://127.0.0.1:", python_port, "/cgi-bin/fetch.sh")});
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  EXPECT_EQ(curl.out, "hello from python3\n");

  json traces = WaitForTraces("cgi-curl", 1, 4);
  ASSERT_EQ(traces.size(), 1u) << traces.dump(2);
  json trace = stack_.Trace(traces[0]["trace_id"]);
  ASSERT_TRUE(trace.is_object());
  const json& spans = trace["spans"];
  ASSERT_EQ(spans.size(), 4u) << trace.dump(2);
  const json* outer_client = FindSpan(spans, "curl", "client");
  const json* python_server = FindSpan(spans, "python3", "server");
  const json* inner_client = FindSpan(spans, "cgi-curl", "client");
  const json* nginx_server = FindSpan(spans, "nginx", "server");
  ASSERT_TRUE(outer_client && python_server && inner_client && nginx_server) << trace.dump(2);
  EXPECT_EQ((*python_server)["parent_span_id"], (*outer_client)["span_id"]);
  EXPECT_EQ((*inner_client)["parent_span_id"], (*python_server)["span_id"]);
  EXPECT_EQ((*nginx_server)["parent_span_id"], (*inner_client)["span_id"]);
  EXPECT_NE((*inner_client)["pid"], (*python_server)["pid"]);
  // python's CGI handler reads the request line one byte per recv(): the name comes from
  // the head put together from all of them.
  EXPECT_EQ((*python_server)["name"], "GET /cgi-bin/fetch.sh") << trace.dump(2);
  EXPECT_EQ((*inner_client)["name"], "GET /index.html");
}

// A forking server (like PostgreSQL's postmaster or sshd): the parent accepts, a forked
// child reads the request and answers on the connection it inherited.
TEST_F(EndToEndTest, AForkingServersChildServesTheRequestItsParentAccepted) {
  const std::string script = stack_.dir() + "/forking_server.py";
  std::ofstream(script) << R"(
import http.server, socketserver, sys
class Server(socketserver.ForkingMixIn, http.server.HTTPServer):
    pass
Server(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
)";
  const int port = FreePort();
  ProcessOptions options;
  options.env = stack_.HookEnv("forking");
  options.cwd = www_;
  Process server({"/usr/bin/python3", script, std::to_string(port)}, options);
  ASSERT_TRUE(WaitForPort(port, absl::Seconds(20)));

  for (int i = 0; i < 3; ++i) {
    CommandResult curl = Curl({absl::StrCat("http://127.0.0.1:", port, "/index.html")});
    ASSERT_EQ(curl.exit_code, 0) << curl.err;
    EXPECT_EQ(curl.out, "hello from python3\n");
  }
  json traces = WaitForTraces("forking", 3, 2);
  ASSERT_EQ(traces.size(), 3u) << traces.dump(2);
  std::set<int> server_pids;
  for (const auto& t : traces) {
    json trace = stack_.Trace(t["trace_id"]);
    const json* client = FindSpan(trace["spans"], "curl", "client");
    const json* served = FindSpan(trace["spans"], "forking", "server");
    ASSERT_TRUE(client && served) << trace.dump(2);
    EXPECT_EQ((*served)["parent_span_id"], (*client)["span_id"]);
    EXPECT_EQ((*served)["name"], "GET /index.html");
    server_pids.insert((*served)["pid"].get<int>());
  }
  // Each request was served by a child of its own, not by the server's first process.
  EXPECT_EQ(server_pids.size(), 3u);
  EXPECT_EQ(server_pids.count(server.pid()), 0u);
}

// DNS over UDP as resolvers do it: A and AAAA sent at once on one socket, the answers
// taken in whatever order they come. Each query is a span paired with its own answer.
TEST_F(EndToEndTest, DnsQueriesSentTogetherOnOneSocketAreSeparateSpans) {
  const std::string responder = stack_.dir() + "/dns_responder.py";
  std::ofstream(responder) << R"(
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    query, peer = s.recvfrom(512)
    answer = bytearray(query)
    answer[2] = 0x81
    answer[3] = 0x80 | (3 if b"missing" in query else 0)  # NXDOMAIN or NOERROR
    s.sendto(bytes(answer), peer)
)";
  const std::string client = stack_.dir() + "/dns_client.py";
  std::ofstream(client) << R"(
import socket, struct, sys
def query(id, name, qtype):
    q = struct.pack(">HHHHHH", id, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server = ("127.0.0.1", int(sys.argv[1]))
s.sendto(query(0x1111, "shop.test", 1), server)
s.sendto(query(0x2222, "shop.test", 28), server)
s.sendto(query(0x3333, "missing.test", 1), server)
ids = sorted(struct.unpack(">H", s.recvfrom(512)[0][:2])[0] for _ in range(3))
print(" ".join(hex(i) for i in ids))
)";
  ProcessOptions options;
  options.env = stack_.HookEnv("dns");
  options.stdout_path = stack_.dir() + "/dns.out";
  Process server({"/usr/bin/python3", responder}, options);
  const std::string port = WaitForLine(server, options.stdout_path, "", absl::Seconds(20));
  ASSERT_FALSE(port.empty());
  CommandResult run = stack_.RunTraced({"/usr/bin/python3", client, port}, "resolver");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x1111 0x2222 0x3333\n");

  json traces = WaitForTraces("resolver", 3, 1);
  ASSERT_EQ(traces.size(), 3u) << traces.dump(2);
  std::map<std::string, std::string> status_by_name;
  for (const auto& t : traces) {
    json trace = stack_.Trace(t["trace_id"]);
    const json* span = FindSpan(trace["spans"], "resolver", "client");
    ASSERT_TRUE(span) << trace.dump(2);
    status_by_name[(*span)["name"].get<std::string>()] = (*span)["status"].get<std::string>();
  }
  EXPECT_EQ(status_by_name, (std::map<std::string, std::string>{
                                {"DNS A shop.test", "ok"},
                                {"DNS AAAA shop.test", "ok"},
                                {"DNS A missing.test", "ok"}}));
}

// Connects to the agent's socket, writes `bytes`, and reports whether the agent closed the
// connection on its own within a few seconds.
bool AgentClosesAfter(const std::string& socket_path, const std::string& bytes) {
  const int fd = ConnectUnix(socket_path);
  if (fd < 0) return false;
  EXPECT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char c;
  ssize_t n = recv(fd, &c, 1, 0);
  close(fd);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST_F(EndToEndTest, GarbageOnTheAgentSocketIsDroppedAndCountedAndTracingGoesOn) {
  // Plain garbage.
  EXPECT_TRUE(AgentClosesAfter(stack_.socket_path(), std::string(300, 'x')));
  // A good hello followed by a record whose size does not match its type.
  HelloRecord hello{};
  hello.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kHello), sizeof(HelloRecord)};
  hello.version = kWireVersion;
  hello.pid = 424242;
  std::snprintf(hello.service, sizeof(hello.service), "garbage");
  std::snprintf(hello.process, sizeof(hello.process), "garbage");
  RecordHeader bad = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), 12};
  std::string bytes(reinterpret_cast<const char*>(&hello), sizeof(hello));
  bytes.append(reinterpret_cast<const char*>(&bad), sizeof(bad));
  bytes.append(64, '\0');
  EXPECT_TRUE(AgentClosesAfter(stack_.socket_path(), bytes));
  // A truncated record: half an event, then the writer goes away.
  {
    const int fd = ConnectUnix(stack_.socket_path());
    ASSERT_GE(fd, 0);
    EventRecord event{};
    event.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent),
                    sizeof(EventRecord)};
    std::string partial(reinterpret_cast<const char*>(&hello), sizeof(hello));
    partial.append(reinterpret_cast<const char*>(&event), sizeof(event) / 2);
    ASSERT_EQ(send(fd, partial.data(), partial.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(partial.size()));
    close(fd);
  }

  // The agent reports the three malformed connections...
  json agents;
  bool counted = WaitUntil(
      [&] {
        agents = stack_.CtlJson({"agents"});
        if (!agents.is_object() || agents["agents"].empty()) return false;
        const json& counters = agents["agents"][0]["counters"];
        return counters.contains("records_malformed") &&
               counters["records_malformed"].get<uint64_t>() >= 3;
      },
      absl::Seconds(20));
  EXPECT_TRUE(counted) << agents.dump(2);

  // ...and a good request afterwards is still traced.
  const int python_port = stack_.StartPythonServer(www_);
  CommandResult curl = Curl({absl::StrCat("http://127.0.0.1:", python_port, "/index.html")});
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  json traces = WaitForTraces("curl", 1, 2);
  ASSERT_EQ(traces.size(), 1u) << traces.dump(2);
  EXPECT_EQ(traces[0]["span_count"], 2);
}

TEST_F(EndToEndTest, AConfigChangeReachesTheAgentWhichAcknowledgesItsVersion) {
  json agents;
  auto agent_at = [&](uint64_t version) {
    agents = stack_.CtlJson({"agents"});
    return agents.is_object() && agents["agents"].size() == 1 &&
           agents["agents"][0]["config_version"].get<uint64_t>() == version;
  };
  // The current version (the default, 1) is pushed right after the agent's hello.
  ASSERT_TRUE(WaitUntil([&] { return agent_at(1); }, absl::Seconds(10)))
      << agents.dump(2) << stack_.Logs();

  CommandResult set = stack_.Ctl({"config", "set", "sampling.probability=0.5"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_TRUE(WaitUntil([&] { return agent_at(2); }, absl::Seconds(2),
                        absl::Milliseconds(50)))
      << agents.dump(2) << stack_.Logs();
}

TEST_F(EndToEndTest, NonsenseOnTheControllerPortLeavesItServing) {
  // Raw bytes that are not HTTP/2 on the gRPC port.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(stack_.controller_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string junk = "GARBAGE\r\n\r\n" + std::string(4096, '\x07');
  send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
  close(fd);

  const int python_port = stack_.StartPythonServer(www_);
  CommandResult curl = Curl({absl::StrCat("http://127.0.0.1:", python_port, "/index.html")});
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  json traces = WaitForTraces("curl", 1, 2);
  ASSERT_EQ(traces.size(), 1u) << traces.dump(2);
}

TEST_F(EndToEndTest, ControllerKilledMidStreamLosesNothingAndStoresNothingTwice) {
  const int python_port = stack_.StartPythonServer(www_);
  const std::string url = absl::StrCat("http://127.0.0.1:", python_port, "/index.html");
  const int port = stack_.controller_port();
  constexpr int kPerPhase = 10;

  for (int i = 0; i < kPerPhase; ++i) ASSERT_EQ(Curl({url}).exit_code, 0);
  // Killed without warning while the agent streams; requests go on meanwhile.
  stack_.StopController(SIGKILL);
  for (int i = 0; i < kPerPhase; ++i) ASSERT_EQ(Curl({url}).exit_code, 0);
  ASSERT_TRUE(stack_.StartController(port));
  for (int i = 0; i < kPerPhase; ++i) ASSERT_EQ(Curl({url}).exit_code, 0);

  json traces = WaitForTraces("curl", 3 * kPerPhase, 2, absl::Seconds(40));
  EXPECT_EQ(traces.size(), static_cast<size_t>(3 * kPerPhase)) << traces.dump(2);
  for (const auto& t : traces) EXPECT_EQ(t["span_count"], 2) << t.dump();

  // Exactly two spans per request in the database: nothing lost, nothing twice.
  pqxx::connection conn(stack_.db_conninfo());
  pqxx::read_transaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM spans")[0].as<int>(), 2 * 3 * kPerPhase);
}

}  // namespace
}  // namespace reptrace::testing

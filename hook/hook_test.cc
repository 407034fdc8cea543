// libreptrace.so under real programs: python3's http.server and curl (and hook_test_peer for
// the calls they do not make), each run with LD_PRELOAD, talking to a fake agent that this
// test binds on a Unix socket and that decodes the records exactly as the agent must.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/event_record.h"
#include "hook/testing/fake_agent.h"
#include "hook/testing/records.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

using std::chrono::milliseconds;
using testing::AgentStream;
using testing::CaptureOf;
using testing::Child;
using testing::ChildOptions;
using testing::ContiguousTotal;
using testing::Env;
using testing::EventsOf;
using testing::FakeAgent;
using testing::HookEnv;
using testing::MessageStarts;
using testing::NameOf;
using testing::Process;
using testing::TempDir;

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kCurl[] = "/usr/bin/curl";

// A python HTTP/1.1 (keep-alive) file server on 127.0.0.1, port 0; prints its port.
constexpr char kServerScript[] = R"(
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0),
                                functools.partial(Handler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
)";

// connect() to a refused port: blocking, then non-blocking (EINPROGRESS, then SO_ERROR).
constexpr char kRefusedScript[] = R"(
import select, socket, sys
port = int(sys.argv[1])
s = socket.socket(); blocking = s.connect_ex(('127.0.0.1', port)); s.close()
s = socket.socket(); s.setblocking(False); started = s.connect_ex(('127.0.0.1', port))
select.select([], [s], [], 5); later = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
s.close()
print(blocking, started, later)
)";

// fork(): the child uses a traced connection it inherited, and makes its own.
constexpr char kForkScript[] = R"(
import os, socket, sys
listener = socket.socket(); listener.bind(('127.0.0.1', 0)); listener.listen(8)
port = listener.getsockname()[1]
client = socket.socket(); client.connect(('127.0.0.1', port))
accepted, _ = listener.accept()
client.sendall(b'from-parent'); accepted.recv(100)
pid = os.fork()
if pid == 0:
    client.sendall(b'inherited')
    own = socket.socket(); own.connect(('127.0.0.1', port)); own.sendall(b'from-child')
    own.close()
    sys.exit(0)
os.waitpid(pid, 0)
second, _ = listener.accept(); second.recv(100); accepted.recv(100)
print(pid, flush=True)
)";

struct RunResult {
  int exit_code;
  std::string out;
};

// Runs argv to completion (-1 if it has not finished within 30 s), capturing its stdout.
RunResult RunProgram(const std::vector<std::string>& argv, const Env& env) {
  testing::CommandResult result =
      testing::RunCommand(argv, ChildOptions(env, ""), absl::Seconds(30));
  std::cerr << result.err;  // its stderr, in the test's log
  return {result.timed_out ? -1 : result.exit_code, result.out};
}

// A python http.server serving `dir`, its port read from its first line.
class PythonServer {
 public:
  PythonServer(const std::string& dir, const Env& env)
      : child_({kPython, "-c", kServerScript, dir}, env) {
    port_ = std::atoi(child_.ReadLine(absl::Seconds(10)).c_str());
  }
  int port() const { return port_; }
  pid_t pid() const { return child_.pid(); }
  void Stop() { child_.Stop(); }

 private:
  Child child_;
  int port_ = 0;
};

// A TCP port on 127.0.0.1 that refuses connections: bound, never listening, held open.
using RefusingPort = testing::BoundPort;

const AgentStream* StreamOf(const std::vector<AgentStream>& streams, pid_t pid) {
  for (const auto& s : streams) {
    if (s.has_hello && s.hello.pid == static_cast<uint32_t>(pid)) return &s;
  }
  return nullptr;
}

bool HasKind(const AgentStream* stream, EventKind kind) {
  return stream != nullptr && !EventsOf(*stream, kind).empty();
}

std::string Mapped(const char* ipv4) {
  in_addr a;
  inet_pton(AF_INET, ipv4, &a);
  std::string out(10, '\0');
  out += "\xff\xff";
  out.append(reinterpret_cast<const char*>(&a), 4);
  return out;
}

std::string Addr(const uint8_t (&a)[16]) { return std::string(reinterpret_cast<const char*>(a), 16); }

class HookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(REPTRACE_HOOK_PATH, R_OK), 0) << REPTRACE_HOOK_PATH;
    ASSERT_EQ(access(kPython, X_OK), 0);
    ASSERT_EQ(access(kCurl, X_OK), 0);
    www_.File("a.txt", std::string(1000, 'a') + "\n");
    www_.File("b.txt", "the second file\n");
  }
  std::string SocketPath(const char* name) const { return dir_.path() + "/" + name; }

  TempDir dir_;
  TempDir www_;
};

TEST_F(HookTest, CurlAndPythonServerDescribeTheSameConnection) {
  FakeAgent agent(SocketPath("agent.sock"));
  PythonServer server(www_.path(), HookEnv(SocketPath("agent.sock"),
                                           {{"REPTRACE_SERVICE", "web-frontend"}}));
  ASSERT_GT(server.port(), 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  // Two requests on one keep-alive connection.
  const RunResult curl =
      RunProgram({kCurl, "-sS", "--max-time", "10", base + "/a.txt", base + "/b.txt"},
                 HookEnv(SocketPath("agent.sock")));
  ASSERT_EQ(curl.exit_code, 0);
  EXPECT_EQ(curl.out, std::string(1000, 'a') + "\nthe second file\n");

  ASSERT_TRUE(agent.WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* py = StreamOf(streams, server.pid());
    int closes = 0;
    for (const auto& s : streams) closes += HasKind(&s, EventKind::kClose) ? 1 : 0;
    return py != nullptr && HasKind(py, EventKind::kClose) && closes >= 2;
  })) << "the close events of both ends never arrived";

  const std::vector<AgentStream> streams = agent.Streams();
  const AgentStream* py = StreamOf(streams, server.pid());
  const AgentStream* cl = nullptr;
  for (const auto& s : streams) {
    EXPECT_EQ(s.error, "");
    if (s.has_hello && NameOf(s.hello.process) == "curl") cl = &s;
  }
  ASSERT_NE(py, nullptr);
  ASSERT_NE(cl, nullptr);

  // Hello: who is talking.
  EXPECT_EQ(NameOf(py->hello.service), "web-frontend");
  EXPECT_EQ(NameOf(py->hello.process), "python3");
  EXPECT_EQ(NameOf(cl->hello.service), "curl");
  EXPECT_EQ(py->hello.version, kWireVersion);
  EXPECT_EQ(cl->hello.ppid, static_cast<uint32_t>(getpid()));
  EXPECT_GT(cl->hello.start_wall_ns, 0u);

  // curl connected (client), python accepted (server): the same 4-tuple seen from each end.
  const auto connects = EventsOf(*cl, EventKind::kConnect);
  ASSERT_EQ(connects.size(), 1u);
  const EventRecord& connect = connects[0];
  EXPECT_EQ(connect.role, static_cast<uint8_t>(SocketRole::kClient));
  EXPECT_EQ(connect.peer_port, server.port());
  EXPECT_EQ(connect.family, 4);
  EXPECT_EQ(Addr(connect.peer_addr), Mapped("127.0.0.1"));
  EXPECT_EQ(Addr(connect.local_addr), Mapped("127.0.0.1"));
  EXPECT_NE(connect.conn_id, 0u);
  EXPECT_TRUE(connect.result == 0 || (connect.result == -1 && connect.error == EINPROGRESS))
      << connect.result << " " << connect.error;
  EXPECT_EQ(connect.pid, cl->hello.pid);

  const std::vector<EventRecord> accepts = EventsOf(*py, EventKind::kAccept);
  const EventRecord* accept = nullptr;
  for (const auto& e : accepts) {
    if (e.peer_port == connect.local_port) accept = &e;
  }
  ASSERT_NE(accept, nullptr) << "no accept from curl's port " << connect.local_port;
  EXPECT_EQ(accept->role, static_cast<uint8_t>(SocketRole::kServer));
  EXPECT_EQ(accept->local_port, server.port());
  EXPECT_EQ(accept->family, 4);
  EXPECT_EQ(accept->pid, static_cast<uint32_t>(server.pid()));
  EXPECT_GT(accept->tid, 0u);

  // Each direction: the same bytes, the same offsets, the same message boundaries.
  const auto client_sent = EventsOf(*cl, EventKind::kSend, connect.conn_id);
  const auto client_received = EventsOf(*cl, EventKind::kRecv, connect.conn_id);
  const auto server_received = EventsOf(*py, EventKind::kRecv, accept->conn_id);
  const auto server_sent = EventsOf(*py, EventKind::kSend, accept->conn_id);
  const uint64_t requests = ContiguousTotal(client_sent, "client send");
  const uint64_t responses = ContiguousTotal(server_sent, "server send");
  EXPECT_GT(requests, 0u);
  EXPECT_EQ(ContiguousTotal(server_received, "server recv"), requests);
  EXPECT_EQ(ContiguousTotal(client_received, "client recv"), responses);
  EXPECT_GT(responses, 1017u);  // two bodies and their headers

  const auto request_starts = MessageStarts(client_sent);
  ASSERT_EQ(request_starts.size(), 2u);
  EXPECT_EQ(request_starts[0].offset, 0u);
  EXPECT_EQ(request_starts[0].capture.rfind("GET /a.txt HTTP/1.1\r\n", 0), 0u);
  EXPECT_EQ(request_starts[1].capture.rfind("GET /b.txt HTTP/1.1\r\n", 0), 0u);
  EXPECT_EQ(request_starts[0].hash,
            Fingerprint64(request_starts[0].capture.data(), request_starts[0].capture.size()));
  EXPECT_EQ(MessageStarts(server_received), request_starts);
  const auto response_starts = MessageStarts(server_sent);
  ASSERT_EQ(response_starts.size(), 2u);
  EXPECT_EQ(response_starts[0].capture.rfind("HTTP/1.", 0), 0u);
  EXPECT_EQ(response_starts[0].capture.size(), kCaptureBytes);
  EXPECT_EQ(MessageStarts(client_received), response_starts);

  // Timestamps: a request is sent before it is received.
  EXPECT_LE(client_sent.front().wall_ns, server_received.front().wall_ns);
  EXPECT_LE(server_received.front().mono_ns, server_sent.front().mono_ns);

  // The server saw curl hang up (end of stream), then closed.
  const auto eof = std::find_if(server_received.begin(), server_received.end(),
                                [](const EventRecord& e) { return e.result == 0; });
  ASSERT_NE(eof, server_received.end());
  EXPECT_EQ(eof->offset, requests);
  EXPECT_EQ(EventsOf(*py, EventKind::kClose, accept->conn_id).size(), 1u);
  EXPECT_EQ(EventsOf(*cl, EventKind::kClose, connect.conn_id).size(), 1u);

  // curl's exit flush delivered a final StatsRecord covering everything.
  ASSERT_FALSE(cl->stats.empty());
  EXPECT_EQ(cl->stats.back().events_recorded, cl->events.size());
  EXPECT_EQ(cl->stats.back().events_dropped, 0u);
}

// REPTRACE_CAPTURE_BYTES bounds what a message start carries; the fingerprint still
// covers the same bytes, so a client capturing 16 bytes and a server capturing the
// default 128 agree on it.
TEST_F(HookTest, ACaptureLimitShortensTheCaptureButNotTheFingerprint) {
  FakeAgent agent(SocketPath("agent.sock"));
  PythonServer server(www_.path(), HookEnv(SocketPath("agent.sock")));
  ASSERT_GT(server.port(), 0);
  const RunResult curl = RunProgram(
      {kCurl, "-sS", "--max-time", "10",
       "http://127.0.0.1:" + std::to_string(server.port()) + "/b.txt"},
      HookEnv(SocketPath("agent.sock"), {{"REPTRACE_CAPTURE_BYTES", "16"}}));
  ASSERT_EQ(curl.exit_code, 0);
  ASSERT_TRUE(agent.WaitFor([&](const std::vector<AgentStream>& streams) {
    int closes = 0;
    for (const auto& s : streams) closes += HasKind(&s, EventKind::kClose) ? 1 : 0;
    return StreamOf(streams, server.pid()) != nullptr && closes >= 2;
  }));
  const std::vector<AgentStream> streams = agent.Streams();
  const AgentStream* py = StreamOf(streams, server.pid());
  const AgentStream* cl = nullptr;
  for (const auto& s : streams) {
    EXPECT_EQ(s.error, "");
    if (s.has_hello && NameOf(s.hello.process) == "curl") cl = &s;
  }
  ASSERT_NE(cl, nullptr);
  const auto client_sent = MessageStarts(EventsOf(*cl, EventKind::kSend));
  const auto server_received = MessageStarts(EventsOf(*py, EventKind::kRecv));
  ASSERT_FALSE(client_sent.empty());
  ASSERT_FALSE(server_received.empty());
  EXPECT_EQ(client_sent[0].capture, "GET /b.txt HTTP/");
  EXPECT_GT(server_received[0].capture.size(), 16u);
  EXPECT_EQ(server_received[0].capture.rfind(client_sent[0].capture, 0), 0u);
  EXPECT_EQ(client_sent[0].hash, server_received[0].hash);
  EXPECT_EQ(server_received[0].hash, Fingerprint64(server_received[0].capture.data(),
                                                   server_received[0].capture.size()));
}

TEST_F(HookTest, CurlIsUnaffectedWithOrWithoutAnAgent) {
  PythonServer server(www_.path(), {});  // not hooked
  ASSERT_GT(server.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/b.txt";
  const std::vector<std::string> argv = {kCurl, "-s", "-i", "--max-time", "10", url};
  FakeAgent agent(SocketPath("agent.sock"));

  const RunResult plain = RunProgram(argv, {});
  const RunResult traced = RunProgram(argv, HookEnv(SocketPath("agent.sock")));
  const RunResult no_agent = RunProgram(argv, HookEnv(SocketPath("nobody-listens.sock")));

  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_NE(plain.out.find("the second file"), std::string::npos);
  // The Date header may tick between runs; everything else must be identical.
  auto without_date = [](std::string s) {
    const size_t at = s.find("Date: ");
    if (at != std::string::npos) s.erase(at, s.find("\r\n", at) - at);
    return s;
  };
  EXPECT_EQ(traced.exit_code, plain.exit_code);
  EXPECT_EQ(without_date(traced.out), without_date(plain.out));
  EXPECT_EQ(no_agent.exit_code, plain.exit_code);
  EXPECT_EQ(without_date(no_agent.out), without_date(plain.out));
  // ...and the hook really was there in the traced run.
  EXPECT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    return streams.size() == 1 && HasKind(&streams[0], EventKind::kClose);
  }));
}

TEST_F(HookTest, RefusedConnectFailsExactlyAsWithoutTheHook) {
  RefusingPort refused;
  FakeAgent agent(SocketPath("agent.sock"));
  const std::vector<std::string> curl = {kCurl, "-s", "--max-time", "10",
                                         "http://127.0.0.1:" + std::to_string(refused.port())};
  const RunResult curl_plain = RunProgram(curl, {});
  const RunResult curl_traced = RunProgram(curl, HookEnv(SocketPath("agent.sock")));
  EXPECT_EQ(curl_plain.exit_code, 7);  // CURLE_COULDNT_CONNECT
  EXPECT_EQ(curl_traced.exit_code, curl_plain.exit_code);
  EXPECT_EQ(curl_traced.out, curl_plain.out);

  const std::vector<std::string> py = {kPython, "-c", kRefusedScript,
                                       std::to_string(refused.port())};
  const RunResult py_plain = RunProgram(py, {});
  const RunResult py_traced = RunProgram(py, HookEnv(SocketPath("agent.sock"),
                                              {{"REPTRACE_SERVICE", "refused-probe"}}));
  EXPECT_EQ(py_plain.out, std::to_string(ECONNREFUSED) + " " + std::to_string(EINPROGRESS) +
                              " " + std::to_string(ECONNREFUSED) + "\n");
  EXPECT_EQ(py_traced.out, py_plain.out);
  EXPECT_EQ(py_traced.exit_code, 0);

  // The agent heard about both attempts, with the errno the program saw.
  ASSERT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    for (const auto& s : streams) {
      if (NameOf(s.hello.service) == "refused-probe" &&
          EventsOf(s, EventKind::kConnect).size() >= 3 && !s.stats.empty()) {
        return true;
      }
    }
    return false;
  }));
  for (const auto& s : agent.Streams()) {
    if (NameOf(s.hello.service) != "refused-probe") continue;
    const auto connects = EventsOf(s, EventKind::kConnect);
    EXPECT_EQ(connects[0].result, -1);
    EXPECT_EQ(connects[0].error, ECONNREFUSED);
    EXPECT_EQ(connects[0].peer_port, refused.port());
    EXPECT_EQ(connects[1].result, -1);
    EXPECT_EQ(connects[1].error, EINPROGRESS);
    EXPECT_NE(connects[0].conn_id, connects[1].conn_id);
    // The program learnt the outcome of the non-blocking connect from getsockopt(SO_ERROR):
    // so did the agent, on the same connection.
    ASSERT_EQ(connects.size(), 3u);
    EXPECT_EQ(connects[2].result, -1);
    EXPECT_EQ(connects[2].error, ECONNREFUSED);
    EXPECT_EQ(connects[2].conn_id, connects[1].conn_id);
  }
}

TEST_F(HookTest, EventsWaitInTheRingWhileNoAgentListensAndArriveWhenOneDoes) {
  const std::string late = SocketPath("late.sock");
  PythonServer server(www_.path(), HookEnv(late, {{"REPTRACE_SERVICE", "lonely"}}));
  ASSERT_GT(server.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/b.txt";
  const RunResult first = RunProgram({kCurl, "-s", "--max-time", "10", url}, {});
  EXPECT_EQ(first.exit_code, 0);
  EXPECT_EQ(first.out, "the second file\n");  // the server works without its agent
  std::this_thread::sleep_for(milliseconds(200));

  FakeAgent agent(late);  // the agent comes up
  // The hook has no thread of its own: the server's next traced connection is when it
  // looks for an agent again (back-off <= 2 s), and hands over the ring with the first
  // request's events still in it, not dropped: accept through close of both requests.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const RunResult again = RunProgram({kCurl, "-s", "--max-time", "10", url}, {});
        EXPECT_EQ(again.out, "the second file\n");
        const std::vector<AgentStream> streams = agent.Streams();
        const AgentStream* s = StreamOf(streams, server.pid());
        return s != nullptr && EventsOf(*s, EventKind::kAccept).size() >= 2;
      },
      absl::Seconds(8), absl::Milliseconds(300)));
  const pid_t pid = server.pid();
  server.Stop();
  ASSERT_TRUE(agent.WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* s = StreamOf(streams, pid);
    return s != nullptr && !s->stats.empty();
  }));
  const std::vector<AgentStream> streams = agent.Streams();
  const AgentStream* stream = StreamOf(streams, pid);
  int connections = 0;
  for (const auto& s : streams) connections += s.has_hello && s.hello.pid == uint32_t(pid);
  EXPECT_EQ(connections, 1);  // one agent connection: the ring it was handed held it all
  const auto accepts = EventsOf(*stream, EventKind::kAccept);
  ASSERT_GE(accepts.size(), 2u);
  // The first request's connection: its whole life, made while no agent listened.
  EXPECT_FALSE(EventsOf(*stream, EventKind::kRecv, accepts[0].conn_id).empty());
  EXPECT_EQ(EventsOf(*stream, EventKind::kClose, accepts[0].conn_id).size(), 1u);
  EXPECT_EQ(stream->stats.front().events_dropped, 0u);
}

// The agent goes away and another takes its place (a DaemonSet's rolling update) while a
// server lives on: the hook notices (a look at its agent connection at most once a second,
// when the program opens a connection), hands its ring to the new agent, and what the
// server recorded while no agent was there is in it, with every connection announced
// before its data.
TEST_F(HookTest, ANewAgentGetsTheRingAndWhatWasRecordedWhileNoneListened) {
  const std::string path = SocketPath("agent.sock");
  auto first = std::make_unique<FakeAgent>(path);
  PythonServer server(www_.path(), HookEnv(path, {{"REPTRACE_SERVICE", "restarted"}}));
  ASSERT_GT(server.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/b.txt";
  auto fetch = [&] {
    const RunResult r = RunProgram({kCurl, "-s", "--max-time", "10", url}, {});
    EXPECT_EQ(r.out, "the second file\n");
  };
  fetch();
  ASSERT_TRUE(first->WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* s = StreamOf(streams, server.pid());
    return s != nullptr && HasKind(s, EventKind::kClose);
  }));
  first.reset();  // the agent is gone
  fetch();        // recorded while no agent listens
  FakeAgent second(path);
  // Requests until the second agent hears from the server, and then one more.
  int fetched = 0;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        fetch();
        ++fetched;
        return StreamOf(second.Streams(), server.pid()) != nullptr;
      },
      absl::Seconds(10), absl::Milliseconds(200)));
  fetch();
  ASSERT_TRUE(second.WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* s = StreamOf(streams, server.pid());
    return s != nullptr &&
           EventsOf(*s, EventKind::kClose).size() >= static_cast<size_t>(fetched + 2);
  })) << "fetched " << fetched + 2 << " while or after the first agent was gone";
  const std::vector<AgentStream> streams = second.Streams();
  const AgentStream* s = StreamOf(streams, server.pid());
  EXPECT_EQ(s->error, "");
  EXPECT_TRUE(s->ring);
  // Every request since the first agent went, the one made while none listened included,
  // is whole: its accept, its request and its close.
  const auto accepts = EventsOf(*s, EventKind::kAccept);
  EXPECT_GE(accepts.size(), static_cast<size_t>(fetched + 2));
  for (const auto& accept : accepts) {
    EXPECT_FALSE(EventsOf(*s, EventKind::kRecv, accept.conn_id).empty()) << accept.conn_id;
    EXPECT_EQ(EventsOf(*s, EventKind::kClose, accept.conn_id).size(), 1u) << accept.conn_id;
  }
}

// A process that cannot make its ring (here a file size limit below the ring's size: the
// memfd's ftruncate would fail and send the program SIGXFSZ, which kills it) runs as
// without the hook, says hello without a ring, and reports what it could not record.
TEST_F(HookTest, WithoutARingTheProgramRunsAsPlainAndItsDropsAreReported) {
  FakeAgent agent(SocketPath("agent.sock"));
  PythonServer server(www_.path(), {});  // not traced
  ASSERT_GT(server.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/b.txt";
  const std::vector<std::string> limited = {
      "/bin/sh", "-c", "ulimit -f 1024 && exec \"$0\" \"$@\"", kCurl, "-s", "--max-time",
      "10", url};
  const RunResult plain = RunProgram(limited, {});
  const RunResult hooked =
      RunProgram(limited, HookEnv(SocketPath("agent.sock"), {{"REPTRACE_SERVICE", "small"}}));
  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_EQ(hooked.exit_code, 0);  // not killed by SIGXFSZ
  EXPECT_EQ(hooked.out, plain.out);
  EXPECT_EQ(hooked.out, "the second file\n");
  ASSERT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    for (const auto& s : streams) {
      if (NameOf(s.hello.service) == "small" && !s.stats.empty()) return true;
    }
    return false;
  }));
  for (const auto& s : agent.Streams()) {
    if (NameOf(s.hello.service) != "small") continue;
    EXPECT_EQ(s.error, "");
    EXPECT_FALSE(s.ring);
    EXPECT_TRUE(s.events.empty());
    // curl's connect, send, receive(s) and close: refused and counted.
    EXPECT_GE(s.stats.back().events_dropped, 4u);
  }
}

TEST_F(HookTest, WhatDoesNotFitInTheRingWhileNoAgentListensIsDroppedAndCounted) {
  const std::string late = SocketPath("late.sock");
  // 4000 request/response exchanges on one loopback connection: 16000 events, about four times
  // what the ring holds, made while no agent listens. Then the program waits for its agent.
  const char* script = R"py(
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
for _ in range(4000):
    cli.send(b"ping"); conn.recv(4); conn.send(b"pong"); cli.recv(4)
print("done", flush=True)
time.sleep(float(sys.argv[1]))
)py";
  Child program({kPython, "-c", script, "4"}, HookEnv(late, {{"REPTRACE_SERVICE", "flood"}}));
  ASSERT_EQ(program.ReadLine(absl::Seconds(30)), "done");
  FakeAgent agent(late);
  ASSERT_TRUE(agent.WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* s = StreamOf(streams, program.pid());
    return s != nullptr && !s->stats.empty();
  }));
  const StatsRecord stats = StreamOf(agent.Streams(), program.pid())->stats.front();
  EXPECT_GT(stats.events_dropped, 0u);                            // the overflow is counted
  EXPECT_GE(stats.events_recorded + stats.events_dropped, 16000u);  // and nothing else lost
}

TEST_F(HookTest, VectoredSendfileFortifiedAndPeekedCallsAreRecorded) {
  FakeAgent agent(SocketPath("agent.sock"));
  std::string body;
  for (int i = 0; body.size() < 1000; ++i) body += "line " + std::to_string(i) + "\n";
  body.resize(1000);
  const std::string file = www_.File("body.bin", body);
  const RunResult run =
      RunProgram({REPTRACE_HOOK_TEST_PEER, "6", file}, HookEnv(SocketPath("agent.sock")));
  ASSERT_EQ(run.exit_code, 0) << run.out;
  ASSERT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    return streams.size() == 1 && !streams[0].stats.empty() &&
           EventsOf(streams[0], EventKind::kClose).size() == 3;
  }));
  const AgentStream s = agent.Streams()[0];
  EXPECT_EQ(s.error, "");
  EXPECT_EQ(NameOf(s.hello.service), "hook_test_peer");

  // The connected UDP socket is traced (protocol 17), the Unix pair is not.
  std::vector<EventRecord> connects = EventsOf(s, EventKind::kConnect);
  const auto accepts = EventsOf(s, EventKind::kAccept);
  ASSERT_EQ(connects.size(), 2u);
  EXPECT_EQ(connects[0].protocol, 17);
  EXPECT_EQ(connects[0].peer_port, 9);
  const auto udp_sent = EventsOf(s, EventKind::kSend, connects[0].conn_id);
  ASSERT_EQ(udp_sent.size(), 1u);
  EXPECT_EQ(CaptureOf(udp_sent[0]), "x");
  connects.erase(connects.begin());
  EXPECT_EQ(connects[0].protocol, 6);
  ASSERT_EQ(connects.size(), 1u);
  ASSERT_EQ(accepts.size(), 1u);
  const uint64_t client = connects[0].conn_id;
  const uint64_t server = accepts[0].conn_id;
  EXPECT_NE(client, server);
  EXPECT_EQ(connects[0].family, 6);
  EXPECT_EQ(accepts[0].family, 6);
  const std::string loopback6(15, '\0');
  EXPECT_EQ(Addr(connects[0].peer_addr), loopback6 + '\1');
  EXPECT_EQ(connects[0].peer_port, accepts[0].local_port);
  EXPECT_EQ(connects[0].local_port, accepts[0].peer_port);
  EXPECT_EQ(connects[0].result, 0);

  // writev gathers its iovecs into one capture; readv scatters the same bytes.
  const auto client_sent = EventsOf(s, EventKind::kSend, client);
  ASSERT_EQ(client_sent.size(), 2u);  // writev, send("bye")
  EXPECT_EQ(client_sent[0].result, 22);
  EXPECT_TRUE(client_sent[0].flags & kFlagMessageStart);
  EXPECT_EQ(CaptureOf(client_sent[0]), "PING vectored request\n");
  EXPECT_EQ(client_sent[0].hash, Fingerprint64("PING vectored request\n", 22));
  EXPECT_EQ(client_sent[1].offset, 22u);
  EXPECT_EQ(CaptureOf(client_sent[1]), "bye");

  // The peeked "bye" is not counted twice: 22 + 3 bytes, then end of stream at 25.
  const auto server_received = EventsOf(s, EventKind::kRecv, server);
  EXPECT_EQ(ContiguousTotal(server_received, "server recv"), 25u);
  EXPECT_EQ(MessageStarts(server_received).front().capture, "PING vectored request\n");
  ASSERT_FALSE(server_received.empty());
  EXPECT_EQ(server_received.back().result, 0);
  EXPECT_EQ(server_received.back().offset, 25u);

  // sendfile: bytes counted, nothing captured; the fortified read sees them all.
  const auto server_sent = EventsOf(s, EventKind::kSend, server);
  EXPECT_EQ(ContiguousTotal(server_sent, "server sendfile"), 1000u);
  ASSERT_FALSE(server_sent.empty());
  EXPECT_TRUE(server_sent[0].flags & kFlagMessageStart);
  EXPECT_EQ(server_sent[0].capture_len, 0);
  const auto client_received = EventsOf(s, EventKind::kRecv, client);
  EXPECT_EQ(ContiguousTotal(client_received, "client __read_chk"), 1000u);
  ASSERT_FALSE(client_received.empty());
  EXPECT_EQ(CaptureOf(client_received[0]), body.substr(0, CaptureOf(client_received[0]).size()));
  EXPECT_GT(client_received[0].capture_len, 0);

  for (const auto& e : s.events) {
    EXPECT_EQ(e.pid, s.hello.pid);
    EXPECT_GT(e.tid, 0u);
    EXPECT_GT(e.wall_ns, s.hello.start_wall_ns - 1);
  }
  EXPECT_EQ(s.stats.back().events_recorded, s.events.size());
}

TEST_F(HookTest, ForkChildTracesInheritedAndOwnConnectionsUnderItsOwnPid) {
  FakeAgent agent(SocketPath("agent.sock"));
  Child parent({kPython, "-c", kForkScript}, HookEnv(SocketPath("agent.sock")));
  const pid_t child_pid = std::atoi(parent.ReadLine(absl::Seconds(10)).c_str());
  ASSERT_GT(child_pid, 0);
  ASSERT_EQ(parent.Wait(absl::Seconds(10)), 0);
  ASSERT_TRUE(agent.WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* c = StreamOf(streams, child_pid);
    return c != nullptr && !c->stats.empty() && streams.size() >= 2 &&
           EventsOf(*c, EventKind::kSend).size() >= 2 &&
           std::all_of(streams.begin(), streams.end(),
                       [](const AgentStream& s) { return !s.stats.empty(); });
  }));
  const std::vector<AgentStream> streams = agent.Streams();
  const AgentStream* child = StreamOf(streams, child_pid);
  const AgentStream* parent_stream = nullptr;
  for (const auto& s : streams) {
    if (s.has_hello && s.hello.pid != static_cast<uint32_t>(child_pid)) parent_stream = &s;
  }
  ASSERT_NE(parent_stream, nullptr);
  EXPECT_EQ(child->hello.ppid, parent_stream->hello.pid);
  // The child's main thread continues the parent's forking (main) thread.
  EXPECT_EQ(child->hello.cause_pid, parent_stream->hello.pid);
  EXPECT_EQ(child->hello.cause_tid, parent_stream->hello.pid);
  EXPECT_EQ(parent_stream->hello.cause_pid, 0u);

  // The child traced the connection it inherited (announced again on its own agent
  // connection, offsets going on from the parent's 11 bytes) and its own.
  const auto reannounced = EventsOf(*child, EventKind::kConnect, 0, /*reannounced=*/true);
  ASSERT_EQ(reannounced.size(), 1u);
  const EventRecord& inherited = reannounced[0];
  EXPECT_EQ(inherited.offset, 11u);  // bytes sent on it before (by the parent)
  const auto child_connects = EventsOf(*child, EventKind::kConnect);
  ASSERT_EQ(child_connects.size(), 1u);
  const EventRecord& own = child_connects[0];
  const auto inherited_sends = EventsOf(*child, EventKind::kSend, inherited.conn_id);
  ASSERT_EQ(inherited_sends.size(), 1u);
  // It continues the parent's message ("from-parent" + "inherited"): no message start.
  EXPECT_EQ(inherited_sends[0].offset, 11u);
  EXPECT_EQ(inherited_sends[0].result, 9);
  EXPECT_EQ(inherited_sends[0].flags & kFlagMessageStart, 0);
  const auto own_sends = EventsOf(*child, EventKind::kSend, own.conn_id);
  ASSERT_EQ(own_sends.size(), 1u);
  EXPECT_EQ(CaptureOf(own_sends[0]), "from-child");
  EXPECT_EQ(own_sends[0].offset, 0u);
  EXPECT_EQ(EventsOf(*child, EventKind::kSend).size(), 2u);
  for (const auto& e : child->events) EXPECT_EQ(e.pid, static_cast<uint32_t>(child_pid));
  // Its counters started from zero at the fork.
  EXPECT_EQ(child->stats.back().events_recorded, child->events.size());

  // The parent saw its own connection from both ends, including the bytes the child sent
  // on it (they arrived in the parent: 11 + 9 bytes, one message), and the child's own.
  const auto parent_accepts = EventsOf(*parent_stream, EventKind::kAccept);
  ASSERT_EQ(parent_accepts.size(), 2u);
  const auto first = EventsOf(*parent_stream, EventKind::kRecv, parent_accepts[0].conn_id);
  EXPECT_EQ(ContiguousTotal(first, "parent recv"), 20u);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(CaptureOf(first[0]), "from-parent");
  const auto second = EventsOf(*parent_stream, EventKind::kRecv, parent_accepts[1].conn_id);
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(CaptureOf(second[0]), "from-child");
  EXPECT_EQ(parent_accepts[1].peer_port, own.local_port);
  for (const auto& e : EventsOf(*parent_stream, EventKind::kSend)) {
    EXPECT_EQ(CaptureOf(e), "from-parent");
  }
}

}  // namespace
}  // namespace reptrace

namespace reptrace {
namespace {

// The streams of one process (it may reconnect: several streams, one pid).
std::vector<AgentStream> StreamsOf(const std::vector<AgentStream>& streams, uint32_t pid) {
  std::vector<AgentStream> out;
  for (const auto& s : streams) {
    if (s.has_hello && s.hello.pid == pid) out.push_back(s);
  }
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

class HookCoverageTest : public HookTest {
 protected:
  // Runs the coverage peer in `mode` without the hook, then with it (and an agent): both
  // must print the same and exit 0. Returns the hooked run's streams once `done` holds.
  std::vector<AgentStream> RunBothWays(const std::vector<std::string>& args,
                                       const std::function<bool(const std::vector<AgentStream>&)>& done,
                                       std::string* out = nullptr) {
    std::vector<std::string> argv = {REPTRACE_HOOK_COVERAGE_PEER};
    argv.insert(argv.end(), args.begin(), args.end());
    const RunResult plain = RunProgram(argv, {});
    EXPECT_EQ(plain.exit_code, 0) << plain.out;
    FakeAgent agent(SocketPath("agent.sock"));
    const RunResult hooked = RunProgram(argv, HookEnv(SocketPath("agent.sock")));
    EXPECT_EQ(hooked.exit_code, 0) << hooked.out;
    EXPECT_EQ(Lines(hooked.out).size(), Lines(plain.out).size());
    if (out != nullptr) *out = hooked.out;
    EXPECT_TRUE(agent.WaitFor(done)) << "agent did not get what was expected";
    for (const auto& s : agent.Streams()) EXPECT_EQ(s.error, "");
    return agent.Streams();
  }
};

bool HasStatsAndClose(const std::vector<AgentStream>& streams, size_t closes) {
  return streams.size() == 1 && !streams[0].stats.empty() &&
         EventsOf(streams[0], EventKind::kClose).size() >= closes;
}

TEST_F(HookCoverageTest, DuplicatedFdsAreOneConnectionWithExactOffsets) {
  std::string out;
  const auto streams = RunBothWays({"dup"}, [](const auto& s) { return HasStatsAndClose(s, 2); },
                                   &out);
  EXPECT_EQ(out, "aaaabbbccd\n");
  ASSERT_EQ(streams.size(), 1u);
  const AgentStream& s = streams[0];
  const auto connects = EventsOf(s, EventKind::kConnect);
  ASSERT_EQ(connects.size(), 1u);
  const uint64_t client = connects[0].conn_id;
  const auto sent = EventsOf(s, EventKind::kSend, client);
  ASSERT_EQ(sent.size(), 4u);  // write(client), write(dup), send(dup2), write(F_DUPFD)
  EXPECT_EQ(ContiguousTotal(sent, "sent through duplicates"), 10u);
  // A data record names no fd (the connection is what counts): the sends through fd 200
  // and >= 300 are the ones above, on the same connection. One close, when the last
  // duplicate (>= 300) closed, after every send.
  for (const auto& e : sent) EXPECT_EQ(e.header.type, static_cast<uint16_t>(RecordType::kData));
  const auto closes = EventsOf(s, EventKind::kClose, client);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_GE(closes[0].fd, 300);
  EXPECT_GE(closes[0].mono_ns, sent[3].mono_ns);
}

TEST_F(HookCoverageTest, PeekIsNotConsumptionWaitallCountsWhatMovedEagainRecordsNothing) {
  std::string out;
  const auto streams =
      RunBothWays({"peek"}, [](const auto& s) { return HasStatsAndClose(s, 2); }, &out);
  EXPECT_EQ(out, "0123456789abcdef\n");
  ASSERT_EQ(streams.size(), 1u);
  const auto accepts = EventsOf(streams[0], EventKind::kAccept);
  ASSERT_EQ(accepts.size(), 1u);
  const auto received = EventsOf(streams[0], EventKind::kRecv, accepts[0].conn_id);
  ASSERT_EQ(received.size(), 2u);  // the MSG_WAITALL read, then end of stream
  EXPECT_EQ(received[0].result, 16);
  EXPECT_EQ(received[0].offset, 0u);
  EXPECT_EQ(CaptureOf(received[0]), "0123456789abcdef");
  EXPECT_EQ(received[1].result, 0);
  EXPECT_EQ(received[1].offset, 16u);
}

void CheckUdp(const std::vector<AgentStream>& streams, uint8_t client_family,
              uint8_t server_family) {
  ASSERT_EQ(streams.size(), 1u);
  const AgentStream& s = streams[0];
  const auto connects = EventsOf(s, EventKind::kConnect);
  const auto accepts = EventsOf(s, EventKind::kAccept);
  ASSERT_EQ(connects.size(), 1u);
  ASSERT_EQ(accepts.size(), 1u);
  EXPECT_EQ(connects[0].protocol, 17);
  EXPECT_EQ(accepts[0].protocol, 17);
  EXPECT_EQ(connects[0].role, static_cast<uint8_t>(SocketRole::kClient));
  EXPECT_EQ(accepts[0].role, static_cast<uint8_t>(SocketRole::kServer));
  EXPECT_EQ(connects[0].family, client_family);
  EXPECT_EQ(accepts[0].family, server_family);
  EXPECT_EQ(connects[0].peer_port, accepts[0].local_port);
  const uint64_t client = connects[0].conn_id;
  const uint64_t server = accepts[0].conn_id;
  // Every datagram is one event, one message; sendmmsg/recvmmsg: one event per datagram.
  const auto client_sent = EventsOf(s, EventKind::kSend, client);
  ASSERT_EQ(client_sent.size(), 4u);
  EXPECT_EQ(ContiguousTotal(client_sent, "client datagrams"), 4u + 3 + 5 + 7);
  const char* expected[4] = {"ping", "one", "three", "seven!!"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(CaptureOf(client_sent[i]), expected[i]);
    EXPECT_TRUE(client_sent[i].flags & kFlagMessageStart);
    EXPECT_EQ(client_sent[i].protocol, 17);
    EXPECT_EQ(client_sent[i].peer_port, accepts[0].local_port);
  }
  const auto server_received = EventsOf(s, EventKind::kRecv, server);
  ASSERT_EQ(server_received.size(), 4u);
  EXPECT_EQ(ContiguousTotal(server_received, "server datagrams"), 4u + 3 + 5 + 7);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(CaptureOf(server_received[i]), expected[i]);
    // The datagram's own peer: the client's port.
    EXPECT_EQ(server_received[i].peer_port, connects[0].local_port);
    EXPECT_EQ(server_received[i].family, server_family);
  }
  const auto server_sent = EventsOf(s, EventKind::kSend, server);
  ASSERT_EQ(server_sent.size(), 2u);
  EXPECT_EQ(CaptureOf(server_sent[0]), "pong!");
  EXPECT_EQ(CaptureOf(server_sent[1]), "vector");
  EXPECT_EQ(server_sent[1].offset, 5u);
  const auto client_received = EventsOf(s, EventKind::kRecv, client);
  ASSERT_EQ(client_received.size(), 2u);
  EXPECT_EQ(ContiguousTotal(client_received, "client responses"), 11u);
  EXPECT_EQ(CaptureOf(client_received[1]), "vector");
}

TEST_F(HookCoverageTest, UdpOverIpv4IsTracedPerDatagram) {
  CheckUdp(RunBothWays({"udp", "4"}, [](const auto& s) { return HasStatsAndClose(s, 2); }), 4,
           4);
}

TEST_F(HookCoverageTest, UdpOverIpv6IsTracedPerDatagram) {
  CheckUdp(RunBothWays({"udp", "6"}, [](const auto& s) { return HasStatsAndClose(s, 2); }), 6,
           6);
}

TEST_F(HookCoverageTest, AV6SocketTalkingToAV4MappedPeerReportsFamily4) {
  CheckUdp(RunBothWays({"udp", "mapped"}, [](const auto& s) { return HasStatsAndClose(s, 2); }),
           4, 4);
}

// The library exports exactly the entry points its version script lists (the calls it
// interposes), and nothing of its own: a program's symbols never bind to the hook's
// internals, and every listed call is really defined.
TEST(HookLibraryTest, ExportsExactlyTheInterposedCalls) {
  const char* source_dir = std::getenv("REPTRACE_SOURCE_DIR");
  ASSERT_NE(source_dir, nullptr);
  std::set<std::string> listed;
  {
    std::ifstream map(std::string(source_dir) + "/hook/libreptrace.map");
    ASSERT_TRUE(map.good());
    std::string line;
    bool global = false;
    while (std::getline(map, line)) {
      const size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos) continue;
      const std::string word = line.substr(start);
      if (word.rfind("global:", 0) == 0) global = true;
      if (word.rfind("local:", 0) == 0) global = false;
      if (global && word.back() == ';' && word.find_first_of(" /*") == std::string::npos) {
        listed.insert(word.substr(0, word.size() - 1));
      }
    }
  }
  ASSERT_GT(listed.size(), 40u);
  const testing::CommandResult nm = testing::RunCommand(
      {"nm", "-D", "--defined-only", "--format=posix", REPTRACE_HOOK_PATH});
  ASSERT_EQ(nm.exit_code, 0) << nm.err;
  std::set<std::string> exported;
  for (const std::string& line : Lines(nm.out)) {
    const std::string name = line.substr(0, line.find(' '));
    if (!name.empty()) exported.insert(name);
  }
  EXPECT_EQ(exported, listed);
}

// Socket calls made from a signal handler, often while the interrupted program was inside
// the hook, neither block nor corrupt anything: the program's bytes arrive intact (the
// peer checks every one), and the interrupted connection's records stay exact.
TEST_F(HookCoverageTest, SocketCallsFromASignalHandlerInterruptingTheHookAreSafe) {
  std::string out;
  const auto streams = RunBothWays(
      {"signals"}, [](const auto& s) { return HasStatsAndClose(s, 4); }, &out);
  EXPECT_EQ(out, "ok\n");
  ASSERT_EQ(streams.size(), 1u);
  const AgentStream& s = streams[0];
  const auto connects = EventsOf(s, EventKind::kConnect);
  const auto accepts = EventsOf(s, EventKind::kAccept);
  ASSERT_EQ(connects.size(), 2u);
  ASSERT_EQ(accepts.size(), 2u);
  // The main flow's connection, made first: 1000 requests of 64 bytes, every call
  // recorded at its exact offset (its calls are never the nested ones).
  EXPECT_EQ(ContiguousTotal(EventsOf(s, EventKind::kSend, connects[0].conn_id), "requests"),
            64000u);
  EXPECT_EQ(ContiguousTotal(EventsOf(s, EventKind::kRecv, accepts[0].conn_id), "received"),
            64000u);
  // The handler's connection is traced too (a call made while the hook was running on the
  // same thread passes through unrecorded: the hook never re-enters itself).
  EXPECT_FALSE(EventsOf(s, EventKind::kSend, connects[1].conn_id).empty());
}

TEST_F(HookCoverageTest, PthreadCreateReportsTheNewThreadAndItsCreator) {
  std::string out;
  const auto streams = RunBothWays(
      {"thread"},
      [](const auto& s) {
        return s.size() == 1 && !s[0].stats.empty() &&
               !EventsOf(s[0], EventKind::kThreadStart).empty() &&
               EventsOf(s[0], EventKind::kSend).size() >= 2;
      },
      &out);
  const auto lines = Lines(out);
  ASSERT_EQ(lines.size(), 2u);
  const auto starts = EventsOf(streams[0], EventKind::kThreadStart);
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].fd, std::stoi(lines[0]));
  EXPECT_EQ(starts[0].tid, static_cast<uint32_t>(std::stoi(lines[1])));
  EXPECT_EQ(starts[0].conn_id, 0u);
  // The thread's own send is on its tid, right after the main thread's on the same stream.
  const auto sent = EventsOf(streams[0], EventKind::kSend);
  EXPECT_EQ(sent.back().tid, starts[0].tid);
  EXPECT_EQ(sent.back().result, 11);
  EXPECT_EQ(sent.back().offset, 4u);
}

TEST_F(HookCoverageTest, ThreadsEndingByExitCancelAndUnwindingBehaveAsWithoutTheHook) {
  std::string out;
  const auto streams = RunBothWays(
      {"thread-ends"},
      [](const auto& s) {
        return s.size() == 1 && EventsOf(s[0], EventKind::kThreadStart).size() >= 1000;
      },
      &out);
  EXPECT_EQ(out,
            "pthread_exit 42\ndestructor ran\nafter destructor 7\ncancelled 1\n"
            "1000 threads 42000\n");
}

TEST_F(HookCoverageTest, ExecedProgramsKeepTheHookAndTheUsersPreload) {
  FakeAgent agent(SocketPath("agent.sock"));
  const std::string preload = std::string("libm.so.6:") + REPTRACE_HOOK_PATH;
  Env env = HookEnv(SocketPath("agent.sock"));
  env["LD_PRELOAD"] = preload;
  const RunResult run = RunProgram({REPTRACE_HOOK_COVERAGE_PEER, "exec"}, env);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  auto lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 3u) << run.out;
  ASSERT_EQ(lines[0].rfind("parent=", 0), 0u) << lines[0];
  const uint32_t parent_pid = static_cast<uint32_t>(std::stoul(lines[0].substr(7)));
  lines.erase(lines.begin());
  // execve with an empty environment: everything the hook needs comes back.
  const std::string socket = " REPTRACE_SOCKET=" + SocketPath("agent.sock");
  EXPECT_NE(lines[0].find(" LD_PRELOAD=" + preload + socket), std::string::npos) << lines[0];
  // posix_spawn with only the user's LD_PRELOAD: ours is appended once.
  EXPECT_NE(lines[1].find(" LD_PRELOAD=libm.so.6:" + std::string(REPTRACE_HOOK_PATH) + socket),
            std::string::npos)
      << lines[1];
  for (const std::string& line : lines) {
    const uint32_t pid = static_cast<uint32_t>(std::stoul(line.substr(4)));
    ASSERT_TRUE(agent.WaitFor([pid](const std::vector<AgentStream>& streams) {
      const auto mine = StreamsOf(streams, pid);
      return !mine.empty() && !EventsOf(mine[0], EventKind::kClose).empty();
    })) << line;
    const auto mine = StreamsOf(agent.Streams(), pid);
    EXPECT_EQ(NameOf(mine[0].hello.process), "hook_coverage_p");  // comm: 15 characters
    EXPECT_EQ(EventsOf(mine[0], EventKind::kConnect).size(), 1u);
    EXPECT_EQ(mine[0].error, "");
    // The causal parent is the parent's main thread: the forked child, which traced
    // nothing before execve, passes on what it inherited at the fork; posix_spawn names
    // the spawning thread. The program never sees the variable that carried it.
    EXPECT_EQ(mine[0].hello.cause_pid, parent_pid) << line;
    EXPECT_EQ(mine[0].hello.cause_tid, parent_pid) << line;
    EXPECT_NE(line.find(" REPTRACE_CAUSE=(none)"), std::string::npos) << line;
  }
}

// Unix-domain sockets are traced only when REPTRACE_TRACE_UNIX asks, as connections named
// by their socket's path.
TEST_F(HookCoverageTest, UnixDomainSocketsAreTracedOnlyWhenAsked) {
  FakeAgent agent(SocketPath("agent.sock"));
  const std::string path = dir_.path() + "/app.sock";
  // Not asked: nothing is traced (the process never even talks to the agent), and the
  // program works as ever.
  const RunResult plain =
      RunProgram({REPTRACE_HOOK_COVERAGE_PEER, "unix", path}, HookEnv(SocketPath("agent.sock")));
  ASSERT_EQ(plain.exit_code, 0) << plain.out;
  EXPECT_EQ(plain.out, "PONG\n");

  Env env = HookEnv(SocketPath("agent.sock"));
  env["REPTRACE_TRACE_UNIX"] = "1";
  const RunResult traced = RunProgram({REPTRACE_HOOK_COVERAGE_PEER, "unix", path}, env);
  ASSERT_EQ(traced.exit_code, 0) << traced.out;
  EXPECT_EQ(traced.out, "PONG\n");
  ASSERT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    return !streams.empty() && EventsOf(streams.back(), EventKind::kClose).size() >= 2;
  }));
  const std::vector<AgentStream> streams = agent.Streams();
  ASSERT_EQ(streams.size(), 1u);  // only the run that asked
  const AgentStream& s = streams[0];
  const auto connects = EventsOf(s, EventKind::kConnect);
  const auto accepts = EventsOf(s, EventKind::kAccept);
  ASSERT_EQ(connects.size(), 1u);
  ASSERT_EQ(accepts.size(), 1u);
  for (const EventRecord* open : {&connects[0], &accepts[0]}) {
    EXPECT_EQ(open->family, kFamilyUnix);
    EXPECT_EQ(open->local_port, 0);
    EXPECT_EQ(open->peer_port, 0);
    EXPECT_EQ(CaptureOf(*open), path);
  }
  const auto sent = EventsOf(s, EventKind::kSend, connects[0].conn_id);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(CaptureOf(sent[0]), "PING\n");
  const auto received = EventsOf(s, EventKind::kRecv, accepts[0].conn_id);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(CaptureOf(received[0]), "PING\n");
  EXPECT_EQ(EventsOf(s, EventKind::kSend, accepts[0].conn_id).size(), 1u);
}

// A daemon that closes (or dup2s over) every fd never gets hook bytes in its own files,
// gets fd 0 back when it opens a file, and the hook reconnects on a fresh fd.
class HookDaemonTest : public HookTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(HookDaemonTest, NeverReceivesHookBytesAndTheHookReconnects) {
  std::string expected;
  for (int i = 0; i < 20; ++i) expected += "line " + std::to_string(i) + "\n";
  const std::string plain_file = dir_.path() + "/plain.txt";
  const std::string hooked_file = dir_.path() + "/hooked.txt";
  EXPECT_EQ(RunProgram({REPTRACE_HOOK_COVERAGE_PEER, "daemon", GetParam(), plain_file}, {})
                .exit_code,
            0);
  FakeAgent agent(SocketPath("agent.sock"));
  EXPECT_EQ(RunProgram({REPTRACE_HOOK_COVERAGE_PEER, "daemon", GetParam(), hooked_file},
                       HookEnv(SocketPath("agent.sock")))
                .exit_code,
            0);
  std::ifstream plain(plain_file), hooked(hooked_file);
  const std::string plain_text((std::istreambuf_iterator<char>(plain)), {});
  const std::string hooked_text((std::istreambuf_iterator<char>(hooked)), {});
  EXPECT_EQ(plain_text, expected);
  EXPECT_EQ(hooked_text, expected);
  // The agent heard from the process before and after (a second connection, a second Hello).
  EXPECT_TRUE(agent.WaitFor([](const std::vector<AgentStream>& streams) {
    return streams.size() >= 2 && streams[0].has_hello &&
           StreamsOf(streams, streams[0].hello.pid).size() >= 2 &&
           EventsOf(streams.back(), EventKind::kClose).size() > 0;
  }));
  for (const auto& s : agent.Streams()) EXPECT_EQ(s.error, "");
}

// The agent forgets a process's connections when its hook connection ends: a connection
// that carries on after the hook lost its agent connection is announced again, on the
// new one, before its data (and the offsets carry on).
TEST_F(HookCoverageTest, AConnectionOutlivingTheAgentConnectionIsReannouncedBeforeItsData) {
  std::string out;
  const auto streams = RunBothWays(
      {"reannounce"},
      [](const auto& s) {
        return s.size() == 2 && !s[1].stats.empty() &&
               EventsOf(s[1], EventKind::kClose).size() >= 2;
      },
      &out);
  EXPECT_EQ(out, "hellookagain\n");
  ASSERT_EQ(streams.size(), 2u);
  const auto connects = EventsOf(streams[0], EventKind::kConnect);
  const auto accepts = EventsOf(streams[0], EventKind::kAccept);
  ASSERT_EQ(connects.size(), 1u);
  ASSERT_EQ(accepts.size(), 1u);
  const AgentStream& after = streams[1];
  EXPECT_TRUE(EventsOf(after, EventKind::kConnect).empty());
  const auto again_connects = EventsOf(after, EventKind::kConnect, connects[0].conn_id, true);
  const auto again_accepts = EventsOf(after, EventKind::kAccept, accepts[0].conn_id, true);
  ASSERT_EQ(again_connects.size(), 1u);
  ASSERT_EQ(again_accepts.size(), 1u);
  // The same connection, the same endpoints, and what had moved so far.
  EXPECT_EQ(again_connects[0].local_port, connects[0].local_port);
  EXPECT_EQ(again_connects[0].peer_port, connects[0].peer_port);
  EXPECT_EQ(again_connects[0].role, static_cast<uint8_t>(SocketRole::kClient));
  EXPECT_EQ(again_accepts[0].role, static_cast<uint8_t>(SocketRole::kServer));
  EXPECT_EQ(again_accepts[0].offset, 0u);  // server: nothing sent before "ok"
  EXPECT_EQ(again_accepts[0].result, 5);   // "hello" received
  // FakeAgent refuses data before its connection's open record (stream.error, checked by
  // RunBothWays); the offsets carry on from the first agent connection.
  const auto sent = EventsOf(after, EventKind::kSend, connects[0].conn_id);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].offset, 5u);
  EXPECT_EQ(CaptureOf(sent[0]), "again");
}

INSTANTIATE_TEST_SUITE_P(Modes, HookDaemonTest, ::testing::Values("close", "range", "dup2"));

}  // namespace
}  // namespace reptrace

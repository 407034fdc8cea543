// In-band mode under real sockets: a line-protocol server and client (testing/
// inband_peer.cc), each under the hook or played by the test itself, in every call style
// the framing must survive. The programs must see exactly their own bytes, and the agent
// must get the ids the frames carried.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/event_record.h"
#include "hook/inband.h"
#include "hook/testing/fake_agent.h"
#include "hook/testing/records.h"

namespace reptrace {
namespace {

using testing::AgentStream;
using testing::Child;
using testing::Env;
using testing::FakeAgent;
using testing::HookEnv;
using testing::TempDir;

constexpr char kPeer[] = REPTRACE_INBAND_PEER;

std::vector<std::string> LinesStartingWith(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) out.emplace_back(line.substr(prefix.size()));
  }
  return out;
}

// FNV-1a 64 and length, as the peer prints them: "BYTES HASH".
std::string Digest(const std::string& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char out[64];
  snprintf(out, sizeof(out), "%zu %016llx", bytes.size(), static_cast<unsigned long long>(h));
  return out;
}

// The peer's lines, as its client sends them (see inband_peer.cc).
std::string PeerLine(int i) {
  static const size_t kSizes[] = {1, 17, 31, 32, 33, 100, 1500, 4096, 65536, 200000};
  const size_t n = kSizes[i % 10];
  std::string s(n, 'a');
  for (size_t k = 0; k + 1 < n; ++k) s[k] = static_cast<char>('a' + (k * 7 + i) % 26);
  s[n - 1] = '\n';
  return s;
}

std::string Frame(const std::string& payload, uint64_t trace_id, uint64_t span_id,
                  uint16_t flags = 0) {
  hook::inband::Header h;
  h.flags = flags;
  h.payload_len = static_cast<uint32_t>(payload.size());
  h.trace_id = trace_id;
  h.span_id = span_id;
  uint8_t out[hook::inband::kHeaderBytes];
  hook::inband::EncodeHeader(h, out);
  return std::string(reinterpret_cast<const char*>(out), sizeof(out)) + payload;
}

// Parses a framed byte stream; false if it is not one.
bool Unframe(const std::string& stream, std::string* payload,
             std::vector<hook::inband::Header>* headers) {
  size_t pos = 0;
  while (pos < stream.size()) {
    hook::inband::Header h;
    if (stream.size() - pos < hook::inband::kHeaderBytes ||
        !hook::inband::DecodeHeader(reinterpret_cast<const uint8_t*>(stream.data() + pos),
                                    &h)) {
      return false;
    }
    pos += hook::inband::kHeaderBytes;
    if (stream.size() - pos < h.payload_len) return false;
    payload->append(stream, pos, h.payload_len);
    pos += h.payload_len;
    if (headers != nullptr) headers->push_back(h);
  }
  return true;
}

int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Everything readable on `fd` until the peer closes it or `timeout_ms` passes quietly.
std::string ReadUntilClosed(int fd, int timeout_ms = 10000) {
  std::string out;
  char buf[65536];
  for (;;) {
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) break;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// A listening socket of the test's own (the program it plays is not hooked).
class RawListener {
 public:
  RawListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 8);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~RawListener() { close(fd_); }
  int port() const { return port_; }
  int Accept() const { return accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

const AgentStream* StreamOfPid(const std::vector<AgentStream>& streams, pid_t pid) {
  for (const auto& s : streams) {
    if (s.has_hello && s.hello.pid == static_cast<uint32_t>(pid)) return &s;
  }
  return nullptr;
}

std::vector<InbandRecord> InbandOf(const AgentStream* stream, InbandEvent event) {
  std::vector<InbandRecord> out;
  if (stream == nullptr) return out;
  for (const auto& r : stream->inband) {
    if (r.event == static_cast<uint8_t>(event)) out.push_back(r);
  }
  return out;
}

// The "conn" lines of a server peer once it has printed `n` of them (fewer on timeout).
std::vector<std::string> WaitForConnections(const Child& server, size_t n) {
  std::vector<std::string> got;
  testing::WaitUntil(
      [&] {
        got = LinesStartingWith(server.Output(), "conn ");
        return got.size() >= n;
      },
      absl::Seconds(20), absl::Milliseconds(20));
  return got;
}

// The agent's streams once every process of `pids` has ended its agent connection (its
// ring drained to the end: its StatsRecord is there).
std::vector<AgentStream> StreamsWhenDone(FakeAgent& agent, const std::vector<pid_t>& pids) {
  EXPECT_TRUE(agent.WaitFor(
      [&](const std::vector<AgentStream>& streams) {
        for (pid_t pid : pids) {
          const AgentStream* s = StreamOfPid(streams, pid);
          if (s == nullptr || s->stats.empty()) return false;
        }
        return true;
      },
      absl::Seconds(20)));
  return agent.Streams();
}

class InbandHookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(REPTRACE_HOOK_PATH, R_OK), 0) << REPTRACE_HOOK_PATH;
    ASSERT_EQ(access(kPeer, X_OK), 0) << kPeer;
  }
  std::string AgentPath() const { return dir_.path() + "/agent.sock"; }
  Env Hooked(const Env& extra = {}) const { return HookEnv(AgentPath(), extra); }

  TempDir dir_;
};

// Both ends hooked, every pair of styles: (client's write style, server's read style,
// lines per connection: fewer where the server makes a call per byte or two, so that its
// records fit in the ring even if the agent drained none).
class InbandBothHookedTest
    : public InbandHookTest,
      public ::testing::WithParamInterface<std::tuple<const char*, const char*, int>> {};

TEST_P(InbandBothHookedTest, EachProgramSeesExactlyItsPeersBytesAndTheAgentTheIds) {
  const auto [client_style, server_style, lines] = GetParam();
  FakeAgent agent(AgentPath());
  Child server({kPeer, "server", server_style}, Hooked());
  const int port = std::atoi(server.ReadLine(absl::Seconds(10)).c_str());
  ASSERT_GT(port, 0);
  const int connections = 2;
  Child client({kPeer, "client", std::to_string(port), client_style, std::to_string(lines),
                std::to_string(connections)},
               Hooked({{"REPTRACE_INBAND_PORTS", std::to_string(port)}}));
  ASSERT_EQ(client.Wait(absl::Seconds(60)), 0);
  const std::vector<std::string> sent = LinesStartingWith(client.Output(), "sent ");
  ASSERT_EQ(sent.size(), static_cast<size_t>(connections));
  // Byte for byte: every header stripped, nothing else touched.
  EXPECT_EQ(WaitForConnections(server, sent.size()), sent);
  if (std::string(server_style) == "nonblock") {
    // The server's reads never spun: at most one EAGAIN per read the program made wait.
    for (const std::string& n : LinesStartingWith(server.Output(), "eagain ")) {
      EXPECT_LT(std::atol(n.c_str()), 100000) << n;
    }
  }
  // Every request went framed with a new span id, and the server got the same ids at the
  // same offsets.
  const pid_t client_pid = client.pid(), server_pid = server.pid();
  server.Stop();
  const std::vector<AgentStream> streams = StreamsWhenDone(agent, {client_pid, server_pid});
  const AgentStream* c = StreamOfPid(streams, client_pid);
  const AgentStream* s = StreamOfPid(streams, server_pid);
  ASSERT_TRUE(c != nullptr && s != nullptr);
  EXPECT_EQ(c->error, "");
  EXPECT_EQ(s->error, "");
  const std::vector<InbandRecord> sent_ids = InbandOf(c, InbandEvent::kSent);
  const std::vector<InbandRecord> received_ids = InbandOf(s, InbandEvent::kReceived);
  ASSERT_EQ(s->stats.back().events_dropped, 0u);
  ASSERT_EQ(c->stats.back().events_dropped, 0u);
  ASSERT_EQ(sent_ids.size(), static_cast<size_t>(lines * connections));
  ASSERT_EQ(received_ids.size(), sent_ids.size());
  for (size_t i = 0; i < sent_ids.size(); ++i) {
    EXPECT_NE(sent_ids[i].span_id, 0u);
    EXPECT_EQ(received_ids[i].span_id, sent_ids[i].span_id) << i;
    EXPECT_EQ(received_ids[i].trace_id, sent_ids[i].trace_id) << i;
    EXPECT_EQ(received_ids[i].offset, sent_ids[i].offset) << i;
    if (i > 0) {
      EXPECT_NE(sent_ids[i].span_id, sent_ids[i - 1].span_id);
    }
  }
  EXPECT_TRUE(InbandOf(c, InbandEvent::kPeerNotHooked).empty());
  // The offsets the hook reports count the programs' bytes only, as without frames.
  uint64_t total = 0;
  for (int i = 0; i < lines; ++i) total += PeerLine(i).size();
  uint64_t client_sent = 0;
  for (const auto& e : c->events) {
    if (e.kind == static_cast<uint8_t>(EventKind::kSend) && e.result > 0) {
      client_sent += static_cast<uint64_t>(e.result);
    }
  }
  EXPECT_EQ(client_sent, total * connections);
}

INSTANTIATE_TEST_SUITE_P(
    Styles, InbandBothHookedTest,
    ::testing::Values(std::make_tuple("write", "read", 10), std::make_tuple("writev", "read1", 7),
                      std::make_tuple("sendmsg", "readv", 10),
                      std::make_tuple("sendfile", "peek", 8),
                      std::make_tuple("nonblock", "nonblock", 10),
                      std::make_tuple("write", "edge", 10),
                      std::make_tuple("write", "recvmsg", 10)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
    });

// The test plays a hooked client: a framed stream written in pieces of 1 to 7 bytes, so
// that headers are cut everywhere; the hooked server reads it in every style.
class InbandCutStreamTest : public InbandHookTest,
                            public ::testing::WithParamInterface<const char*> {};

TEST_P(InbandCutStreamTest, HeadersSplitOverManyReadsAreStrippedAndTheAnswersFramed) {
  FakeAgent agent(AgentPath());
  Child server({kPeer, "server", GetParam()}, Hooked());
  const int port = std::atoi(server.ReadLine(absl::Seconds(10)).c_str());
  ASSERT_GT(port, 0);
  // Three requests: ids 11, 12 (two frames) and 13; ten bytes each so that MSG_WAITALL
  // reads of ten end at the end of the stream.
  const std::string payload = "request-1\nrequest-2\nrequest-3\n";
  const std::string stream = Frame("request-1\n", 7, 11) + Frame("requ", 7, 12) +
                             Frame("est-2\n", 7, 12) + Frame("request-3\n", 7, 13);
  const int fd = ConnectTo(port);
  ASSERT_GE(fd, 0);
  for (size_t pos = 0, i = 0; pos < stream.size(); ++i) {
    const size_t n = std::min<size_t>(1 + i % 7, stream.size() - pos);
    ASSERT_EQ(write(fd, stream.data() + pos, n), static_cast<ssize_t>(n));
    pos += n;
    if (i % 5 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  shutdown(fd, SHUT_WR);
  const std::string answers = ReadUntilClosed(fd);
  close(fd);
  std::string answer_payload;
  std::vector<hook::inband::Header> headers;
  ASSERT_TRUE(Unframe(answers, &answer_payload, &headers)) << answers;
  EXPECT_EQ(answer_payload, "ok 10\nok 10\nok 10\n");
  for (const auto& h : headers) EXPECT_EQ(h.flags, hook::inband::kFlagResponse);
  const std::vector<std::string> got = WaitForConnections(server, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], Digest(payload));
  const pid_t pid = server.pid();
  server.Stop();
  const std::vector<AgentStream> streams = StreamsWhenDone(agent, {pid});
  const std::vector<InbandRecord> received =
      InbandOf(StreamOfPid(streams, pid), InbandEvent::kReceived);
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[0].span_id, 11u);
  EXPECT_EQ(received[0].offset, 0u);
  EXPECT_EQ(received[1].span_id, 12u);
  EXPECT_EQ(received[1].offset, 10u);
  EXPECT_EQ(received[2].span_id, 13u);
  EXPECT_EQ(received[2].offset, 20u);
  EXPECT_EQ(received[2].trace_id, 7u);
}

INSTANTIATE_TEST_SUITE_P(ReadStyles, InbandCutStreamTest,
                         ::testing::Values("read", "read1", "readv", "peek", "nonblock",
                                           "recvmsg", "waitall", "edge"));

// An unhooked client's bytes reach the hooked server untouched, even when they begin like
// a frame header.
TEST_F(InbandHookTest, AnUnhookedClientsBytesPassUntouchedEvenWhenTheyLookLikeAHeader) {
  for (const std::string& payload :
       {std::string("GET / HTTP/1.1\n"), std::string("\xF5RPX not a header\n"),
        std::string("\xF5") + "R" + std::string(40, 'P') + "\n",
        Frame("x", 1, 1).substr(0, 31) + "y\n"}) {
    for (const char* style : {"read", "read1", "peek", "edge"}) {
      Child server({kPeer, "server", style}, Hooked());
      const int port = std::atoi(server.ReadLine(absl::Seconds(10)).c_str());
      ASSERT_GT(port, 0);
      const int fd = ConnectTo(port);
      ASSERT_GE(fd, 0);
      // The first byte alone first: the hook must wait for more before it can tell.
      ASSERT_EQ(write(fd, payload.data(), 1), 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ASSERT_EQ(write(fd, payload.data() + 1, payload.size() - 1),
                static_cast<ssize_t>(payload.size() - 1));
      shutdown(fd, SHUT_WR);
      EXPECT_EQ(ReadUntilClosed(fd), "ok " + std::to_string(payload.size()) + "\n") << style;
      close(fd);
      const std::vector<std::string> got = WaitForConnections(server, 1);
      ASSERT_EQ(got.size(), 1u) << style;
      EXPECT_EQ(got[0], Digest(payload)) << style;
    }
  }
}

// A hooked client framing to a server that is not hooked: it sees the server answer
// unframed, reports it, and its next connection to that destination goes unframed.
TEST_F(InbandHookTest, AnUnhookedServerIsDetectedAndLaterConnectionsToItAreNotFramed) {
  FakeAgent agent(AgentPath());
  RawListener listener;
  Child client({kPeer, "client", std::to_string(listener.port()), "write", "1", "2"},
               Hooked({{"REPTRACE_INBAND_PORTS", std::to_string(listener.port())}}));
  std::vector<std::string> received;
  for (int connection = 0; connection < 2; ++connection) {
    const int fd = listener.Accept();
    ASSERT_GE(fd, 0);
    std::string bytes;
    char buf[256];
    while (bytes.empty() || bytes.back() != '\n') {
      const ssize_t n = read(fd, buf, sizeof(buf));
      ASSERT_GT(n, 0);
      bytes.append(buf, static_cast<size_t>(n));
    }
    ASSERT_EQ(write(fd, "ok 1\n", 5), 5);  // the line "\n", as an unhooked server answers
    EXPECT_EQ(ReadUntilClosed(fd), "");
    close(fd);
    received.push_back(bytes);
  }
  ASSERT_EQ(client.Wait(absl::Seconds(20)), 0);
  std::string payload;
  std::vector<hook::inband::Header> headers;
  ASSERT_TRUE(Unframe(received[0], &payload, &headers));  // the first went framed
  EXPECT_EQ(payload, "\n");
  EXPECT_EQ(received[1], "\n");  // the second did not
  const pid_t pid = client.pid();
  const std::vector<AgentStream> streams = StreamsWhenDone(agent, {pid});
  const AgentStream* s = StreamOfPid(streams, pid);
  EXPECT_EQ(InbandOf(s, InbandEvent::kPeerNotHooked).size(), 1u);
  ASSERT_EQ(InbandOf(s, InbandEvent::kSent).size(), 1u);
  EXPECT_EQ(InbandOf(s, InbandEvent::kSent)[0].span_id, headers[0].span_id);
}

// A hooked server that greets before its client's first frame arrives: the greeting goes
// unframed, the client keeps framing that connection (the server strips it) and frames no
// later connection to it.
TEST_F(InbandHookTest, AServerThatGreetsFirstAndItsClientStillSeeExactlyTheirBytes) {
  FakeAgent agent(AgentPath());
  Child server({kPeer, "server", "greet"}, Hooked());
  const int port = std::atoi(server.ReadLine(absl::Seconds(10)).c_str());
  ASSERT_GT(port, 0);
  Child client({kPeer, "client", std::to_string(port), "greeted", "10", "2"},
               Hooked({{"REPTRACE_INBAND_PORTS", std::to_string(port)}}));
  ASSERT_EQ(client.Wait(absl::Seconds(60)), 0);
  const std::vector<std::string> sent = LinesStartingWith(client.Output(), "sent ");
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(WaitForConnections(server, 2), sent);
  const pid_t client_pid = client.pid(), server_pid = server.pid();
  server.Stop();
  const std::vector<AgentStream> streams = StreamsWhenDone(agent, {client_pid, server_pid});
  const AgentStream* c = StreamOfPid(streams, client_pid);
  // The first connection's ten requests went framed; the second connection's none.
  EXPECT_EQ(InbandOf(c, InbandEvent::kSent).size(), 10u);
  EXPECT_EQ(InbandOf(StreamOfPid(streams, server_pid), InbandEvent::kReceived).size(), 10u);
  EXPECT_EQ(InbandOf(c, InbandEvent::kPeerNotHooked).size(), 1u);
}

// Without REPTRACE_INBAND_PORTS (or with one that does not parse) nothing is framed.
TEST_F(InbandHookTest, WithoutAValidPortListAClientSendsItsBytesAsTheyAre) {
  RawListener listener;
  for (const std::string& ports : {std::string(""), std::to_string(listener.port()) + ",x"}) {
    Env env = Hooked();
    if (!ports.empty()) env["REPTRACE_INBAND_PORTS"] = ports;
    Child client({kPeer, "client", std::to_string(listener.port()), "write", "2"}, env);
    const int fd = listener.Accept();
    ASSERT_GE(fd, 0);
    std::string bytes;
    char buf[256];
    while (bytes.size() < 18) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      ASSERT_GT(n, 0);
      bytes.append(buf, static_cast<size_t>(n));
      if (bytes == "\n") {
        ASSERT_EQ(write(fd, "ok 1\n", 5), 5);
      }
    }
    ASSERT_EQ(write(fd, "ok 17\n", 6), 6);
    EXPECT_EQ(bytes, PeerLine(0) + PeerLine(1)) << ports;
    EXPECT_EQ(client.Wait(absl::Seconds(20)), 0);
    close(fd);
  }
}

}  // namespace
}  // namespace reptrace

// libreptrace.so's SSL_* interposition (tls.h) under real programs: curl and python3's
// urllib talking HTTPS to nginx, every one of them hooked, reporting to a FakeAgent. Both
// ends of each connection must record the same plaintext at the same offsets, and nothing
// of the TLS records themselves; the programs must behave exactly as without the hook.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/event_record.h"
#include "hook/testing/fake_agent.h"
#include "hook/testing/records.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

using testing::AgentStream;
using testing::ChildOptions;
using testing::ContiguousTotal;
using testing::Env;
using testing::EventsOf;
using testing::FakeAgent;
using testing::MessageStarts;
using testing::Process;

constexpr char kCurl[] = "/usr/bin/curl";
constexpr char kPython[] = "/usr/bin/python3";
constexpr char kNginx[] = "/usr/sbin/nginx";
constexpr char kOpenssl[] = "/usr/bin/openssl";

// GET https://127.0.0.1:PORT/file without verifying the self-signed certificate; prints
// the body.
constexpr char kUrllibScript[] = R"(
import ssl, sys, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
body = urllib.request.urlopen(sys.argv[1], context=context, timeout=10).read()
sys.stdout.write(body.decode())
)";

struct RunResult {
  int exit_code;
  std::string out;
  std::string err;
};

RunResult RunProgram(const std::vector<std::string>& argv, const Env& env) {
  testing::CommandResult r = testing::RunCommand(argv, ChildOptions(env), absl::Seconds(30));
  return {r.timed_out ? -1 : r.exit_code, r.out, r.err};
}

const AgentStream* StreamOfProcess(const std::vector<AgentStream>& streams, const char* comm) {
  for (const auto& s : streams) {
    if (s.has_hello && std::strncmp(s.hello.process, comm, kNameBytes) == 0) return &s;
  }
  return nullptr;
}

// The connection a client opened to `port` (its kConnect), or nullptr.
const EventRecord* ConnectTo(const AgentStream& stream, int port) {
  for (const auto& e : stream.events) {
    if (e.kind == static_cast<uint8_t>(EventKind::kConnect) && e.peer_port == port) return &e;
  }
  return nullptr;
}

// The server end of the connection from local port `client_port`: stream and kAccept.
std::pair<const AgentStream*, const EventRecord*> AcceptFrom(
    const std::vector<AgentStream>& streams, int client_port) {
  for (const auto& s : streams) {
    for (const auto& e : s.events) {
      if (e.kind == static_cast<uint8_t>(EventKind::kAccept) && e.peer_port == client_port) {
        return {&s, &e};
      }
    }
  }
  return {nullptr, nullptr};
}

bool Closed(const AgentStream* stream, uint64_t conn_id) {
  return stream != nullptr && !EventsOf(*stream, EventKind::kClose, conn_id).empty();
}

// A TLS record header: content type 20..23 (change_cipher_spec, alert, handshake,
// application_data), then major version 3.
bool LooksLikeTlsRecord(const EventRecord& e) {
  return e.capture_len >= 2 && e.capture[0] >= 20 && e.capture[0] <= 23 && e.capture[1] == 3;
}

// The bytes moved in one direction: checks that no capture is a TLS record and that the
// offsets are contiguous from 0, and returns the total.
uint64_t PlaintextTotal(const std::vector<EventRecord>& transfers, const char* what) {
  for (const auto& e : transfers) {
    EXPECT_FALSE(LooksLikeTlsRecord(e)) << what << ": ciphertext recorded at " << e.offset;
  }
  return ContiguousTotal(transfers, what);
}

std::string WithoutDate(std::string s) {
  const size_t at = s.find("Date: ");
  if (at != std::string::npos) s.erase(at, s.find("\r\n", at) - at);
  return s;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* program : {kCurl, kPython, kNginx, kOpenssl}) {
      ASSERT_EQ(access(program, X_OK), 0) << program;
    }
    ASSERT_EQ(access(REPTRACE_HOOK_PATH, R_OK), 0) << REPTRACE_HOOK_PATH;
    dir_ = testing::MakeTempDir("reptrace-tls-test");
    const testing::CommandResult cert = testing::RunCommand(
        {kOpenssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "1", "-keyout", dir_ + "/key.pem", "-out", dir_ + "/cert.pem"});
    ASSERT_EQ(cert.exit_code, 0) << cert.err;
    mkdir((dir_ + "/www").c_str(), 0755);
    // Longer than one capture, shorter than one TLS record.
    body_ = "plaintext over TLS\n" + std::string(3000, 'x') + "\n";
    std::ofstream(dir_ + "/www/file") << body_;
    agent_ = std::make_unique<FakeAgent>(dir_ + "/agent.sock");
    StartNginx();
  }

  void TearDown() override {
    nginx_ = Process();  // stopped before the agent goes away
    agent_.reset();
    if (!dir_.empty()) testing::RemoveTree(dir_);
  }

  Env Hooked() const {
    return {{"LD_PRELOAD", REPTRACE_HOOK_PATH}, {"REPTRACE_SOCKET", dir_ + "/agent.sock"}};
  }

  // nginx (one worker, hooked): HTTPS on tls_port_, plain HTTP on plain_port_.
  void StartNginx() {
    tls_port_ = testing::FreePort();
    plain_port_ = testing::FreePort();
    const std::string& d = dir_;
    std::ofstream(d + "/nginx.conf")
        << (geteuid() == 0 ? "user root root;\n" : "") << "worker_processes 1;\n"
        << "daemon off;\npid " << d << "/nginx.pid;\nerror_log " << d << "/error.log warn;\n"
        << "events { worker_connections 64; }\nhttp {\n  access_log off;\n"
        << "  client_body_temp_path " << d << "/body;\n  proxy_temp_path " << d << "/proxy;\n"
        << "  fastcgi_temp_path " << d << "/fastcgi;\n  uwsgi_temp_path " << d << "/uwsgi;\n"
        << "  scgi_temp_path " << d << "/scgi;\n"
        << "  server {\n    listen 127.0.0.1:" << tls_port_ << " ssl;\n"
        << "    ssl_certificate " << d << "/cert.pem;\n"
        << "    ssl_certificate_key " << d << "/key.pem;\n    root " << d << "/www;\n  }\n"
        << "  server {\n    listen 127.0.0.1:" << plain_port_ << ";\n    root " << d
        << "/www;\n  }\n}\n";
    testing::ProcessOptions options = ChildOptions(Hooked());
    options.stderr_path = d + "/nginx.stderr";
    nginx_ = Process({kNginx, "-p", d, "-c", d + "/nginx.conf"}, options);
    ASSERT_TRUE(testing::WaitForPort(tls_port_, absl::Seconds(20)))
        << testing::ReadFile(d + "/error.log") << testing::ReadFile(d + "/nginx.stderr");
    ASSERT_TRUE(testing::WaitForPort(plain_port_, absl::Seconds(20)));
  }

  std::string Url(int port, const char* scheme) const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port) + "/file";
  }

  // Checks that the client's connection to nginx's TLS port and nginx's end of it recorded
  // the same plaintext both ways; returns the client's (sent, received) totals.
  std::pair<uint64_t, uint64_t> ExpectBothEndsAgree(const char* client_comm) {
    const EventRecord* connect = nullptr;
    const AgentStream* server = nullptr;
    const EventRecord* accept = nullptr;
    // The server's close (after the client's) ends the conversation.
    EXPECT_TRUE(agent_->WaitFor([&](const std::vector<AgentStream>& streams) {
      const AgentStream* client = StreamOfProcess(streams, client_comm);
      if (client == nullptr) return false;
      const EventRecord* c = ConnectTo(*client, tls_port_);
      if (c == nullptr) return false;
      auto [s, a] = AcceptFrom(streams, c->local_port);
      return Closed(client, c->conn_id) && a != nullptr && Closed(s, a->conn_id);
    })) << "both ends' close events never arrived";
    streams_ = agent_->Streams();
    const AgentStream* client = StreamOfProcess(streams_, client_comm);
    if (client == nullptr || (connect = ConnectTo(*client, tls_port_)) == nullptr) {
      ADD_FAILURE() << client_comm << " has no connection to nginx";
      return {0, 0};
    }
    std::tie(server, accept) = AcceptFrom(streams_, connect->local_port);
    if (accept == nullptr) {
      ADD_FAILURE() << "nginx has no accept from " << client_comm;
      return {0, 0};
    }
    EXPECT_EQ(client->error, "");
    EXPECT_EQ(server->error, "");
    EXPECT_STREQ(server->hello.process, "nginx");

    const auto client_sent = EventsOf(*client, EventKind::kSend, connect->conn_id);
    const auto client_received = EventsOf(*client, EventKind::kRecv, connect->conn_id);
    const auto server_received = EventsOf(*server, EventKind::kRecv, accept->conn_id);
    const auto server_sent = EventsOf(*server, EventKind::kSend, accept->conn_id);
    const uint64_t requests = PlaintextTotal(client_sent, "client send");
    const uint64_t responses = PlaintextTotal(server_sent, "server send");
    EXPECT_EQ(PlaintextTotal(server_received, "server recv"), requests);
    EXPECT_EQ(PlaintextTotal(client_received, "client recv"), responses);

    // One request, one response, seen the same from both ends.
    const auto request_starts = MessageStarts(client_sent);
    EXPECT_EQ(request_starts.size(), 1u);
    if (!request_starts.empty()) {
      EXPECT_EQ(request_starts[0].offset, 0u);
      EXPECT_EQ(request_starts[0].capture.rfind("GET /file HTTP/1.1\r\n", 0), 0u)
          << request_starts[0].capture;
      EXPECT_EQ(request_starts[0].hash, Fingerprint64(request_starts[0].capture.data(),
                                                request_starts[0].capture.size()));
    }
    EXPECT_EQ(MessageStarts(server_received), request_starts);
    const auto response_starts = MessageStarts(server_sent);
    EXPECT_EQ(response_starts.size(), 1u);
    if (!response_starts.empty()) {
      EXPECT_EQ(response_starts[0].capture.rfind("HTTP/1.1 200 OK\r\n", 0), 0u)
          << response_starts[0].capture;
      EXPECT_EQ(response_starts[0].capture.size(), kCaptureBytes);
    }
    EXPECT_EQ(MessageStarts(client_received), response_starts);
    if (!client_sent.empty() && !server_received.empty()) {
      EXPECT_LE(client_sent.front().wall_ns, server_received.front().wall_ns);
    }
    return {requests, responses};
  }

  std::string dir_;
  std::string body_;
  std::unique_ptr<FakeAgent> agent_;
  Process nginx_;
  int tls_port_ = 0;
  int plain_port_ = 0;
  std::vector<AgentStream> streams_;
};

TEST_F(TlsTest, CurlAndNginxRecordTheSamePlaintext) {
  const std::vector<std::string> curl = {kCurl, "-sS", "-k", "-i", "--max-time", "10",
                                         Url(tls_port_, "https")};
  const RunResult plain = RunProgram(curl, {});
  const RunResult traced = RunProgram(curl, Hooked());
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(traced.exit_code, 0) << traced.err;
  EXPECT_EQ(WithoutDate(traced.out), WithoutDate(plain.out));
  EXPECT_NE(traced.out.find(body_), std::string::npos);

  const auto [sent, received] = ExpectBothEndsAgree("curl");
  // curl -i prints exactly the plaintext it received: headers and body, nothing of TLS.
  EXPECT_EQ(received, traced.out.size());
  EXPECT_GT(sent, 0u);
}

TEST_F(TlsTest, PythonUrllibWithDlopenedLibsslRecordsPlaintext) {
  const std::vector<std::string> python = {kPython, "-c", kUrllibScript,
                                           Url(tls_port_, "https")};
  const RunResult plain = RunProgram(python, {});
  const RunResult traced = RunProgram(python, Hooked());
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, body_);
  EXPECT_EQ(traced.exit_code, 0) << traced.err;
  EXPECT_EQ(traced.out, body_);

  const auto [sent, received] = ExpectBothEndsAgree("python3");
  EXPECT_GT(sent, 0u);
  EXPECT_GT(received, body_.size());
}

TEST_F(TlsTest, AFailedHandshakeLooksTheSameToTheProgram) {
  // HTTPS to a plain-HTTP port: OpenSSL fails the handshake and curl reports its error
  // queue and errno. The hook must leave both exactly as they were.
  const std::vector<std::string> curl = {kCurl, "-sS", "-k", "--max-time", "10",
                                         Url(plain_port_, "https")};
  const RunResult plain = RunProgram(curl, {});
  const RunResult traced = RunProgram(curl, Hooked());
  EXPECT_EQ(plain.exit_code, 35);  // CURLE_SSL_CONNECT_ERROR
  EXPECT_EQ(traced.exit_code, plain.exit_code);
  EXPECT_EQ(traced.err, plain.err);
  EXPECT_EQ(traced.out, plain.out);
}

TEST_F(TlsTest, PlainHttpOnTheSameServerIsStillRecordedRaw) {
  // The same nginx worker serves plain HTTP: its raw socket calls are recorded as before.
  const RunResult traced =
      RunProgram({kCurl, "-sS", "-i", "--max-time", "10", Url(plain_port_, "http")}, Hooked());
  ASSERT_EQ(traced.exit_code, 0) << traced.err;
  ASSERT_TRUE(agent_->WaitFor([&](const std::vector<AgentStream>& streams) {
    const AgentStream* client = StreamOfProcess(streams, "curl");
    const EventRecord* c = client == nullptr ? nullptr : ConnectTo(*client, plain_port_);
    return c != nullptr && Closed(client, c->conn_id);
  }));
  const std::vector<AgentStream> streams = agent_->Streams();
  const AgentStream* client = StreamOfProcess(streams, "curl");
  const EventRecord* connect = ConnectTo(*client, plain_port_);
  const auto received = EventsOf(*client, EventKind::kRecv, connect->conn_id);
  EXPECT_EQ(PlaintextTotal(received, "client recv"), traced.out.size());
  const auto sent = MessageStarts(EventsOf(*client, EventKind::kSend, connect->conn_id));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].capture.rfind("GET /file HTTP/1.1\r\n", 0), 0u);
}

}  // namespace
}  // namespace reptrace

#include "agent/hook_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/testing/hook_script.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

using testing::AsBytes;
using testing::ConnectUnix;
using testing::HookScript;

// Polls `condition` every 5 ms for up to `timeout`.
template <typename Condition>
bool WaitFor(Condition condition, absl::Duration timeout = absl::Seconds(10)) {
  return testing::WaitUntil(condition, timeout, absl::Milliseconds(5));
}

bool WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// True if the peer closed `fd` within `timeout`.
bool ClosedByPeer(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) return false;
  char c;
  return read(fd, &c, 1) <= 0;
}

std::string Exchange(HookScript& script, uint64_t conn, const std::string& path) {
  std::string bytes = AsBytes(script.Accept(conn, 7, 1000));
  bytes += AsBytes(script.Recv(conn, 7, 2000, "GET " + path + " HTTP/1.1\r\n\r\n"));
  bytes += AsBytes(script.Send(conn, 7, 3000, "HTTP/1.1 200 OK\r\n\r\n"));
  return bytes;
}

class HookServerTest : public ::testing::Test {
 protected:
  ~HookServerTest() override {
    server_.Stop();
    testing::RemoveTree(dir_);
  }

  std::vector<v1::Span> Spans() {
    absl::MutexLock lock(&mu_);
    return spans_;
  }
  size_t SpanCount() { return Spans().size(); }

  const std::string dir_ = testing::MakeTempDir("reptrace-hook-server-test");
  const std::string socket_path_ = dir_ + "/run/agent.sock";  // its parent does not exist yet
  CounterSet counters_;
  absl::Mutex mu_;
  std::vector<v1::Span> spans_ ABSL_GUARDED_BY(mu_);
  SpanBuilder builder_{"node-a",
                       [this](v1::Span span) {
                         absl::MutexLock lock(&mu_);
                         spans_.push_back(std::move(span));
                       },
                       absl::Milliseconds(300)};
  HookServer server_{socket_path_, &builder_, &counters_, absl::Milliseconds(20)};
};

TEST_F(HookServerTest, AHookedProcessesExchangeBecomesASpan) {
  ASSERT_TRUE(server_.Start().ok());
  struct stat st;
  ASSERT_EQ(stat(socket_path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0666u);

  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(31337);
  std::string bytes = AsBytes(script.Hello("web", "nginx")) + Exchange(script, 1, "/index.html");
  bytes += AsBytes(script.Close(1, 7, 4000));
  ASSERT_TRUE(WriteAll(fd, bytes));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  const v1::Span span = Spans()[0];
  EXPECT_EQ(span.name(), "GET /index.html");
  EXPECT_EQ(span.service(), "web");
  EXPECT_EQ(span.pid(), 31337u);
  EXPECT_EQ(span.node(), "node-a");
  EXPECT_EQ(counters_.processes_connected.load(), 1u);
  EXPECT_EQ(counters_.events_received.load(), 4u);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  EXPECT_EQ(server_.connections(), 1u);
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return server_.connections() == 0; }));
}

TEST_F(HookServerTest, ADisconnectFinishesTheProcessesOpenSpans) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  HookScript script;
  std::string bytes = AsBytes(script.Hello());
  bytes += AsBytes(script.Accept(1, 7, 1000));
  bytes += AsBytes(script.Recv(1, 7, 2000, "GET /never-answered HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(WriteAll(fd, bytes));
  ASSERT_TRUE(WaitFor([&] { return counters_.events_received.load() == 2; }));
  EXPECT_EQ(SpanCount(), 0u);
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(Spans()[0].name(), "GET /never-answered");
}

TEST_F(HookServerTest, IdleSpansEndWithoutAClose) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  HookScript script;
  ASSERT_TRUE(WriteAll(fd, AsBytes(script.Hello()) + Exchange(script, 1, "/keepalive")));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }, absl::Seconds(5)));
  close(fd);
}

TEST_F(HookServerTest, GarbageIsCountedAndClosedAndTheNextClientStillWorks) {
  ASSERT_TRUE(server_.Start().ok());
  const int bad = ConnectUnix(socket_path_);
  ASSERT_GE(bad, 0);
  ASSERT_TRUE(WriteAll(bad, "GET / HTTP/1.1\r\nHost: wrong-socket\r\n\r\n"));
  EXPECT_TRUE(ClosedByPeer(bad, absl::Seconds(10)));
  EXPECT_EQ(counters_.records_malformed.load(), 1u);
  close(bad);

  const int good = ConnectUnix(socket_path_);
  ASSERT_GE(good, 0);
  HookScript script;
  std::string bytes = AsBytes(script.Hello()) + Exchange(script, 1, "/after-garbage");
  bytes += AsBytes(script.Close(1, 7, 5000));
  ASSERT_TRUE(WriteAll(good, bytes));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(Spans()[0].name(), "GET /after-garbage");
  EXPECT_EQ(counters_.records_malformed.load(), 1u);
  close(good);
}

TEST_F(HookServerTest, GarbageAfterGoodRecordsStillFinishesTheirSpans) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  HookScript script;
  std::string bytes = AsBytes(script.Hello()) + Exchange(script, 1, "/then-garbage");
  bytes += std::string(100, '\xee');
  ASSERT_TRUE(WriteAll(fd, bytes));
  EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(counters_.records_malformed.load(), 1u);
  close(fd);
}

TEST_F(HookServerTest, ATruncatedRecordAtDisconnectIsCounted) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  HookScript script;
  const std::string event = AsBytes(script.Accept(1, 7, 1000));
  ASSERT_TRUE(WriteAll(fd, AsBytes(script.Hello()) + event.substr(0, 30)));
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return counters_.records_malformed.load() == 1; }));
}

TEST_F(HookServerTest, ServesManyProcessesAtOnce) {
  ASSERT_TRUE(server_.Start().ok());
  constexpr int kClients = 20;
  std::vector<int> fds;
  std::vector<HookScript> scripts;
  std::vector<std::string> streams;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(ConnectUnix(socket_path_));
    ASSERT_GE(fds.back(), 0);
    scripts.emplace_back(1000 + i);
    streams.push_back(AsBytes(scripts.back().Hello()) + Exchange(scripts.back(), 1, "/p") +
                      AsBytes(scripts.back().Close(1, 7, 9000)));
  }
  // Interleave the clients' bytes in small pieces.
  for (size_t offset = 0; offset < streams[0].size(); offset += 97) {
    for (int i = 0; i < kClients; ++i) ASSERT_TRUE(WriteAll(fds[i], streams[i].substr(offset, 97)));
  }
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == kClients; }));
  EXPECT_EQ(counters_.processes_connected.load(), static_cast<uint64_t>(kClients));
  std::set<uint32_t> pids;
  for (const v1::Span& span : Spans()) pids.insert(span.pid());
  EXPECT_EQ(pids.size(), static_cast<size_t>(kClients));
  for (int fd : fds) close(fd);
}

TEST_F(HookServerTest, CountsHookDropsFromTheLatestStatsOfEachProcess) {
  ASSERT_TRUE(server_.Start().ok());
  const int a = ConnectUnix(socket_path_);
  const int b = ConnectUnix(socket_path_);
  HookScript sa(1), sb(2);
  ASSERT_TRUE(WriteAll(a, AsBytes(sa.Hello()) + AsBytes(sa.Stats(100, 10)) +
                              AsBytes(sa.Stats(200, 25))));
  ASSERT_TRUE(WriteAll(b, AsBytes(sb.Hello()) + AsBytes(sb.Stats(50, 5))));
  EXPECT_TRUE(WaitFor([&] { return counters_.hook_events_dropped.load() == 30; }))
      << counters_.hook_events_dropped.load();
  close(a);
  close(b);
}

TEST_F(HookServerTest, ReplacesAStaleSocketFileAndRemovesItOnStop) {
  std::filesystem::create_directories(std::filesystem::path(socket_path_).parent_path());
  {
    // An earlier agent that died without cleaning up.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  ASSERT_TRUE(std::filesystem::exists(socket_path_));
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  EXPECT_GE(fd, 0);
  close(fd);
  server_.Stop();
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
}

TEST_F(HookServerTest, RefusesAPathThatIsNotASocket) {
  std::filesystem::create_directories(std::filesystem::path(socket_path_).parent_path());
  { FILE* f = fopen(socket_path_.c_str(), "w"); fclose(f); }
  EXPECT_EQ(server_.Start().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace reptrace

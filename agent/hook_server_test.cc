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
using testing::SendWithDescriptors;
using testing::TestRing;

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

// The records of one exchange on connection `conn`, each apart (as a ring holds them).
std::vector<std::string> ExchangeRecords(HookScript& script, uint64_t conn,
                                         const std::string& path, uint64_t t = 1000) {
  return {AsBytes(script.Accept(conn, 7, t)),
          AsBytes(script.Recv(conn, 7, t + 1000, "GET " + path + " HTTP/1.1\r\n\r\n")),
          AsBytes(script.Send(conn, 7, t + 2000, "HTTP/1.1 200 OK\r\n\r\n")),
          AsBytes(script.Close(conn, 7, t + 3000))};
}

HelloRecord RingHello(const HookScript& script, const std::string& service = "shop") {
  HelloRecord hello = script.Hello(service, "shopd");
  hello.flags = kHelloFlagRing;
  return hello;
}

// This process's descriptors open on the memfd named `name`: the test's own and any the
// agent (running in this process) kept.
int DescriptorsOn(const std::string& name) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (!ec && target.rfind("/memfd:" + name + " ", 0) == 0) ++count;
  }
  return count;
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
                       [this](const SpanRecord& span) {
                         absl::MutexLock lock(&mu_);
                         spans_.push_back(ToSpanProto(span));
                       },
                       absl::Milliseconds(300)};
  HookServer server_{socket_path_, &builder_, &counters_, absl::Milliseconds(20)};
};

TEST(NextRingWaitMsTest, ABusyRingIsLeftToFillAnEighthBetweenPasses) {
  constexpr int64_t kMs = 1'000'000;
  // nginx at ~46 k requests/s: ~92 of a ring's 4 096 records a millisecond.
  EXPECT_EQ(NextRingWaitMs(92, 92.0 / 4096, 1 * kMs, 1), 5);
  // The rate holds at the longer wait: the wait holds too.
  EXPECT_EQ(NextRingWaitMs(511, 511.0 / 4096, 5 * kMs, 5), 5);
  // A flooding process fills an eighth in under a millisecond: the shortest wait.
  EXPECT_EQ(NextRingWaitMs(4096, 1.0, 2 * kMs, 2), 1);
  // A trickle: the longest.
  EXPECT_EQ(NextRingWaitMs(2, 2.0 / 4096, 1 * kMs, 1), 10);
  // Nothing taken: doubling up to the longest.
  EXPECT_EQ(NextRingWaitMs(0, 0, 1 * kMs, 1), 2);
  EXPECT_EQ(NextRingWaitMs(0, 0, 8 * kMs, 8), 10);
  // No time measured (a clock that did not move): the shortest.
  EXPECT_EQ(NextRingWaitMs(5, 5.0 / 4096, 0, 4), 1);
}

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


// Data of a connection whose open record never came (it raced with the loss of an earlier
// agent connection) makes no span, and is counted where the controller and reptracectl
// see it, not only in the builder.
TEST_F(HookServerTest, DataOfAConnectionNeverOpenedIsCountedInTheAgentsCounters) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(4242);
  std::string bytes = AsBytes(script.Hello("web", "nginx"));
  bytes += AsBytes(script.Recv(77, 4242, 1000, "GET / HTTP/1.1\r\n\r\n"));
  bytes += AsBytes(script.Send(77, 4242, 2000, "HTTP/1.1 200 OK\r\n\r\n"));
  ASSERT_TRUE(WriteAll(fd, bytes));
  ASSERT_TRUE(WaitFor([&] { return counters_.events_without_connection.load() == 2; }))
      << counters_.events_without_connection.load();
  EXPECT_EQ(counters_.Snapshot().events_without_connection(), 2u);
  EXPECT_EQ(SpanCount(), 0u);
  close(fd);
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

// Wire version 3: the hello hands over a ring; the records come through it.
TEST_F(HookServerTest, RecordsInTheRingAfterTheHelloBecomeSpans) {
  ASSERT_TRUE(server_.Start().ok());
  const std::string name = "reptrace-test-ring-spans";
  TestRing ring(64, name);
  ASSERT_TRUE(ring.ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(31337);
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script, "web")), {ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 1; }));
  // The agent keeps the mapping, not the descriptor.
  EXPECT_EQ(DescriptorsOn(name), 1);
  for (uint64_t conn : {1, 2}) {
    for (const std::string& record : ExchangeRecords(script, conn, "/ring-" +
                                                     std::to_string(conn))) {
      ASSERT_TRUE(ring.Push(record));
    }
  }
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 2; }));
  std::set<std::string> names;
  for (const v1::Span& span : Spans()) {
    names.insert(span.name());
    EXPECT_EQ(span.service(), "web");
    EXPECT_EQ(span.pid(), 31337u);
  }
  EXPECT_EQ(names, (std::set<std::string>{"GET /ring-1", "GET /ring-2"}));
  EXPECT_EQ(counters_.events_received.load(), 8u);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  EXPECT_EQ(ring.header()->dequeue_pos.load(), 8u);
  EXPECT_EQ(server_.connections(), 1u);
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return server_.connections() == 0; }));
}

// In-band records reach the span builder from the ring and from the socket alike: each
// server span gets the parent its frame named, and an unframed answer is counted where
// the controller sees it.
TEST_F(HookServerTest, InbandRecordsFromTheRingAndTheSocketReachTheSpans) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing ring(64, "reptrace-test-ring-inband");
  ASSERT_TRUE(ring.ok());
  const int ring_fd = ConnectUnix(socket_path_);
  const int socket_fd = ConnectUnix(socket_path_);
  ASSERT_GE(ring_fd, 0);
  ASSERT_GE(socket_fd, 0);
  HookScript ring_script(1001);
  HookScript socket_script(1002);
  ASSERT_TRUE(SendWithDescriptors(ring_fd, AsBytes(RingHello(ring_script, "web")),
                                  {ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 1; }));
  ASSERT_TRUE(ring.Push(ring_script.Accept(1, 7, 1000)));
  ASSERT_TRUE(ring.Push(ring_script.Inband(InbandEvent::kReceived, 1, 7, 0xa, 0x111)));
  ASSERT_TRUE(ring.Push(ring_script.Recv(1, 7, 2000, "GET /ring HTTP/1.1\r\n\r\n")));
  ASSERT_TRUE(ring.Push(ring_script.Send(1, 7, 3000, "HTTP/1.1 200 OK\r\n\r\n")));
  ASSERT_TRUE(ring.Push(ring_script.Close(1, 7, 4000)));
  std::string bytes = AsBytes(socket_script.Hello("api", "apid", 2));
  bytes += AsBytes(socket_script.Accept(1, 7, 1000));
  bytes += AsBytes(socket_script.Inband(InbandEvent::kReceived, 1, 7, 0xb, 0x222));
  bytes += AsBytes(socket_script.Recv(1, 7, 2000, "GET /socket HTTP/1.1\r\n\r\n"));
  bytes += AsBytes(socket_script.Send(1, 7, 3000, "HTTP/1.1 200 OK\r\n\r\n"));
  bytes += AsBytes(socket_script.Inband(InbandEvent::kPeerNotHooked, 1, 7, 0, 0));
  bytes += AsBytes(socket_script.Close(1, 7, 4000));
  ASSERT_TRUE(WriteAll(socket_fd, bytes));

  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 2; }));
  std::set<std::pair<std::string, uint64_t>> parents;
  for (const v1::Span& span : Spans()) parents.emplace(span.name(), span.parent_span_id());
  EXPECT_EQ(parents, (std::set<std::pair<std::string, uint64_t>>{{"GET /ring", 0x111},
                                                                 {"GET /socket", 0x222}}));
  ASSERT_TRUE(WaitFor([&] { return counters_.inband_peers_not_hooked.load() == 1; }));
  EXPECT_EQ(counters_.Snapshot().inband_peers_not_hooked(), 1u);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  close(ring_fd);
  close(socket_fd);
}

// A process writes its last records and exits: they are still in the memfd, and the agent
// takes them all when the socket ends, more than one drain pass would take.
TEST_F(HookServerTest, WhatAProcessWroteBeforeItsSocketClosedIsDrained) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing ring(16384, "reptrace-test-ring-exit");
  ASSERT_TRUE(ring.ok());
  HookScript script(4711);
  constexpr int kExchanges = 3000;  // 12000 records
  for (int i = 1; i <= kExchanges; ++i) {
    for (const std::string& record : ExchangeRecords(script, i, "/last")) {
      ASSERT_TRUE(ring.Push(record));
    }
  }
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), {ring.fd()}));
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == kExchanges; })) << SpanCount();
  EXPECT_EQ(counters_.events_received.load(), 4u * kExchanges);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  EXPECT_TRUE(WaitFor([&] { return server_.connections() == 0; }));
}

TEST_F(HookServerTest, StopDrainsEveryRing) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing ring(16384, "reptrace-test-ring-stop");
  ASSERT_TRUE(ring.ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(4712);
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), {ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 1; }));
  constexpr int kExchanges = 3000;
  for (int i = 1; i <= kExchanges; ++i) {
    for (const std::string& record : ExchangeRecords(script, i, "/stop")) {
      ASSERT_TRUE(ring.Push(record));
    }
  }
  server_.Stop();
  EXPECT_EQ(counters_.events_received.load(), 4u * kExchanges);
  EXPECT_EQ(SpanCount(), static_cast<size_t>(kExchanges));
  close(fd);
}

TEST_F(HookServerTest, TheRingsDropsAreCounted) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing ring(8, "reptrace-test-ring-drops");
  ASSERT_TRUE(ring.ok());
  HookScript script(4713);
  // Full before the agent had it: 2 of 10 refused.
  int pushed = 0;
  for (int i = 1; i <= 10; ++i) pushed += ring.Push(script.Accept(i, 7, 1000 * i)) ? 1 : 0;
  ASSERT_EQ(pushed, 8);
  ASSERT_EQ(ring.header()->dropped.load(), 2u);
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), {ring.fd()}));
  ASSERT_TRUE(WaitFor([&] {
    return counters_.events_received.load() == 8 && counters_.hook_events_dropped.load() == 2;
  })) << counters_.events_received.load() << " " << counters_.hook_events_dropped.load();
  ring.header()->dropped.fetch_add(5);
  EXPECT_TRUE(WaitFor([&] { return counters_.hook_events_dropped.load() == 7; }))
      << counters_.hook_events_dropped.load();
  // A count that goes back (the process can write anything there) takes nothing away.
  ring.header()->dropped.store(1);
  ASSERT_TRUE(ring.Push(script.Accept(11, 7, 20000)));
  ASSERT_TRUE(WaitFor([&] { return counters_.events_received.load() == 9; }));
  EXPECT_EQ(counters_.hook_events_dropped.load(), 7u);
  close(fd);
}

// Each refused ring: counted, its connection closed, no descriptor kept; the agent then
// serves a good one.
TEST_F(HookServerTest, RefusesRingsItCannotTrust) {
  ASSERT_TRUE(server_.Start().ok());
  struct Case {
    std::string what;
    std::unique_ptr<TestRing> ring;  // null: the hello comes without a descriptor
  };
  std::vector<Case> cases;
  cases.push_back({"no descriptor", nullptr});
  cases.push_back({"not sealed against shrinking",
                   std::make_unique<TestRing>(64, "reptrace-test-ring-bad-1", F_SEAL_GROW)});
  cases.push_back({"not sealed against growing",
                   std::make_unique<TestRing>(64, "reptrace-test-ring-bad-2", F_SEAL_SHRINK)});
  cases.push_back({"not sealed at all",
                   std::make_unique<TestRing>(64, "reptrace-test-ring-bad-3", 0)});
  cases.push_back({"a size that is not its capacity's",
                   std::make_unique<TestRing>(64, "reptrace-test-ring-bad-4",
                                              F_SEAL_SHRINK | F_SEAL_GROW,
                                              RingBytes(64) + 4096)});
  cases.push_back({"bad magic", std::make_unique<TestRing>(64, "reptrace-test-ring-bad-5")});
  cases.back().ring->header()->magic = 0x1234;
  cases.push_back({"bad capacity", std::make_unique<TestRing>(64, "reptrace-test-ring-bad-6")});
  cases.back().ring->header()->capacity = 128;
  cases.push_back({"too big", std::make_unique<TestRing>(64, "reptrace-test-ring-bad-7",
                                                         F_SEAL_SHRINK | F_SEAL_GROW,
                                                         RingBytes(kMaxRingCapacity) + 4096)});
  uint64_t malformed = 0;
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    if (c.ring != nullptr) {
      ASSERT_TRUE(c.ring->ok());
    }
    const int fd = ConnectUnix(socket_path_);
    ASSERT_GE(fd, 0);
    HookScript script;
    std::vector<int> fds;
    if (c.ring != nullptr) fds.push_back(c.ring->fd());
    ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), fds));
    EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(10)));
    EXPECT_EQ(counters_.records_malformed.load(), ++malformed);
    close(fd);
    if (c.ring != nullptr) {
      EXPECT_EQ(DescriptorsOn("reptrace-test-ring-bad-" + std::to_string(&c - &cases[0])),
                1);
    }
  }
  // A pipe is no memfd.
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  {
    const int fd = ConnectUnix(socket_path_);
    HookScript script;
    ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), {pipe_fds[0]}));
    EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(10)));
    EXPECT_EQ(counters_.records_malformed.load(), ++malformed);
    close(fd);
    close(pipe_fds[0]);
    // The agent closed its copy of the read end: the write end now has no reader left.
    ASSERT_TRUE(WaitFor([&] {
      pollfd p{pipe_fds[1], 0, 0};
      return poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
    }));
    close(pipe_fds[1]);
  }
  EXPECT_EQ(counters_.processes_connected.load(), 0u);
  EXPECT_EQ(counters_.events_received.load(), 0u);
  EXPECT_TRUE(WaitFor([&] { return server_.connections() == 0; }));

  // The agent carries on.
  TestRing good(64, "reptrace-test-ring-good");
  ASSERT_TRUE(good.ok());
  const int fd = ConnectUnix(socket_path_);
  HookScript script(777);
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)), {good.fd()}));
  for (const std::string& record : ExchangeRecords(script, 1, "/after-refusals")) {
    ASSERT_TRUE(good.Push(record));
  }
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(Spans()[0].name(), "GET /after-refusals");
  EXPECT_EQ(counters_.records_malformed.load(), malformed);
  close(fd);
}

TEST_F(HookServerTest, ADescriptorWithoutTheRingFlagIsClosed) {
  ASSERT_TRUE(server_.Start().ok());
  const std::string name = "reptrace-test-ring-unasked";
  TestRing ring(64, name);
  ASSERT_TRUE(ring.ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(4714);
  // Version 3 without the flag: records on the socket, the descriptor is not the agent's.
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(script.Hello()), {ring.fd()}));
  ASSERT_TRUE(ring.Push(script.Accept(9, 7, 500)));  // never read
  // Another descriptor after the hello, with records.
  ASSERT_TRUE(SendWithDescriptors(fd, Exchange(script, 1, "/socket"), {ring.fd()}));
  ASSERT_TRUE(WriteAll(fd, AsBytes(script.Close(1, 7, 4000))));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(Spans()[0].name(), "GET /socket");
  EXPECT_EQ(DescriptorsOn(name), 1);
  EXPECT_EQ(counters_.events_received.load(), 4u);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  EXPECT_EQ(ring.header()->dequeue_pos.load(), 0u);
  EXPECT_EQ(server_.connections(), 1u);
  close(fd);
}

TEST_F(HookServerTest, MoreDescriptorsThanItHasRoomForCloseTheConnection) {
  ASSERT_TRUE(server_.Start().ok());
  const std::string name = "reptrace-test-ring-many";
  TestRing ring(64, name);
  ASSERT_TRUE(ring.ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script;
  ASSERT_TRUE(SendWithDescriptors(fd, AsBytes(RingHello(script)),
                                  std::vector<int>(16, ring.fd())));
  EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(10)));
  EXPECT_EQ(counters_.records_malformed.load(), 1u);
  EXPECT_EQ(counters_.processes_connected.load(), 0u);
  EXPECT_EQ(DescriptorsOn(name), 1);
  close(fd);
}

TEST_F(HookServerTest, AMalformedRecordInTheRingClosesTheConnection) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing garbage_ring(64, "reptrace-test-ring-garbage");
  TestRing hello_ring(64, "reptrace-test-ring-hello");
  ASSERT_TRUE(garbage_ring.ok());
  ASSERT_TRUE(hello_ring.ok());
  HookScript a(5001), b(5002);
  const int fa = ConnectUnix(socket_path_);
  const int fb = ConnectUnix(socket_path_);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0);
  ASSERT_TRUE(SendWithDescriptors(fa, AsBytes(RingHello(a)), {garbage_ring.fd()}));
  ASSERT_TRUE(SendWithDescriptors(fb, AsBytes(RingHello(b)), {hello_ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 2; }));
  ASSERT_TRUE(garbage_ring.Push(a.Accept(1, 7, 1000)));
  ASSERT_TRUE(garbage_ring.Push(std::string(64, '\xee')));
  ASSERT_TRUE(hello_ring.Push(b.Accept(1, 7, 1000)));
  ASSERT_TRUE(hello_ring.Push(AsBytes(b.Hello())));  // a hello belongs on the socket only
  EXPECT_TRUE(ClosedByPeer(fa, absl::Seconds(10)));
  EXPECT_TRUE(ClosedByPeer(fb, absl::Seconds(10)));
  EXPECT_EQ(counters_.records_malformed.load(), 2u);
  EXPECT_EQ(counters_.events_received.load(), 2u);
  close(fa);
  close(fb);
}

// A fork child's hello names its parent's thread: the parent's records still in its ring
// reach the builder before the child's hello, so the child's call has its parent span.
TEST_F(HookServerTest, ANewHelloComesAfterTheRecordsAlreadyInTheRings) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing parent_ring(64, "reptrace-test-ring-parent");
  ASSERT_TRUE(parent_ring.ok());
  HookScript parent(6001), child(6002);
  const int pf = ConnectUnix(socket_path_);
  ASSERT_GE(pf, 0);
  ASSERT_TRUE(SendWithDescriptors(pf, AsBytes(RingHello(parent)), {parent_ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 1; }));
  for (int round = 0; round < 5; ++round) {
    const int cf = ConnectUnix(socket_path_);
    ASSERT_GE(cf, 0);
    ASSERT_TRUE(WaitFor([&] { return server_.connections() == 2; }));
    // Let the loop settle into its longest wait, then fork: the child's hello follows the
    // parent's records at once, and wakes the loop before its next drain pass.
    absl::SleepFor(absl::Milliseconds(30));
    const uint64_t conn = 1 + round;
    const uint64_t t = 100000 * (round + 1);
    ASSERT_TRUE(parent_ring.Push(parent.Accept(conn, 7, t)));
    ASSERT_TRUE(parent_ring.Push(parent.Recv(conn, 7, t + 100, "GET /fork HTTP/1.1\r\n\r\n")));
    HelloRecord hello = child.Hello();
    hello.cause_pid = 6001;
    hello.cause_tid = 7;
    ASSERT_TRUE(WriteAll(cf, AsBytes(hello) +
                                 AsBytes(child.Connect(1, 6002, t + 200, 0, "10.0.0.9", 6379)) +
                                 AsBytes(child.Send(1, 6002, t + 210, "PING\r\n")) +
                                 AsBytes(child.Close(1, 6002, t + 300))));
    ASSERT_TRUE(WaitFor([&] { return SpanCount() == 2u * round + 1; }));
    ASSERT_TRUE(parent_ring.Push(parent.Send(conn, 7, t + 400, "HTTP/1.1 200 OK\r\n\r\n")));
    ASSERT_TRUE(parent_ring.Push(parent.Close(conn, 7, t + 500)));
    ASSERT_TRUE(WaitFor([&] { return SpanCount() == 2u * round + 2; }));
    const std::vector<v1::Span> spans = Spans();
    const v1::Span& child_span = spans[2 * round];
    const v1::Span& server_span = spans[2 * round + 1];
    EXPECT_EQ(child_span.pid(), 6002u);
    EXPECT_EQ(server_span.pid(), 6001u);
    EXPECT_EQ(child_span.parent_span_id(), server_span.span_id()) << "round " << round;
    close(cf);
    ASSERT_TRUE(WaitFor([&] { return server_.connections() == 1; }));
  }
  close(pf);
}

// A process that reconnects (its old connection lost to it, e.g. a daemon closed or
// dup2'd over its fd) hands the same ring over again: the new connection reads it on, the
// old one is drained and closed, no record is lost or read twice.
TEST_F(HookServerTest, AReconnectingProcessHandsItsRingOver) {
  ASSERT_TRUE(server_.Start().ok());
  TestRing ring(64, "reptrace-test-ring-again");
  ASSERT_TRUE(ring.ok());
  HookScript script(4715);
  const int first = ConnectUnix(socket_path_);
  ASSERT_GE(first, 0);
  ASSERT_TRUE(SendWithDescriptors(first, AsBytes(RingHello(script)), {ring.fd()}));
  ASSERT_TRUE(WaitFor([&] { return counters_.processes_connected.load() == 1; }));
  for (const std::string& record : ExchangeRecords(script, 1, "/first")) {
    ASSERT_TRUE(ring.Push(record));
  }
  ASSERT_TRUE(ring.Push(script.Accept(2, 7, 50000)));  // read by one connection or the other
  const int second = ConnectUnix(socket_path_);
  ASSERT_GE(second, 0);
  ASSERT_TRUE(SendWithDescriptors(second, AsBytes(RingHello(script)), {ring.fd()}));
  EXPECT_TRUE(ClosedByPeer(first, absl::Seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return server_.connections() == 1; }));
  // Far more records than the ring holds: they flow only if the new reader goes on.
  for (int i = 3; i < 200; ++i) {
    for (const std::string& record : ExchangeRecords(script, i, "/second", 100000 * i)) {
      ASSERT_TRUE(WaitFor([&] { return ring.Push(record); }));
    }
  }
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1 + 197; })) << SpanCount();
  EXPECT_EQ(counters_.events_received.load(), 4u + 1u + 4u * 197);
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  EXPECT_EQ(counters_.processes_connected.load(), 2u);
  close(first);
  close(second);
}

TEST_F(HookServerTest, AVersion2HelloWithRecordsOnTheSocketStillWorks) {
  ASSERT_TRUE(server_.Start().ok());
  const int fd = ConnectUnix(socket_path_);
  ASSERT_GE(fd, 0);
  HookScript script(2222);
  std::string bytes = AsBytes(script.Hello("old", "oldd", 2)) + Exchange(script, 1, "/v2");
  bytes += AsBytes(script.Close(1, 7, 4000));
  ASSERT_TRUE(WriteAll(fd, bytes));
  ASSERT_TRUE(WaitFor([&] { return SpanCount() == 1; }));
  EXPECT_EQ(Spans()[0].name(), "GET /v2");
  EXPECT_EQ(Spans()[0].service(), "old");
  EXPECT_EQ(counters_.records_malformed.load(), 0u);
  close(fd);
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

#include "agent/config_page_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "hook/config_view.h"

namespace reptrace {
namespace {

using hook::ConnectionFacts;
using hook::FiltersTrace;
using hook::ReadConsistently;

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/reptrace-page.XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { std::system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

uint64_t Hash(const std::string& name) { return NameHash(name.data(), name.size()); }

// A peer address in the events' 16-byte form.
struct Address {
  uint8_t bytes[16] = {};
};
Address V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  Address addr;
  addr.bytes[10] = addr.bytes[11] = 0xff;
  addr.bytes[12] = a;
  addr.bytes[13] = b;
  addr.bytes[14] = c;
  addr.bytes[15] = d;
  return addr;
}

struct Connection {
  bool inbound = false;
  uint16_t local_port = 40000;
  uint16_t peer_port = 80;
  Address peer = V4(10, 1, 2, 3);
  std::string service = "frontend";
  std::string process = "nginx";
  bool unix_socket = false;
};

bool Traced(const ConfigBody& body, const Connection& c) {
  ConnectionFacts facts;
  facts.inbound = c.inbound;
  facts.has_ports = !c.unix_socket;
  facts.local_port = c.local_port;
  facts.peer_port = c.peer_port;
  facts.peer_addr = c.peer.bytes;
  facts.service_hash = Hash(c.service);
  facts.process_hash = Hash(c.process);
  return FiltersTrace(body, facts);
}

v1::PortRange Range(uint32_t first, uint32_t last = 0) {
  v1::PortRange range;
  range.set_first(first);
  range.set_last(last);
  return range;
}

TEST(EncodeConfigBodyTest, NoFilterTracesEverythingWithTheDocumentsDefaults) {
  ConfigBody body;
  ASSERT_TRUE(EncodeConfigBody(v1::TraceConfig(), 3, "node-1", &body).ok());
  EXPECT_EQ(body.config_version, 3u);
  EXPECT_EQ(body.enabled, 1);                      // absent: on
  EXPECT_EQ(body.capture_bytes, kCaptureBytes);    // absent: 128
  EXPECT_EQ(body.max_events_per_second, 0u);
  EXPECT_TRUE(Traced(body, Connection()));
  Connection unix_socket;
  unix_socket.unix_socket = true;
  EXPECT_TRUE(Traced(body, unix_socket));  // the filters say yes; trace_unix decides apart
}

TEST(EncodeConfigBodyTest, TheFirstMatchingFilterDecides) {
  v1::TraceConfig config;
  v1::TraceFilter* exclude = config.add_filters();
  exclude->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  *exclude->add_peer_ports() = Range(5432);
  v1::TraceFilter* include = config.add_filters();
  include->set_action(v1::TraceFilter::ACTION_INCLUDE);
  include->add_services("frontend");
  ConfigBody body;
  ASSERT_TRUE(EncodeConfigBody(config, 2, "node-1", &body).ok());

  Connection to_web;
  EXPECT_TRUE(Traced(body, to_web));  // frontend, not 5432
  Connection to_db;
  to_db.peer_port = 5432;
  EXPECT_FALSE(Traced(body, to_db));  // excluded first
  Connection other;
  other.service = "batch";
  EXPECT_FALSE(Traced(body, other));  // there is an include filter, and it does not match
}

TEST(EncodeConfigBodyTest, EveryFieldOfAFilterMustMatch) {
  v1::TraceConfig config;
  v1::TraceFilter* include = config.add_filters();
  include->set_action(v1::TraceFilter::ACTION_INCLUDE);
  include->set_direction(v1::DIRECTION_INBOUND);
  include->add_processes("nginx");
  *include->add_local_ports() = Range(8000, 8099);
  include->add_peer_cidrs("10.0.0.0/8");
  include->add_peer_cidrs("fd00::/8");
  ConfigBody body;
  ASSERT_TRUE(EncodeConfigBody(config, 2, "node-1", &body).ok());

  Connection c;
  c.inbound = true;
  c.local_port = 8080;
  EXPECT_TRUE(Traced(body, c));
  Connection outbound = c;
  outbound.inbound = false;
  EXPECT_FALSE(Traced(body, outbound));
  Connection other_port = c;
  other_port.local_port = 8100;
  EXPECT_FALSE(Traced(body, other_port));
  Connection other_program = c;
  other_program.process = "python3";
  EXPECT_FALSE(Traced(body, other_program));
  Connection outside = c;
  outside.peer = V4(11, 0, 0, 1);
  EXPECT_FALSE(Traced(body, outside));
  Connection v6 = c;
  std::memset(v6.peer.bytes, 0, 16);
  v6.peer.bytes[0] = 0xfd;
  v6.peer.bytes[15] = 1;
  EXPECT_TRUE(Traced(body, v6));
  Connection unix_socket = c;
  unix_socket.unix_socket = true;  // has no port or address to match
  EXPECT_FALSE(Traced(body, unix_socket));
}

TEST(EncodeConfigBodyTest, AProgramNameIsMatchedAsTheKernelKeepsIt) {
  v1::TraceConfig config;
  v1::TraceFilter* exclude = config.add_filters();
  exclude->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  exclude->add_processes("a-very-long-program-name");
  ConfigBody body;
  ASSERT_TRUE(EncodeConfigBody(config, 2, "node-1", &body).ok());
  Connection c;
  c.process = "a-very-long-pro";  // comm: 15 bytes
  EXPECT_FALSE(Traced(body, c));
}

TEST(EncodeConfigBodyTest, AFilterForOtherNodesMatchesNothingHereButStillIncludes) {
  v1::TraceConfig config;
  v1::TraceFilter* include = config.add_filters();
  include->set_action(v1::TraceFilter::ACTION_INCLUDE);
  include->add_nodes("node-2");
  ConfigBody here, there;
  ASSERT_TRUE(EncodeConfigBody(config, 2, "node-1", &here).ok());
  ASSERT_TRUE(EncodeConfigBody(config, 2, "node-2", &there).ok());
  EXPECT_FALSE(Traced(here, Connection()));  // node-1 is not included
  EXPECT_TRUE(Traced(there, Connection()));
}

TEST(EncodeConfigBodyTest, WhatDoesNotFitThePageIsRefused) {
  v1::TraceConfig config;
  for (uint32_t i = 0; i <= kPageMaxFilters; ++i) {
    config.add_filters()->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  }
  ConfigBody body;
  absl::Status status = EncodeConfigBody(config, 2, "n", &body);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "filters: 33 entries, the page holds 32");

  v1::TraceConfig bad_cidr;
  v1::TraceFilter* filter = bad_cidr.add_filters();
  filter->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  filter->add_peer_cidrs("10.0.0.1/8");
  status = EncodeConfigBody(bad_cidr, 2, "n", &body);
  EXPECT_EQ(status.message(), "filters[0].peer_cidrs[0]: host bits set");
}

const ConfigPage* MapForReading(const std::string& path, struct stat* st) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return nullptr;
  fstat(fd, st);
  void* memory = mmap(nullptr, sizeof(ConfigPage), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  return memory == MAP_FAILED ? nullptr : static_cast<const ConfigPage*>(memory);
}

TEST(ConfigPageWriterTest, ANewPageIsReadableByEveryoneAndTracesEverything) {
  TempDir dir;
  const std::string path = ConfigPagePath(dir.path() + "/agent.sock");
  EXPECT_EQ(path, dir.path() + "/agent.sock.config");
  absl::StatusOr<std::unique_ptr<ConfigPageWriter>> writer = ConfigPageWriter::Open(path, "n");
  ASSERT_TRUE(writer.ok()) << writer.status();
  struct stat st;
  const ConfigPage* page = MapForReading(path, &st);
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(static_cast<size_t>(st.st_size), kConfigPageFileBytes);
  EXPECT_EQ(page->magic, kConfigPageMagic);
  EXPECT_EQ(page->seq.load(), kFirstPageSeq);
  EXPECT_EQ(page->body.config_version, 0u);
  EXPECT_EQ(page->body.enabled, 1);
  EXPECT_TRUE(Traced(page->body, Connection()));
  munmap(const_cast<ConfigPage*>(page), sizeof(ConfigPage));
}

TEST(ConfigPageWriterTest, APublishedVersionIsSeenThroughAMappingMadeBefore) {
  TempDir dir;
  const std::string path = dir.path() + "/agent.sock.config";
  auto writer = ConfigPageWriter::Open(path, "n");
  ASSERT_TRUE(writer.ok());
  struct stat st;
  const ConfigPage* page = MapForReading(path, &st);
  ASSERT_NE(page, nullptr);
  v1::ConfigVersion version;
  version.set_version(7);
  version.mutable_config()->set_enabled(false);
  version.mutable_config()->set_max_events_per_second(50);
  ASSERT_TRUE((*writer)->Publish(version).ok());
  uint64_t seen = 0;
  bool enabled = true;
  const uint64_t seq = ReadConsistently(*page, [&](const ConfigBody& body) {
    seen = body.config_version;
    enabled = body.enabled != 0;
  });
  EXPECT_EQ(seq, kFirstPageSeq + 2);
  EXPECT_EQ(seen, 7u);
  EXPECT_FALSE(enabled);
  EXPECT_EQ(page->body.max_events_per_second, 50u);
  munmap(const_cast<ConfigPage*>(page), sizeof(ConfigPage));
}

TEST(ConfigPageWriterTest, AReopenedPageKeepsItsInodeItsConfigAndItsSeq) {
  TempDir dir;
  const std::string path = dir.path() + "/agent.sock.config";
  struct stat first, second;
  {
    auto writer = ConfigPageWriter::Open(path, "n");
    ASSERT_TRUE(writer.ok());
    v1::ConfigVersion version;
    version.set_version(5);
    version.mutable_config()->set_capture_bytes(16);
    ASSERT_TRUE((*writer)->Publish(version).ok());
    ASSERT_EQ(stat(path.c_str(), &first), 0);
  }
  auto writer = ConfigPageWriter::Open(path, "n");  // the agent restarted
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(stat(path.c_str(), &second), 0);
  EXPECT_EQ(first.st_ino, second.st_ino);  // processes that mapped it follow the new agent
  EXPECT_EQ((*writer)->version(), 5u);
  v1::ConfigVersion next;
  next.set_version(6);
  ASSERT_TRUE((*writer)->Publish(next).ok());
  EXPECT_EQ((*writer)->seq(), kFirstPageSeq + 4);
}

TEST(ConfigPageWriterTest, APageLeftHalfWrittenIsRewrittenWholeAndStaysUsable) {
  TempDir dir;
  const std::string path = dir.path() + "/agent.sock.config";
  ASSERT_TRUE(ConfigPageWriter::Open(path, "n").ok());
  {
    // An agent that died while writing: seq left odd.
    const int fd = open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    void* memory = mmap(nullptr, sizeof(ConfigPage), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT_NE(memory, MAP_FAILED);
    auto* page = static_cast<ConfigPage*>(memory);
    page->seq.store(page->seq.load() + 1);
    page->body.enabled = 0;
    munmap(memory, sizeof(ConfigPage));
  }
  auto writer = ConfigPageWriter::Open(path, "n");
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ((*writer)->seq() % 2, 0u);
  struct stat st;
  const ConfigPage* page = MapForReading(path, &st);
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(page->body.enabled, 1);  // the default, whole
  v1::ConfigVersion version;
  version.set_version(9);
  ASSERT_TRUE((*writer)->Publish(version).ok());
  EXPECT_EQ(page->body.config_version, 9u);
  munmap(const_cast<ConfigPage*>(page), sizeof(ConfigPage));
}

TEST(ConfigPageWriterTest, AFileThatIsNotAPageIsReplaced) {
  TempDir dir;
  const std::string path = dir.path() + "/agent.sock.config";
  std::ofstream(path) << "not a page";
  auto writer = ConfigPageWriter::Open(path, "n");
  ASSERT_TRUE(writer.ok()) << writer.status();
  struct stat st;
  const ConfigPage* page = MapForReading(path, &st);
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(page->magic, kConfigPageMagic);
  munmap(const_cast<ConfigPage*>(page), sizeof(ConfigPage));
}

TEST(ConfigPageWriterTest, ADirectoryThatCannotBeWrittenIsAClearError) {
  auto writer = ConfigPageWriter::Open("/proc/reptrace-no-such-dir/agent.sock.config", "n");
  ASSERT_FALSE(writer.ok());
  EXPECT_NE(writer.status().message().find("/proc/reptrace-no-such-dir"), std::string::npos)
      << writer.status();
}

// The seqlock: a reader racing with a writer that alternates between two documents never
// takes half of one and half of the other.
TEST(ConfigPageWriterTest, AReaderNeverSeesAHalfWrittenBody) {
  TempDir dir;
  const std::string path = dir.path() + "/agent.sock.config";
  auto writer = ConfigPageWriter::Open(path, "n");
  ASSERT_TRUE(writer.ok());
  struct stat st;
  const ConfigPage* page = MapForReading(path, &st);
  ASSERT_NE(page, nullptr);
  // Document A: 32 filters each with port 1000; document B: 32 filters each with port 2000.
  v1::ConfigVersion a, b;
  a.set_version(1);
  b.set_version(2);
  for (uint32_t i = 0; i < kPageMaxFilters; ++i) {
    v1::TraceFilter* fa = a.mutable_config()->add_filters();
    fa->set_action(v1::TraceFilter::ACTION_EXCLUDE);
    *fa->add_peer_ports() = Range(1000);
    v1::TraceFilter* fb = b.mutable_config()->add_filters();
    fb->set_action(v1::TraceFilter::ACTION_EXCLUDE);
    *fb->add_peer_ports() = Range(2000);
  }
  std::atomic<bool> stop{false};
  std::thread writing([&] {
    for (int i = 0; !stop.load(); ++i) ASSERT_TRUE((*writer)->Publish(i % 2 ? a : b).ok());
  });
  while (page->body.config_version == 0) std::this_thread::yield();
  int consistent = 0, torn = 0, seen_a = 0, seen_b = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) {
    uint64_t version = 0;
    uint16_t first = 0, last = 0;
    const uint64_t seq = ReadConsistently(*page, [&](const ConfigBody& body) {
      version = body.config_version;
      first = body.filters[0].peer_ports[0].first;
      last = body.filters[kPageMaxFilters - 1].peer_ports[0].first;
    });
    if (seq == 0) continue;  // overlapped a write: the caller tries again later
    ++consistent;
    (version == 1 ? seen_a : seen_b)++;
    const uint16_t expected = version == 1 ? 1000 : 2000;
    if (first != expected || last != expected) ++torn;
  }
  stop.store(true);
  writing.join();
  EXPECT_GT(seen_a, 0);
  EXPECT_GT(seen_b, 0);
  EXPECT_EQ(torn, 0) << "of " << consistent << " reads";
  munmap(const_cast<ConfigPage*>(page), sizeof(ConfigPage));
}

}  // namespace
}  // namespace reptrace

// FakeAgent: for tests of libreptrace.so. Binds a Unix socket where the hooked programs'
// REPTRACE_SOCKET points, takes the ring each hello hands over (common/shared_ring.h),
// drains it as the agent does, and decodes HelloRecord / EventRecord / DataRecord /
// InbandRecord / StatsRecord streams exactly as the agent must (one AgentStream per hooked
// process connection). When a connection ends, its ring is drained to the end and the
// stream gets a StatsRecord with the ring header's counts (what the hook pushed and
// dropped): the sign, for tests, that the process is done and everything it recorded has been read.
//
// So that tests can look at every socket call alike, a DataRecord is turned into the
// EventRecord the agent reconstructs from it: role, fd, addresses, family and protocol of
// the connection's open record (pid from the hello), wall_ns from mono_ns and the hello's
// clock pair, result -1 and error = -result for a failure, the hash computed from the
// capture if the hook left it to the reader. A DataRecord of a connection
// whose open record has not come first on the same stream is an error of the stream: the
// hook promises announce-before-data.
#ifndef REPTRACE_HOOK_TESTING_FAKE_AGENT_H_
#define REPTRACE_HOOK_TESTING_FAKE_AGENT_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/event_record.h"
#include "common/shared_ring.h"
#include "tests/testing/process.h"

namespace reptrace::testing {

// What one hooked process sent on one connection to the agent.
struct AgentStream {
  bool has_hello = false;
  HelloRecord hello = {};
  std::vector<EventRecord> events;  // DataRecords included, as EventRecords (see above)
  size_t data_records = 0;          // how many of `events` came as DataRecords
  std::vector<StatsRecord> stats;
  std::vector<InbandRecord> inband;  // in-band mode's records, in order
  bool ring = false;  // the hello handed over a ring
  std::string error;  // a malformed record, if any
};

class FakeAgent {
 public:
  explicit FakeAgent(std::string path) : path_(std::move(path)) {
    listener_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    unlink(path_.c_str());
    if (bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listener_, 64) != 0) {
      ADD_FAILURE() << "cannot listen on " << path_ << ": " << strerror(errno);
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeAgent() {
    stop_ = true;
    thread_.join();
    while (!clients_.empty()) Forget(clients_.begin()->first);
    close(listener_);
    unlink(path_.c_str());
  }
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  std::vector<AgentStream> Streams() {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_;
  }

  // Waits until `done` holds for the streams received so far.
  bool WaitFor(const std::function<bool(const std::vector<AgentStream>&)>& done,
               absl::Duration timeout = absl::Milliseconds(8000)) {
    return WaitUntil([&] { return done(Streams()); }, timeout, absl::Milliseconds(10));
  }

 private:
  struct Client {
    size_t stream = 0;
    std::string buffer;
    std::map<uint64_t, EventRecord> opened;  // conn_id -> its open record
    int pending_fd = -1;          // received with the hello's bytes
    void* ring_memory = nullptr;  // mapped ring, RingBytes(capacity)
    size_t ring_bytes = 0;
    RingReader reader;
  };

  void Loop() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listener_, POLLIN, 0}};
      for (auto& [fd, client] : clients_) fds.push_back({fd, POLLIN, 0});
      poll(fds.data(), fds.size(), 5);
      if (fds[0].revents & POLLIN) {
        const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          std::lock_guard<std::mutex> lock(mu_);
          streams_.emplace_back();
          Client client;
          client.stream = streams_.size() - 1;
          clients_[fd] = std::move(client);
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        Client& client = clients_[fds[i].fd];
        if (fds[i].revents == 0) continue;
        char buf[65536];
        const ssize_t n = Receive(fds[i].fd, buf, sizeof(buf), &client);
        if (n <= 0) {
          Drain(&client, /*final=*/true);
          Forget(fds[i].fd);
          continue;
        }
        client.buffer.append(buf, static_cast<size_t>(n));
        Decode(&client);
      }
      for (auto& [fd, client] : clients_) Drain(&client, /*final=*/false);
    }
  }

  // read(), with any fd that comes along kept for the hello.
  ssize_t Receive(int fd, char* buf, size_t size, Client* client) {
    iovec iov = {buf, size};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t k = 0; k < count; ++k) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
        if (client->pending_fd < 0 && client->ring_memory == nullptr) {
          client->pending_fd = received;
        } else {
          close(received);
          std::lock_guard<std::mutex> lock(mu_);
          streams_[client->stream].error = "an fd beyond the ring's";
        }
      }
    }
    return n;
  }

  // Maps the ring the hello announced, as the agent does (sealed, exact size).
  void MapRing(Client* client, AgentStream& stream) {
    const int fd = client->pending_fd;
    client->pending_fd = -1;
    struct stat st;
    const int seals = fd < 0 ? -1 : fcntl(fd, F_GET_SEALS);
    if (fd < 0 || fstat(fd, &st) != 0 || seals < 0 || (seals & F_SEAL_SHRINK) == 0 ||
        (seals & F_SEAL_GROW) == 0 || st.st_size <= 0 ||
        static_cast<size_t>(st.st_size) > RingBytes(kMaxRingCapacity)) {
      stream.error = "hello's ring fd missing, unsealed or of a wrong size";
      if (fd >= 0) close(fd);
      return;
    }
    const size_t size = static_cast<size_t>(st.st_size);
    void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    uint32_t capacity = 0;
    if (memory == MAP_FAILED || !RingLayoutValid(memory, size, &capacity)) {
      stream.error = "hello's ring has a wrong layout";
      if (memory != MAP_FAILED) munmap(memory, size);
      return;
    }
    client->ring_memory = memory;
    client->ring_bytes = size;
    client->reader = RingReader(static_cast<RingHeader*>(memory), capacity);
    stream.ring = true;
  }

  // Decodes what the ring holds; at the end of the connection, all of it and the counts.
  void Drain(Client* client, bool final) {
    if (client->ring_memory != nullptr) {
      alignas(8) unsigned char record[kMaxRecordSize];
      std::string records;
      while (size_t n = client->reader.Pop(record)) {
        records.append(reinterpret_cast<const char*>(record), n);
      }
      if (!records.empty()) {
        std::string socket_bytes;
        socket_bytes.swap(client->buffer);
        client->buffer = records;
        Decode(client);
        if (!client->buffer.empty()) {
          std::lock_guard<std::mutex> lock(mu_);
          streams_[client->stream].error = "a partial record in the ring";
        }
        client->buffer.swap(socket_bytes);
      }
    }
    if (!final) return;
    std::lock_guard<std::mutex> lock(mu_);
    AgentStream& stream = streams_[client->stream];
    if (client->ring_memory != nullptr) {
      StatsRecord s = {};
      s.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kStats), sizeof(s)};
      s.pid = stream.hello.pid;
      s.events_recorded = client->reader.pushed();
      s.events_dropped = client->reader.dropped();
      stream.stats.push_back(s);
    }
  }

  void Forget(int fd) {
    Client& client = clients_[fd];
    if (client.ring_memory != nullptr) munmap(client.ring_memory, client.ring_bytes);
    if (client.pending_fd >= 0) close(client.pending_fd);
    close(fd);
    clients_.erase(fd);
  }

  void Decode(Client* client) {
    std::lock_guard<std::mutex> lock(mu_);
    AgentStream& stream = streams_[client->stream];
    std::string& b = client->buffer;
    while (b.size() >= sizeof(RecordHeader)) {
      RecordHeader header;
      std::memcpy(&header, b.data(), sizeof(header));
      if (header.magic != kRecordMagic || !RecordSizeValid(header.type, header.size)) {
        stream.error = "bad record header";
        b.clear();
        return;
      }
      if (b.size() < header.size) return;
      switch (static_cast<RecordType>(header.type)) {
        case RecordType::kHello:
          if (stream.has_hello) stream.error = "second hello";
          std::memcpy(&stream.hello, b.data(), sizeof(HelloRecord));
          stream.has_hello = true;
          if ((stream.hello.flags & kHelloFlagRing) != 0) {
            MapRing(client, stream);
          } else if (client->pending_fd >= 0) {
            stream.error = "an fd with a hello that has no ring";
          }
          break;
        case RecordType::kEvent: {
          if (!stream.has_hello) stream.error = "event before hello";
          EventRecord e;
          std::memcpy(&e, b.data(), sizeof(e));
          if (e.kind == static_cast<uint8_t>(EventKind::kConnect) ||
              e.kind == static_cast<uint8_t>(EventKind::kAccept)) {
            client->opened[e.conn_id] = e;
          }
          stream.events.push_back(e);
          break;
        }
        case RecordType::kData: {
          if (!stream.has_hello) stream.error = "data before hello";
          DataRecord d = {};
          std::memcpy(&d, b.data(), header.size);
          if (header.size != DataRecordWireSize(d.flags, d.capture_len)) {
            stream.error = "data record size does not match its flags and capture_len";
          }
          auto open = client->opened.find(d.conn_id);
          if (open == client->opened.end()) {
            stream.error = "data of connection " + std::to_string(d.conn_id) +
                           " before its open record";
            break;
          }
          EventRecord e = open->second;  // role, fd, addresses, family, protocol, pid
          e.header.type = static_cast<uint16_t>(RecordType::kData);
          e.kind = d.kind;
          e.flags = d.flags;
          e.capture_len = d.capture_len;
          e.tid = d.tid;
          e.mono_ns = d.mono_ns;
          e.wall_ns = d.mono_ns + (stream.hello.start_wall_ns - stream.hello.start_mono_ns);
          e.offset = d.offset;
          e.result = d.result < 0 ? -1 : d.result;
          e.error = d.result < 0 ? static_cast<int32_t>(-d.result) : 0;
          e.hash = DataRecordHash(d);
          std::memcpy(e.capture, d.capture, sizeof(e.capture));
          stream.events.push_back(e);
          ++stream.data_records;
          break;
        }
        case RecordType::kInband: {
          InbandRecord r;
          std::memcpy(&r, b.data(), sizeof(r));
          if (client->opened.count(r.conn_id) == 0) {
            stream.error = "in-band record of connection " + std::to_string(r.conn_id) +
                           " before its open record";
            break;
          }
          stream.inband.push_back(r);
          break;
        }
        case RecordType::kStats: {
          if (!stream.has_hello) stream.error = "stats before hello";
          StatsRecord s;
          std::memcpy(&s, b.data(), sizeof(s));
          stream.stats.push_back(s);
          break;
        }
      }
      b.erase(0, header.size);
    }
  }

  const std::string path_;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::map<int, Client> clients_;  // loop thread only
  std::mutex mu_;
  std::vector<AgentStream> streams_;
  std::thread thread_;
};

}  // namespace reptrace::testing

#endif  // REPTRACE_HOOK_TESTING_FAKE_AGENT_H_

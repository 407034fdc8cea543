// FakeAgent: for tests of libreptrace.so. Binds a Unix socket where the hooked programs'
// REPTRACE_SOCKET points, and decodes HelloRecord / EventRecord / DataRecord / StatsRecord
// streams exactly as the agent must (one AgentStream per hooked process connection).
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
#include <poll.h>
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
#include "tests/testing/process.h"

namespace reptrace::testing {

// What one hooked process sent on one connection to the agent.
struct AgentStream {
  bool has_hello = false;
  HelloRecord hello = {};
  std::vector<EventRecord> events;  // DataRecords included, as EventRecords (see above)
  size_t data_records = 0;          // how many of `events` came as DataRecords
  std::vector<StatsRecord> stats;
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
    for (auto& [fd, client] : clients_) close(fd);
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
    size_t stream;
    std::string buffer;
    std::map<uint64_t, EventRecord> opened;  // conn_id -> its open record
  };

  void Loop() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listener_, POLLIN, 0}};
      for (auto& [fd, client] : clients_) fds.push_back({fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          std::lock_guard<std::mutex> lock(mu_);
          streams_.emplace_back();
          clients_[fd] = Client{streams_.size() - 1, "", {}};
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        char buf[65536];
        const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        Client& client = clients_[fds[i].fd];
        if (n <= 0) {
          close(fds[i].fd);
          clients_.erase(fds[i].fd);
          continue;
        }
        client.buffer.append(buf, static_cast<size_t>(n));
        Decode(&client);
      }
    }
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

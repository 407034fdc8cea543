// Accepts the connections of hooked processes on the agent's Unix socket and feeds their
// records to a SpanBuilder, on one epoll loop thread with non-blocking sockets.
//
// Start() creates the socket's parent directory, removes a stale socket file, binds,
// and makes the socket connectable by any user (0666: e.g. nginx workers run as
// www-data). Each connection gets its own RecordDecoder; a malformed stream is logged,
// counted (records_malformed) and closed, and the agent carries on. When a hooked process
// disconnects, the SpanBuilder finishes its open spans. Every `tick` the loop also lets the
// SpanBuilder expire idle spans.
#ifndef REPTRACE_AGENT_HOOK_SERVER_H_
#define REPTRACE_AGENT_HOOK_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/counter_set.h"
#include "agent/record_decoder.h"
#include "agent/span_builder.h"

namespace reptrace {

class HookServer {
 public:
  // `builder` is used only from the loop thread once Start() succeeded.
  HookServer(std::string socket_path, SpanBuilder* builder, CounterSet* counters,
             absl::Duration tick = absl::Milliseconds(100));
  HookServer(const HookServer&) = delete;
  HookServer& operator=(const HookServer&) = delete;
  ~HookServer();  // Stop()

  absl::Status Start();
  // Stops the loop, closes every connection (finishing their spans) and removes the socket
  // file. Idempotent.
  void Stop();

  const std::string& socket_path() const { return socket_path_; }
  size_t connections() const { return open_connections_.load(); }

 private:
  struct Connection {
    int fd = -1;
    uint32_t pid = 0;  // from the hello
    RecordDecoder decoder;
    std::unordered_map<uint32_t, uint64_t> dropped_by_pid;  // latest StatsRecord values
  };

  void Loop();
  void Accept();
  void Read(uint64_t key);
  // Hands decoded records to the builder and counts them.
  void Dispatch(uint64_t key, Connection& conn, const std::vector<Record>& records);
  // Closes the connection; the builder finishes the process's open spans.
  void Close(uint64_t key);

  const std::string socket_path_;
  SpanBuilder* const builder_;
  CounterSet* const counters_;
  const absl::Duration tick_;
  bool socket_bound_ = false;  // the socket file is ours to remove
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> open_connections_{0};
  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  uint64_t next_key_ = kFirstConnectionKey;

  static constexpr uint64_t kListenKey = 0;
  static constexpr uint64_t kWakeKey = 1;
  static constexpr uint64_t kFirstConnectionKey = 16;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_HOOK_SERVER_H_

// Test helper: produces the records a hooked process would write, with consistent stream
// offsets, message-start flags, hashes and captures per connection.
#ifndef REPTRACE_AGENT_TESTING_HOOK_SCRIPT_H_
#define REPTRACE_AGENT_TESTING_HOOK_SCRIPT_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/event_record.h"
#include "common/shared_ring.h"

namespace reptrace::testing {

template <typename R>
std::string AsBytes(const R& record) {
  return std::string(reinterpret_cast<const char*>(&record), sizeof(record));
}

// A DataRecord's wire form: its header.size bytes.
inline std::string AsBytes(const DataRecord& record) {
  return std::string(reinterpret_cast<const char*>(&record), record.header.size);
}

inline void SetMappedIpv4(const char* ip, uint8_t (&out)[16]) {
  std::memset(out, 0, sizeof(out));
  out[10] = 0xff;
  out[11] = 0xff;
  inet_pton(AF_INET, ip, out + 12);
}

// Times are given as wall ns; records carry mono_ns = wall_ns - wall_minus_mono, and the
// hello declares that offset (0 unless asked: then mono and wall times are equal).
class HookScript {
 public:
  explicit HookScript(uint32_t pid = 4242, uint64_t wall_minus_mono = 0)
      : pid_(pid), wall_minus_mono_(wall_minus_mono) {}

  HelloRecord Hello(const std::string& service = "shop", const std::string& process = "shopd",
                    uint16_t version = kWireVersion) const {
    HelloRecord hello{};
    hello.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kHello),
                    static_cast<uint16_t>(sizeof(HelloRecord))};
    hello.version = version;
    hello.pid = pid_;
    hello.ppid = 1;
    hello.uid = 1000;
    hello.start_mono_ns = 1;
    hello.start_wall_ns = 1 + wall_minus_mono_;
    service.copy(hello.service, kNameBytes - 1);
    process.copy(hello.process, kNameBytes - 1);
    return hello;
  }

  // connect() to peer_ip:peer_port from 10.0.0.1:(40000 + conn); error != 0 means result -1.
  EventRecord Connect(uint64_t conn, uint32_t tid, uint64_t wall_ns, int error = 0,
                      const char* peer_ip = "10.0.0.2", uint16_t peer_port = 8080) {
    EventRecord e = Base(EventKind::kConnect, SocketRole::kClient, conn, tid, wall_ns);
    e.result = error == 0 ? 0 : -1;
    e.error = error;
    SetMappedIpv4("10.0.0.1", e.local_addr);
    e.local_port = static_cast<uint16_t>(40000 + conn);
    SetMappedIpv4(peer_ip, e.peer_addr);
    e.peer_port = peer_port;
    Remember(conn, e);
    return e;
  }

  // connect() of a UDP socket (protocol 17) to peer_ip:peer_port.
  EventRecord UdpConnect(uint64_t conn, uint32_t tid, uint64_t wall_ns,
                         const char* peer_ip = "10.0.0.53", uint16_t peer_port = 53) {
    EventRecord e = Connect(conn, tid, wall_ns, 0, peer_ip, peer_port);
    e.protocol = 17;
    Remember(conn, e);
    return e;
  }

  // One UDP datagram sent or received on connection `conn`, as the hook records it: a full
  // EventRecord, every datagram a message start with its capture and fingerprint.
  EventRecord Datagram(EventKind kind, uint64_t conn, uint32_t tid, uint64_t wall_ns,
                       absl::string_view data) {
    Conn& c = conns_[conn];
    EventRecord e = c.opened;
    e.kind = static_cast<uint8_t>(kind);
    e.tid = tid;
    e.wall_ns = wall_ns;
    e.mono_ns = wall_ns - wall_minus_mono_;
    e.result = static_cast<int64_t>(data.size());
    e.error = 0;
    uint64_t& counter = kind == EventKind::kSend ? c.sent : c.received;
    e.offset = counter;
    counter += data.size();
    e.flags = kFlagMessageStart;
    const size_t n = std::min(data.size(), kCaptureBytes);
    std::memcpy(e.capture, data.data(), n);
    e.capture_len = static_cast<uint8_t>(n);
    e.hash = Fingerprint64(data.data(), n);
    return e;
  }

  // accept() on 10.0.0.2:8080 of a connection from 10.0.0.1:(40000 + conn).
  EventRecord Accept(uint64_t conn, uint32_t tid, uint64_t wall_ns) {
    EventRecord e = Base(EventKind::kAccept, SocketRole::kServer, conn, tid, wall_ns);
    e.result = 100;  // the new fd
    SetMappedIpv4("10.0.0.2", e.local_addr);
    e.local_port = 8080;
    SetMappedIpv4("10.0.0.1", e.peer_addr);
    e.peer_port = static_cast<uint16_t>(40000 + conn);
    Remember(conn, e);
    return e;
  }

  DataRecord Send(uint64_t conn, uint32_t tid, uint64_t wall_ns, absl::string_view data) {
    return Data(EventKind::kSend, conn, tid, wall_ns, data);
  }
  DataRecord Recv(uint64_t conn, uint32_t tid, uint64_t wall_ns, absl::string_view data) {
    return Data(EventKind::kRecv, conn, tid, wall_ns, data);
  }
  // A failed send/recv (result -error).
  DataRecord Failed(EventKind kind, uint64_t conn, uint32_t tid, uint64_t wall_ns, int error) {
    DataRecord d = DataBase(kind, conn, tid, wall_ns);
    d.result = -error;
    d.offset = kind == EventKind::kSend ? conns_[conn].sent : conns_[conn].received;
    return d;
  }
  DataRecord Eof(uint64_t conn, uint32_t tid, uint64_t wall_ns) {
    DataRecord d = DataBase(EventKind::kRecv, conn, tid, wall_ns);
    d.result = 0;
    d.offset = conns_[conn].received;
    return d;
  }
  // The hook re-announcing connection `conn` (opened earlier by Connect/Accept, whose
  // record the agent may not have had), with its offsets so far.
  EventRecord Reannounce(uint64_t conn, uint32_t tid, uint64_t wall_ns) {
    const Conn& c = conns_[conn];
    EventRecord e = c.opened;
    e.flags = kFlagReannounce;
    e.tid = tid;
    e.wall_ns = wall_ns;
    e.mono_ns = wall_ns - wall_minus_mono_;
    e.offset = c.sent;
    e.result = static_cast<int64_t>(c.received);
    e.error = 0;
    return e;
  }
  EventRecord Close(uint64_t conn, uint32_t tid, uint64_t wall_ns) {
    EventRecord e = Base(EventKind::kClose, Role(conn), conn, tid, wall_ns);
    CopyAddresses(conn, &e);
    return e;
  }
  // In-band mode: what a frame header on connection `conn` said (common/event_record.h),
  // at the next offset of the event's direction (kSent: the send stream, else the receive
  // stream): published, as the hook does, before the DataRecord of that call.
  InbandRecord Inband(InbandEvent event, uint64_t conn, uint32_t tid, uint64_t trace_id,
                      uint64_t span_id) {
    InbandRecord r{};
    r.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kInband),
                static_cast<uint16_t>(sizeof(InbandRecord))};
    r.event = static_cast<uint8_t>(event);
    r.tid = tid;
    r.conn_id = conn;
    r.offset = event == InbandEvent::kSent ? conns_[conn].sent : conns_[conn].received;
    r.trace_id = trace_id;
    r.span_id = span_id;
    return r;
  }
  StatsRecord Stats(uint64_t recorded, uint64_t dropped, uint32_t pid = 0) const {
    StatsRecord s{};
    s.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kStats),
                static_cast<uint16_t>(sizeof(StatsRecord))};
    s.pid = pid == 0 ? pid_ : pid;
    s.events_recorded = recorded;
    s.events_dropped = dropped;
    return s;
  }

 private:
  struct Conn {
    EventRecord opened{};
    uint64_t sent = 0;
    uint64_t received = 0;
    int last_kind = 0;
    uint64_t message_start = 0;  // offset where the current message began
  };

  EventRecord Base(EventKind kind, SocketRole role, uint64_t conn, uint32_t tid,
                   uint64_t wall_ns) const {
    EventRecord e{};
    e.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent),
                static_cast<uint16_t>(sizeof(EventRecord))};
    e.kind = static_cast<uint8_t>(kind);
    e.role = static_cast<uint8_t>(role);
    e.pid = pid_;
    e.tid = tid;
    e.fd = static_cast<int32_t>(10 + conn);
    e.conn_id = conn;
    e.wall_ns = wall_ns;
    e.mono_ns = wall_ns - wall_minus_mono_;
    e.family = 4;
    return e;
  }

  DataRecord DataBase(EventKind kind, uint64_t conn, uint32_t tid, uint64_t wall_ns) const {
    DataRecord d{};
    d.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kData),
                static_cast<uint16_t>(kDataRecordBaseSize)};
    d.kind = static_cast<uint8_t>(kind);
    d.tid = tid;
    d.conn_id = conn;
    d.mono_ns = wall_ns - wall_minus_mono_;
    return d;
  }

  SocketRole Role(uint64_t conn) {
    return static_cast<SocketRole>(conns_[conn].opened.role);
  }
  void Remember(uint64_t conn, const EventRecord& e) { conns_[conn] = Conn{e, 0, 0, 0, 0}; }
  void CopyAddresses(uint64_t conn, EventRecord* e) {
    const EventRecord& o = conns_[conn].opened;
    std::memcpy(e->local_addr, o.local_addr, 16);
    std::memcpy(e->peer_addr, o.peer_addr, 16);
    e->local_port = o.local_port;
    e->peer_port = o.peer_port;
  }

  DataRecord Data(EventKind kind, uint64_t conn, uint32_t tid, uint64_t wall_ns,
                  absl::string_view data) {
    DataRecord d = DataBase(kind, conn, tid, wall_ns);
    Conn& c = conns_[conn];
    uint64_t& counter = kind == EventKind::kSend ? c.sent : c.received;
    d.offset = counter;
    d.result = static_cast<int64_t>(data.size());
    counter += data.size();
    if (c.last_kind != static_cast<int>(kind)) {
      d.flags = kFlagMessageStart;
      const size_t n = std::min(data.size(), kCaptureBytes);
      std::memcpy(d.capture, data.data(), n);
      d.capture_len = static_cast<uint8_t>(n);
      d.hash = 0;  // the capture holds every byte: the agent computes it, as from the hook
      d.header.size = static_cast<uint16_t>(DataRecordWireSize(d.flags, d.capture_len));
      c.message_start = d.offset;
    } else if (d.offset - c.message_start < kCaptureBytes) {
      // Like the hook: the bytes of this call that belong to the message's head.
      d.flags = kFlagHeadCapture;
      const size_t n =
          std::min(data.size(), kCaptureBytes - static_cast<size_t>(d.offset - c.message_start));
      std::memcpy(d.capture, data.data(), n);
      d.capture_len = static_cast<uint8_t>(n);
      d.header.size = static_cast<uint16_t>(DataRecordWireSize(d.flags, d.capture_len));
    }
    c.last_kind = static_cast<int>(kind);
    return d;
  }

  uint32_t pid_;
  uint64_t wall_minus_mono_;
  std::map<uint64_t, Conn> conns_;
};

// A hooked process's record ring (wire version 3): a memfd named `name`, formatted as a
// ring of `capacity` cells, sealed with `seals`, into which Push() writes as the hook's
// producers do. `bytes` (default RingBytes(capacity)) lets a test make a ring of the wrong
// size, `seals` one the agent must refuse.
class TestRing {
 public:
  explicit TestRing(uint32_t capacity = 64, const std::string& name = "reptrace-test-ring",
                    unsigned int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL,
                    size_t bytes = 0)
      : capacity_(capacity), bytes_(bytes != 0 ? bytes : RingBytes(capacity)) {
    fd_ = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(bytes_)) != 0) return;
    void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (memory == MAP_FAILED) return;
    header_ = static_cast<RingHeader*>(memory);
    FormatRing(header_, capacity, static_cast<uint32_t>(getpid()), /*zero_filled=*/true);
    if (seals != 0 && fcntl(fd_, F_ADD_SEALS, seals) != 0) return;
    ok_ = true;
  }
  TestRing(const TestRing&) = delete;
  TestRing& operator=(const TestRing&) = delete;
  ~TestRing() {
    if (header_ != nullptr) munmap(header_, bytes_);
    CloseFd();
  }

  bool ok() const { return ok_; }
  int fd() const { return fd_; }
  // The process's own descriptor, closed (as after the hook handed it over).
  void CloseFd() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  RingHeader* header() { return header_; }

  // Pushes one record's wire bytes as a producer does: claims cell `pos` when its sequence
  // is `pos` (compare-and-swap on enqueue_pos), writes, publishes `pos + 1`. A full ring
  // refuses the record and counts it in `dropped`.
  bool Push(const std::string& bytes) {
    RingCell* cells = RingCells(header_);
    uint64_t pos = header_->enqueue_pos.load(std::memory_order_relaxed);
    RingCell* cell;
    while (true) {
      cell = &cells[pos & (capacity_ - 1)];
      const uint64_t sequence = LoadSequence(*cell, pos & (capacity_ - 1));
      const int64_t diff = static_cast<int64_t>(sequence - pos);
      if (diff == 0) {
        if (header_->enqueue_pos.compare_exchange_weak(pos, pos + 1,
                                                       std::memory_order_relaxed)) {
          break;
        }
      } else if (diff < 0) {
        header_->dropped.fetch_add(1, std::memory_order_relaxed);
        return false;
      } else {
        pos = header_->enqueue_pos.load(std::memory_order_relaxed);
      }
    }
    std::memcpy(cell->bytes, bytes.data(), std::min(bytes.size(), kMaxRecordSize));
    StoreSequence(*cell, pos & (capacity_ - 1), pos + 1);
    return true;
  }
  template <typename R>
  bool Push(const R& record) {
    return Push(AsBytes(record));
  }

 private:
  const uint32_t capacity_;
  const size_t bytes_;
  int fd_ = -1;
  RingHeader* header_ = nullptr;
  bool ok_ = false;
};

// Sends `bytes` (a hello) on `socket` in one sendmsg with `fds` attached (SCM_RIGHTS on its
// first byte), as the hook sends its hello and ring. True if every byte went.
inline bool SendWithDescriptors(int socket, const std::string& bytes,
                                const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return sendmsg(socket, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

}  // namespace reptrace::testing

#endif  // REPTRACE_AGENT_TESTING_HOOK_SCRIPT_H_

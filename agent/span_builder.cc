#include "agent/span_builder.h"

#include <algorithm>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/protocol/protocol.h"
#include "common/endpoint.h"
#include "common/utf8.h"
#include "common/ids.h"

namespace reptrace {
namespace {

std::string ErrnoText(int error) {
  char buffer[256];
  // GNU strerror_r: returns a pointer to the message (maybe not `buffer`).
  return strerror_r(error, buffer, sizeof(buffer));
}

bool IsTransientError(int error) {
  return error == EAGAIN || error == EWOULDBLOCK || error == EINTR || error == EINPROGRESS ||
         error == EALREADY;
}

absl::string_view CaptureOf(const uint8_t* capture, uint8_t len, uint8_t flags) {
  if ((flags & (kFlagMessageStart | kFlagHeadCapture)) == 0) return {};
  return absl::string_view(reinterpret_cast<const char*>(capture), len);
}

// Adds `t`'s share of its message's head to `head`, whose message began at stream offset
// `message_offset`: only if it continues the head without a gap (a lost record leaves the
// head as it was).
void GrowHead(std::string* head, uint64_t message_offset, uint64_t offset,
              absl::string_view capture) {
  if (capture.empty() || offset != message_offset + head->size()) return;
  const size_t room = kCaptureBytes - std::min(head->size(), kCaptureBytes);
  head->append(capture.data(), std::min(room, capture.size()));
}

// Sets a head to a message's first capture. Cleared and appended to: assign is libstdc++'s
// general replace, twice the instructions.
void SetHead(std::string* head, absl::string_view capture) {
  head->clear();
  head->append(capture.data(), capture.size());
}

}  // namespace

SpanBuilder::SpanBuilder(std::string node, Sink sink, absl::Duration idle_timeout)
    : node_(std::move(node)), sink_(std::move(sink)), idle_timeout_(idle_timeout) {}

void SpanBuilder::OnHello(uint64_t process_key, const HelloRecord& hello, Workload workload) {
  auto [it, is_new] = processes_.try_emplace(process_key);
  Process& process = it->second;
  if (is_new && workload.in_container()) {
    process.workload = std::make_unique<ProcessWorkload>();
    process.workload->workload = std::move(workload);
    // Asked now, not at the first span's end: a pod not yet listed is then listed while
    // the process starts up, and even its first spans are usually named.
    NameWorkload(*process.workload);
  }
  // Spans view their process's names rather than copy them (a copy per span); a second
  // hello on one key, which the hook server never passes on, is left to pay for that.
  if (!is_new) KeepNamesOfOpenSpans(process);
  // Names and paths come from the traced program: anything but UTF-8 would make the
  // controller refuse the span (protobuf strings must be UTF-8).
  process.service =
      ToValidUtf8(absl::string_view(hello.service, strnlen(hello.service, kNameBytes)));
  process.process =
      ToValidUtf8(absl::string_view(hello.process, strnlen(hello.process, kNameBytes)));
  process.pid = hello.pid;
  process.wall_minus_mono = hello.start_wall_ns - hello.start_mono_ns;
  for (auto& [conn_id, conn] : process.connections) EncodeConnectionFields(process, conn);
  if (hello.cause_pid != 0) {
    // The main thread continues the forking (or exec'ing) thread: its tid is the pid.
    const uint64_t context = ThreadContext(hello.cause_pid, hello.cause_tid, process_key);
    if (context != 0) process.thread_server_span[hello.pid] = context;
  }
  key_by_pid_[hello.pid] = process_key;
}

void SpanBuilder::KeepNamesOfOpenSpans(Process& process) {
  auto keep = [](OpenSpan& open) {
    open.service = std::string(open.span.service);
    open.process = std::string(open.span.process);
    open.span.service = open.service;
    open.span.process = open.process;
    // Its connection's bytes are about to be encoded again, with the new names.
    open.span.connection_wire = nullptr;
  };
  for (auto& [conn_id, conn] : process.connections) {
    if (conn.open) keep(*conn.open);
    for (auto& [id, open] : conn.dns_pending) keep(*open);
  }
}

uint64_t SpanBuilder::ThreadContext(uint32_t pid, uint32_t tid, uint64_t self_key) const {
  const std::unordered_map<uint32_t, uint64_t>* threads = nullptr;
  auto k = key_by_pid_.find(pid);
  if (k != key_by_pid_.end() && k->second != self_key) {
    auto p = processes_.find(k->second);
    if (p != processes_.end()) threads = &p->second.thread_server_span;
  }
  if (threads == nullptr) {
    auto e = ended_.find(pid);
    if (e != ended_.end()) threads = &e->second.thread_server_span;
  }
  if (threads == nullptr) return 0;
  auto t = threads->find(tid);
  return t == threads->end() ? 0 : t->second;
}

void SpanBuilder::OnEvent(uint64_t process_key, const EventRecord& event, absl::Time now) {
  auto p = processes_.find(process_key);
  if (p == processes_.end()) return;
  Process& process = p->second;
  const auto kind = static_cast<EventKind>(event.kind);
  switch (kind) {
    case EventKind::kThreadStart: {
      // A new thread inherits its creator's (fd carries the creator's tid) causal context.
      auto parent = process.thread_server_span.find(static_cast<uint32_t>(event.fd));
      if (parent != process.thread_server_span.end()) {
        process.thread_server_span[event.tid] = parent->second;
      } else {
        process.thread_server_span.erase(event.tid);
      }
      return;
    }
    case EventKind::kConnect:
    case EventKind::kAccept:
      OnOpen(process, event, now);
      return;
    case EventKind::kClose: {
      auto c = process.connections.find(event.conn_id);
      if (c == process.connections.end()) return;
      FinishAllOf(c->second);
      process.connections.erase(c);
      return;
    }
    case EventKind::kSend:
    case EventKind::kRecv: {  // a UDP datagram
      Transfer t;
      t.kind = kind;
      t.tid = event.tid;
      t.conn_id = event.conn_id;
      t.wall_ns = event.mono_ns + process.wall_minus_mono;
      t.offset = event.offset;
      t.result = event.result < 0 ? -1 : event.result;
      t.error = event.error;
      t.message_start = (event.flags & kFlagMessageStart) != 0;
      t.hash = event.hash;
      t.capture = CaptureOf(event.capture, event.capture_len, event.flags);
      OnTransfer(process, t, now);
      return;
    }
  }
}

void SpanBuilder::OnData(uint64_t process_key, const DataRecord& data, absl::Time now) {
  auto p = processes_.find(process_key);
  if (p == processes_.end()) return;
  Process& process = p->second;
  Transfer t;
  t.kind = static_cast<EventKind>(data.kind);
  t.tid = data.tid;
  t.conn_id = data.conn_id;
  t.wall_ns = data.mono_ns + process.wall_minus_mono;
  t.offset = data.offset;
  t.result = data.result < 0 ? -1 : data.result;
  t.error = data.result < 0 ? static_cast<int>(-data.result) : 0;
  t.message_start = (data.flags & kFlagMessageStart) != 0;
  // Left to us by the hook: computed once the span has its whole head (Emit).
  t.hash_from_capture = DataRecordHashFromCapture(data);
  t.hash = t.hash_from_capture ? 0 : data.hash;
  t.capture = CaptureOf(data.capture, data.capture_len, data.flags);
  OnTransfer(process, t, now);
}

void SpanBuilder::OnInband(uint64_t process_key, const InbandRecord& inband,
                           absl::Time /*now*/) {
  auto p = processes_.find(process_key);
  if (p == processes_.end()) return;
  Process& process = p->second;
  auto c = process.connections.find(inband.conn_id);
  if (c == process.connections.end()) {
    ++events_without_connection_;  // as OnTransfer
    return;
  }
  Connection& conn = c->second;
  switch (static_cast<InbandEvent>(inband.event)) {
    case InbandEvent::kPeerNotHooked:
      ++inband_peers_not_hooked_;
      return;
    case InbandEvent::kSent:
      if (conn.role != SocketRole::kClient) return;
      break;
    case InbandEvent::kReceived:
      if (conn.role != SocketRole::kServer) return;
      break;
    default:
      return;  // the decoder lets no other through
  }
  if (inband.span_id == 0) return;
  // A span that started there already, or later, is past it: no span can take it.
  if (conn.open && inband.offset <= conn.open->span.request_offset) return;
  std::vector<PendingInband>& pending = conn.inband;
  auto at_offset = [&] {
    return std::lower_bound(
        pending.begin(), pending.end(), inband.offset,
        [](const PendingInband& p, uint64_t offset) { return p.offset < offset; });
  };
  auto it = at_offset();
  const PendingInband entry{inband.offset, inband.trace_id, inband.span_id};
  if (it != pending.end() && it->offset == inband.offset) {
    *it = entry;
    return;
  }
  if (pending.size() >= kMaxPendingInband) {
    if (it == pending.begin()) return;  // it is the lowest: it goes
    pending.erase(pending.begin());
    it = at_offset();
  }
  pending.insert(it, entry);
}

void SpanBuilder::ApplyInband(Connection& conn, uint64_t offset, OpenSpan& open) {
  std::vector<PendingInband>& pending = conn.inband;
  auto it = pending.begin();
  while (it != pending.end() && it->offset < offset) ++it;
  const bool found = it != pending.end() && it->offset == offset;
  const PendingInband taken = found ? *it : PendingInband{};
  pending.erase(pending.begin(), found ? it + 1 : it);
  if (!found) return;
  SpanRecord& span = open.span;
  if (conn.role == SocketRole::kClient) {
    span.span_id = taken.span_id;
  } else {
    span.parent_span_id = taken.span_id;
  }
  FormatIdTo(taken.trace_id, open.inband_trace_id);
  span.SetAttribute("inband.trace_id",
                    absl::string_view(open.inband_trace_id, sizeof(open.inband_trace_id)));
}

void SpanBuilder::OnTransfer(Process& process, const Transfer& t, absl::Time now) {
  auto c = process.connections.find(t.conn_id);
  if (c == process.connections.end()) {
    // Its open record never reached us: the hook re-announces a connection before its
    // data whenever the open record may have been lost, so this is a record that raced
    // with the loss of an earlier agent connection, or one from a confused hook.
    ++events_without_connection_;
    return;
  }
  Connection& conn = c->second;
  if (t.result > 0) {
    OnBytes(process, conn, t, now);
  } else if (t.result == 0 && t.kind == EventKind::kRecv) {
    if (conn.open) FinishSpan(conn);  // end of stream
  } else if (t.result < 0) {
    OnFailedCall(process, conn, t);
  }
}

void SpanBuilder::OnOpen(Process& process, const EventRecord& event, absl::Time now) {
  auto existing = process.connections.find(event.conn_id);
  const bool reannounced = (event.flags & kFlagReannounce) != 0;
  if (reannounced && existing != process.connections.end()) {
    return;  // announced twice (the hook could not know the first one arrived): the same
  }
  const auto kind = static_cast<EventKind>(event.kind);
  if (existing != process.connections.end()) {
    Connection& was = existing->second;
    if (kind == EventKind::kConnect && event.result < 0 && !IsTransientError(event.error) &&
        !was.exchanged && was.role == SocketRole::kClient) {
      // A non-blocking connect that was in progress failed (the program polled connect()
      // again or read SO_ERROR): the span runs from the connect() call to the failure.
      was.exchanged = true;
      SpanRecord span;
      InitSpan(process, was, event.conn_id, was.connect_tid, was.connect_wall_ns, &span);
      span.parent_span_id =
          ClientParent(process, was, was.connect_tid, /*first_exchange=*/true);
      span.end_ns = static_cast<int64_t>(event.mono_ns + process.wall_minus_mono);
      span.status = v1::SPAN_STATUS_ERROR;
      const std::string error_text = ErrnoText(event.error);
      span.status_message = error_text;
      LabelWorkload(process.workload.get(), &span);
      ++spans_built_;
      sink_(span);
      process.connections.erase(existing);
      return;
    }
    FinishAllOf(was);
    process.connections.erase(existing);
  }
  Connection conn;
  conn.role = kind == EventKind::kConnect ? SocketRole::kClient : SocketRole::kServer;
  conn.udp = event.protocol == IPPROTO_UDP;
  conn.connect_wall_ns = event.mono_ns + process.wall_minus_mono;
  conn.connect_tid = event.tid;
  if (event.family == kFamilyUnix) {
    conn.unix_name = ToValidUtf8(absl::string_view(
        reinterpret_cast<const char*>(event.capture),
        std::min<size_t>(event.capture_len, kCaptureBytes)));
    conn.fallback_name = absl::StrCat("unix:", conn.unix_name);
  } else {
    v1::Endpoint local;
    v1::Endpoint peer;
    EndpointFromRecord(event.local_addr, event.local_port, &local);
    EndpointFromRecord(event.peer_addr, event.peer_port, &peer);
    conn.local.SetIp(local.ip());
    conn.local.port = local.port();
    conn.peer.SetIp(peer.ip());
    conn.peer.port = peer.port();
    conn.fallback_name = FormatEndpoint(conn.role == SocketRole::kClient ? peer : local);
  }
  EncodeConnectionFields(process, conn);
  conn.last_activity = now;
  if (reannounced) {
    // Opened before this agent connection saw it: the parent of its first exchange is
    // unknown, and it has had exchanges if bytes moved (offset: sent, result: received).
    conn.exchanged = event.offset != 0 || event.result > 0;
    process.connections.emplace(event.conn_id, std::move(conn));
    return;
  }
  if (conn.role == SocketRole::kClient) {
    auto t = process.thread_server_span.find(event.tid);
    if (t != process.thread_server_span.end()) conn.connect_parent = t->second;
    if (event.result < 0 && !IsTransientError(event.error)) {
      EmitFailedClientSpan(process, conn, event.conn_id, event.tid,
                           event.mono_ns + process.wall_minus_mono, event.error,
                           ClientParent(process, conn, event.tid, /*first_exchange=*/true));
      return;  // a failed connect leaves no connection behind
    }
  }
  process.connections.emplace(event.conn_id, std::move(conn));
}

void SpanBuilder::OnBytes(Process& process, Connection& conn, const Transfer& t,
                          absl::Time now) {
  const bool is_send = t.kind == EventKind::kSend;
  const uint64_t end_offset = t.offset + static_cast<uint64_t>(t.result);
  const bool is_request = (conn.role == SocketRole::kClient) == is_send;
  conn.last_activity = now;
  if (conn.udp && OnDnsDatagram(process, conn, t, is_request)) return;
  if (is_request) {
    if (conn.open && conn.open->in_response) FinishSpan(conn);
    if (!conn.open) conn.open = StartSpan(process, conn, t);
    OpenSpan& open = *conn.open;
    if (!t.message_start) {
      GrowHead(&open.request_head, open.span.request_offset, t.offset, t.capture);
    }
    open.request_end = std::max(open.request_end, end_offset);
    open.last_request_wall_ns = t.wall_ns;
    if (conn.role == SocketRole::kServer) {
      process.thread_server_span[t.tid] = open.span.span_id;
    }
    return;
  }
  if (!conn.open) return;  // response bytes with no request (a server greeting, ...)
  OpenSpan& open = *conn.open;
  SpanRecord& span = open.span;
  if (!open.in_response) {
    open.in_response = true;
    span.response_offset = t.offset;
    open.response_end = t.offset;
    if (t.message_start) {
      span.response_hash = t.hash;
      open.response_hash_from_head = t.hash_from_capture;
      SetHead(&open.response_head, t.capture);
    }
  } else if (!t.message_start) {
    GrowHead(&open.response_head, span.response_offset, t.offset, t.capture);
  }
  open.response_end = std::max(open.response_end, end_offset);
  open.last_response_wall_ns = t.wall_ns;
}

void SpanBuilder::OnFailedCall(Process& process, Connection& conn, const Transfer& t) {
  if (IsTransientError(t.error)) return;
  if (conn.open) {
    OpenSpan& open = *conn.open;
    if (!open.in_response) {
      open.span.status = v1::SPAN_STATUS_ERROR;
      open.status_message = ErrnoText(t.error);
      open.span.status_message = open.status_message;
    }
    FinishSpan(conn);
    return;
  }
  if (conn.role == SocketRole::kClient && !conn.exchanged) {
    // A non-blocking connect that failed shows up at the first send or receive.
    conn.exchanged = true;
    EmitFailedClientSpan(process, conn, t.conn_id, t.tid, t.wall_ns, t.error,
                         ClientParent(process, conn, t.tid, /*first_exchange=*/true));
  }
}

uint64_t SpanBuilder::ClientParent(const Process& process, const Connection& conn,
                                   uint32_t tid, bool first_exchange) const {
  // The first request on a connection belongs to the request that was being handled when
  // the connection was opened: an event loop connects in one callback and writes in a
  // later one, and may read other requests in between. Later requests on a reused
  // (keep-alive, pooled) connection belong to whatever the sending thread handles now.
  if (first_exchange && conn.connect_parent != 0) return conn.connect_parent;
  auto t = process.thread_server_span.find(tid);
  if (t != process.thread_server_span.end()) return t->second;
  return conn.connect_parent;
}

void SpanBuilder::SetConnectionFields(const Process& process, const Connection& conn,
                                      SpanRecord* span) const {
  span->kind = conn.role == SocketRole::kClient ? v1::SPAN_KIND_CLIENT : v1::SPAN_KIND_SERVER;
  span->service = process.service;
  span->process = process.process;
  span->pid = process.pid;
  span->node = node_;
  // Set even when empty (a Unix-domain connection's), as the message's always were.
  span->local = conn.local;
  span->local.set = true;
  span->peer = conn.peer;
  span->peer.set = true;
}

void SpanBuilder::EncodeConnectionFields(const Process& process, Connection& conn) const {
  SpanRecord fields;
  SetConnectionFields(process, conn, &fields);
  conn.wire = EncodeConnectionWire(fields);
}

void SpanBuilder::InitSpan(const Process& process, const Connection& conn, uint64_t conn_id,
                           uint32_t tid, uint64_t start_wall_ns, SpanRecord* span) const {
  span->span_id = NewRandomId();
  SetConnectionFields(process, conn, span);
  span->connection_wire = &conn.wire;
  span->tid = tid;
  span->start_ns = static_cast<int64_t>(start_wall_ns);
  span->connection_id = conn_id;
  span->name = conn.fallback_name;
  if (!conn.unix_name.empty()) span->SetAttribute("net.unix.path", conn.unix_name);
}

void SpanBuilder::OpenSpan::Reset() {
  // Copied from an empty record, not moved from a temporary: the same result, and GCC 12
  // warns (wrongly) that moving an InlinedVector's inline storage reads its heap pointer.
  static const SpanRecord kEmpty;
  span = kEmpty;
  service.clear();
  process.clear();
  status_message.clear();
  in_response = false;
  request_end = 0;
  response_end = 0;
  last_request_wall_ns = 0;
  last_response_wall_ns = 0;
  request_head.clear();
  response_head.clear();
  request_hash_from_head = false;
  response_hash_from_head = false;
  workload = nullptr;
}

void SpanBuilder::Recycle(std::unique_ptr<OpenSpan> open) {
  if (spare_spans_.size() >= kMaxSpareSpans) return;
  open->Reset();
  spare_spans_.push_back(std::move(open));
}

std::unique_ptr<SpanBuilder::OpenSpan> SpanBuilder::StartSpan(Process& process,
                                                              Connection& conn,
                                                              const Transfer& t) {
  const bool first_exchange = !conn.exchanged;
  conn.exchanged = true;
  std::unique_ptr<OpenSpan> open;
  if (spare_spans_.empty()) {
    open = std::make_unique<OpenSpan>();
  } else {
    open = std::move(spare_spans_.back());
    spare_spans_.pop_back();
  }
  open->workload = process.workload.get();
  SpanRecord& span = open->span;
  InitSpan(process, conn, t.conn_id, t.tid, t.wall_ns, &span);
  if (conn.role == SocketRole::kClient) {
    span.parent_span_id = ClientParent(process, conn, t.tid, first_exchange);
  }
  span.request_offset = t.offset;
  if (!conn.inband.empty()) ApplyInband(conn, t.offset, *open);
  open->request_end = t.offset;
  if (t.message_start) {
    span.request_hash = t.hash;
    open->request_hash_from_head = t.hash_from_capture;
    SetHead(&open->request_head, t.capture);
  }
  return open;
}

void SpanBuilder::Describe(const std::optional<protocol::Request>& parsed_request,
                           const std::optional<protocol::Response>& parsed_response,
                           OpenSpan& open) {
  SpanRecord& span = open.span;
  if (!parsed_request) return;  // unknown protocol: the span keeps its endpoint name
  const protocol::Request& request = *parsed_request;
  span.name = request.name;
  for (const protocol::Attribute& a : request.attributes) span.SetAttribute(a.key, a.value);
  if (!open.in_response) {
    // HTTP, Redis and DNS answer every request: none came (the connection closed, the
    // span was cut short, a DNS query timed out). Other protocols have requests without
    // answers.
    if ((request.protocol == protocol::Protocol::kHttp ||
         request.protocol == protocol::Protocol::kRedis ||
         request.protocol == protocol::Protocol::kDns) &&
        span.status == v1::SPAN_STATUS_UNSET) {
      span.status = v1::SPAN_STATUS_ERROR;
      span.status_message = "no response";
    }
    return;
  }
  if (!parsed_response) return;
  const protocol::Response& response = *parsed_response;
  for (const protocol::Attribute& a : response.attributes) span.SetAttribute(a.key, a.value);
  if (response.error && span.status == v1::SPAN_STATUS_UNSET) {
    span.status = v1::SPAN_STATUS_ERROR;
    span.status_message = response.status_message;
  }
}

void SpanBuilder::FinishSpan(Connection& conn) {
  Emit(conn, *conn.open);
  Recycle(std::move(conn.open));
}

void SpanBuilder::FinishAllOf(Connection& conn) {
  if (conn.open) FinishSpan(conn);
  for (auto& [id, open] : conn.dns_pending) {
    Emit(conn, *open);
    Recycle(std::move(open));
  }
  conn.dns_pending.clear();
}

bool SpanBuilder::OnDnsDatagram(Process& process, Connection& conn, const Transfer& t,
                                bool is_request) {
  const uint64_t end_offset = t.offset + static_cast<uint64_t>(t.result);
  if (is_request) {
    std::optional<protocol::Request> query =
        protocol::ParseDnsRequest(t.capture, protocol::Transport::kUdp);
    if (!query || !query->exchange_id) return false;
    const uint16_t id = *query->exchange_id;
    // A query sent again under the same id (a retry) ends the earlier one, unanswered.
    if (auto again = conn.dns_pending.find(id); again != conn.dns_pending.end()) {
      Emit(conn, *again->second);
      Recycle(std::move(again->second));
      conn.dns_pending.erase(again);
    }
    if (conn.dns_pending.size() >= kMaxPendingDnsQueries) {
      Emit(conn, *conn.dns_pending.begin()->second);
      Recycle(std::move(conn.dns_pending.begin()->second));
      conn.dns_pending.erase(conn.dns_pending.begin());
    }
    std::unique_ptr<OpenSpan> open = StartSpan(process, conn, t);
    if (conn.role == SocketRole::kServer) {
      process.thread_server_span[t.tid] = open->span.span_id;
    }
    open->request_end = end_offset;
    open->last_request_wall_ns = t.wall_ns;
    conn.dns_pending.emplace(id, std::move(open));
    return true;
  }
  std::optional<protocol::Response> answer =
      protocol::ParseDnsResponse(t.capture, protocol::Transport::kUdp);
  if (!answer || !answer->exchange_id) return false;
  auto it = conn.dns_pending.find(*answer->exchange_id);
  if (it == conn.dns_pending.end()) return true;  // the answer to a query we did not see
  OpenSpan& open = *it->second;
  open.in_response = true;
  open.span.response_offset = t.offset;
  open.span.response_hash = t.hash;
  open.response_end = end_offset;
  SetHead(&open.response_head, t.capture);
  open.last_response_wall_ns = t.wall_ns;
  Emit(conn, open);
  Recycle(std::move(it->second));
  conn.dns_pending.erase(it);
  return true;
}

void SpanBuilder::Emit(const Connection& conn, OpenSpan& open) {
  // What the parsers make of the heads lives here, until the sink has the span that views
  // it: initialized by the parsers' results themselves, it is never moved (a move copies
  // every short string in it).
  const protocol::Transport transport =
      conn.udp ? protocol::Transport::kUdp : protocol::Transport::kTcp;
  const uint32_t server_port =
      conn.role == SocketRole::kClient ? conn.peer.port : conn.local.port;
  const std::optional<protocol::Request> request =
      protocol::ParseRequest(open.request_head, transport, static_cast<uint16_t>(server_port));
  const std::optional<protocol::Response> response =
      request && open.in_response
          ? protocol::ParseResponse(request->protocol, open.response_head, transport)
          : std::nullopt;
  Describe(request, response, open);
  SpanRecord& span = open.span;
  if (open.request_hash_from_head && !open.request_head.empty()) {
    span.request_hash = Fingerprint64(open.request_head.data(), open.request_head.size());
  }
  if (open.response_hash_from_head && !open.response_head.empty()) {
    span.response_hash = Fingerprint64(open.response_head.data(), open.response_head.size());
  }
  span.request_bytes = open.request_end - span.request_offset;
  if (open.in_response) {
    span.response_bytes = open.response_end - span.response_offset;
    span.end_ns = static_cast<int64_t>(open.last_response_wall_ns);
  } else {
    span.end_ns = static_cast<int64_t>(open.last_request_wall_ns);
  }
  if (span.status == v1::SPAN_STATUS_UNSET) span.status = v1::SPAN_STATUS_OK;
  LabelWorkload(open.workload, &span);
  ++spans_built_;
  sink_(span);
}

void SpanBuilder::LabelWorkload(ProcessWorkload* workload, SpanRecord* span) const {
  if (workload == nullptr) return;
  NameWorkload(*workload);
  AddWorkloadAttributes(workload->workload, span);
}

void SpanBuilder::NameWorkload(ProcessWorkload& workload) const {
  if (!workload.named) workload.named = !namer_ || namer_(&workload.workload);
}

void SpanBuilder::EmitFailedClientSpan(Process& process, const Connection& conn,
                                       uint64_t conn_id, uint32_t tid, uint64_t wall_ns,
                                       int error, uint64_t parent) {
  SpanRecord span;
  InitSpan(process, conn, conn_id, tid, wall_ns, &span);
  span.parent_span_id = parent;
  span.end_ns = static_cast<int64_t>(wall_ns);
  span.status = v1::SPAN_STATUS_ERROR;
  const std::string error_text = ErrnoText(error);
  span.status_message = error_text;
  LabelWorkload(process.workload.get(), &span);
  ++spans_built_;
  sink_(span);
}

void SpanBuilder::OnProcessGone(uint64_t process_key) {
  auto p = processes_.find(process_key);
  if (p == processes_.end()) return;
  Process& process = p->second;
  for (auto& [conn_id, conn] : process.connections) FinishAllOf(conn);
  auto k = key_by_pid_.find(process.pid);
  if (k != key_by_pid_.end() && k->second == process_key) key_by_pid_.erase(k);
  // An exec'd successor (same pid) or a late fork child may still ask for these.
  if (!process.thread_server_span.empty() &&
      (ended_.size() < kMaxEndedProcesses || ended_.count(process.pid) > 0)) {
    ended_[process.pid] = EndedProcess{std::move(process.thread_server_span)};
  }
  processes_.erase(p);
}

void SpanBuilder::ExpireIdle(absl::Time now) {
  for (auto e = ended_.begin(); e != ended_.end();) {
    if (e->second.seen_at == absl::InfinitePast()) e->second.seen_at = now;
    if (now - e->second.seen_at >= kEndedProcessMemory) {
      e = ended_.erase(e);
    } else {
      ++e;
    }
  }
  for (auto& [key, process] : processes_) {
    for (auto& [conn_id, conn] : process.connections) {
      if (now - conn.last_activity < idle_timeout_) continue;
      if (conn.open && conn.open->in_response) FinishSpan(conn);
      // DNS queries still unanswered on a socket quiet that long have timed out.
      for (auto& [id, open] : conn.dns_pending) {
        Emit(conn, *open);
        Recycle(std::move(open));
      }
      conn.dns_pending.clear();
    }
  }
}

void SpanBuilder::FinishAll() {
  for (auto& [key, process] : processes_) {
    for (auto& [conn_id, conn] : process.connections) FinishAllOf(conn);
  }
}

size_t SpanBuilder::pending_inband() const {
  size_t n = 0;
  for (const auto& [key, process] : processes_) {
    for (const auto& [conn_id, conn] : process.connections) n += conn.inband.size();
  }
  return n;
}

size_t SpanBuilder::open_spans() const {
  size_t n = 0;
  for (const auto& [key, process] : processes_) {
    for (const auto& [conn_id, conn] : process.connections) {
      n += (conn.open ? 1 : 0) + conn.dns_pending.size();
    }
  }
  return n;
}

}  // namespace reptrace

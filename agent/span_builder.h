// Turns the socket events of hooked processes into spans: one span per request/response
// exchange on one connection (see ARCHITECTURE.md, "From events to traces"). Pure: no I/O;
// time comes in as `now` arguments. Not thread-safe: call it from one thread (HookServer's
// loop); the sink runs on that thread.
//
// Per connection (key: process key + conn_id), the role and both endpoints come from its
// connect/accept record (or the hook's re-announcement of it, kFlagReannounce): data of a
// connection whose open record was not seen is counted (events_without_connection) and
// otherwise ignored. Times: records carry CLOCK_MONOTONIC; the process's hello gives the
// offset to wall time. The request
// direction is send for a client and recv for a server. A span starts at the first
// request-direction bytes, moves to its response phase at the first response-direction
// bytes, and ends when request-direction bytes come again (keep-alive: that starts the next
// span), on end of stream, close, process disconnect, or after `idle_timeout` in the
// response phase without events.
//
// Parents inside a process (thread causality): per thread, the server span whose request
// bytes were read last on it. A client span's parent is the sending thread's such span when
// the span starts, else the one the connecting thread had when it connected.
//
// Across fork and exec: a process's hello names the thread its main thread continues (the
// forking thread of the parent, or the thread that exec'd it), and the main thread starts
// with that thread's context. The contexts of an ended process are kept for
// `kEndedProcessMemory`, since an exec'd program says hello only once it traces something.
//
// A Unix-domain connection (kFamilyUnix) has no addresses: its spans carry the socket's
// name in the attribute net.unix.path and, for unknown protocols, are named "unix:NAME".
//
// Names: the first bytes of the request and of the response, put together from every call
// that carried some (kFlagHeadCapture), are parsed when the span ends (agent/protocol):
// HTTP/1.x ("GET /path", http.request.method, url.path, http.response.status_code; 5xx is
// an error), Redis ("GET", db.operation; an error reply is an error), PostgreSQL ("SELECT
// items", db.operation, db.sql.table; an ErrorResponse is an error), DNS ("DNS A name",
// dns.rcode; SERVFAIL, REFUSED are errors). DNS over UDP pairs each query with its answer
// by DNS id (a resolver sends A and AAAA at once on one socket); a query unanswered when
// the socket has been quiet for the idle timeout has timed out. An HTTP, Redis or DNS
// request that got no response at all is an error. Otherwise the name is the peer endpoint
// (client) or local endpoint (server). A failed connect (other than
// EINPROGRESS) is a client span with status ERROR and the strerror text.
//
// In-band mode (InbandRecord, common/event_record.h; the hook frames requests on opted-in
// ports): the hook reports what it put into or found in a frame header, before the data
// record of the same call. Per connection, up to kMaxPendingInband such records wait for
// the span that starts at their offset (a payload offset, as a span's request_offset),
// kept by offset (a newer one for the same offset replaces the older; when the list is
// full the lowest offset goes). When a span starts at request offset o, the record at
// exactly o is taken, and those below o are dropped (records for requests inside an
// earlier span, e.g. pipelined requests read in one call: a span covers the whole run).
//   - kSent, on a client connection: the client span gets the record's span_id as its
//     own id (instead of a random one): the server's hook names it as its parent. Its
//     parent is still decided by thread causality.
//   - kReceived, on a server connection: the server span gets the record's span_id as
//     its parent_span_id, a cross-process parent decided exactly (the controller never
//     re-parents such a span).
//   - kPeerNotHooked: counted (inband_peers_not_hooked); the spans are unchanged.
// A span whose id or parent came in-band carries the attribute inband.trace_id: the
// record's trace_id as 16 lowercase hex digits. A kSent record on a server connection, a
// kReceived one on a client connection, or one for an offset where the connection's open
// span already started (or before it) is ignored. A record of a connection this builder
// does not know is counted in events_without_connection, like data records.
#ifndef REPTRACE_AGENT_SPAN_BUILDER_H_
#define REPTRACE_AGENT_SPAN_BUILDER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/time/time.h"
#include "agent/protocol/protocol.h"
#include "agent/span_record.h"
#include "agent/span_wire.h"
#include "agent/workload.h"
#include "common/event_record.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

class SpanBuilder {
 public:
  // The span and the strings it views are the builder's: valid during the call only.
  using Sink = std::function<void(const SpanRecord& span)>;

  // `node` is copied into every span; `sink` receives each finished span.
  SpanBuilder(std::string node, Sink sink, absl::Duration idle_timeout = absl::Seconds(2));
  SpanBuilder(const SpanBuilder&) = delete;
  SpanBuilder& operator=(const SpanBuilder&) = delete;

  // A hooked process connected (`process_key` names its hook connection, unique within
  // the agent). Events of a key with no hello are ignored. `workload`: where the process
  // runs (from its cgroup, agent/workload.h), which every span of the process carries;
  // a later hello on the same key keeps the first one's.
  void OnHello(uint64_t process_key, const HelloRecord& hello, Workload workload = {});
  // Names what the cgroups leave unnamed (pod and container names): called at the hello
  // of a process in a pod and then when each of its spans ends, until it says the
  // workload is named (PodDirectory::Name).
  // Without one, spans carry what the cgroup gave.
  using WorkloadNamer = std::function<bool(Workload* workload)>;
  void SetWorkloadNamer(WorkloadNamer namer) { namer_ = std::move(namer); }
  // `now` is the agent's clock when the record arrived (used for the idle timeout).
  void OnEvent(uint64_t process_key, const EventRecord& event, absl::Time now);
  void OnData(uint64_t process_key, const DataRecord& data, absl::Time now);
  // What an in-band frame header said (see above). `now` as for OnEvent.
  void OnInband(uint64_t process_key, const InbandRecord& inband, absl::Time now);
  // The hook connection ended: finishes the process's open spans and forgets it.
  void OnProcessGone(uint64_t process_key);
  // Finishes the spans that have been in their response phase, without events, for at
  // least the idle timeout.
  void ExpireIdle(absl::Time now);
  // Finishes every open span of every process (agent shutdown).
  void FinishAll();

  size_t open_spans() const;
  // Ended processes whose thread contexts are still kept (see above).
  size_t remembered_processes() const { return ended_.size(); }

  static constexpr absl::Duration kEndedProcessMemory = absl::Seconds(30);
  static constexpr size_t kMaxEndedProcesses = 16384;
  // DNS queries waiting for an answer on one socket; beyond it the oldest is finished.
  static constexpr size_t kMaxPendingDnsQueries = 64;
  // In-band records waiting, on one connection, for the span that starts at their offset.
  static constexpr size_t kMaxPendingInband = 8;
  uint64_t spans_built() const { return spans_built_; }
  // Send/receive records of a connection this builder does not know (its open record was
  // lost and not re-announced): ignored, and counted here.
  uint64_t events_without_connection() const { return events_without_connection_; }
  // kPeerNotHooked records: a client framed, and its server answered unframed.
  uint64_t inband_peers_not_hooked() const { return inband_peers_not_hooked_; }
  // In-band records waiting for their span, over every connection (for tests).
  size_t pending_inband() const;

 private:
  // One send or receive, from a DataRecord or a UDP EventRecord.
  struct Transfer {
    EventKind kind;
    uint32_t tid;
    uint64_t conn_id;
    uint64_t wall_ns;
    uint64_t offset;
    int64_t result;  // bytes moved, 0 = end of stream, < 0 = failed
    int error;       // errno when result < 0
    bool message_start;
    uint64_t hash;
    // The hash is the agent's own, of the capture (DataRecordHashFromCapture): the span may
    // take it again over the whole head it puts together.
    bool hash_from_capture = false;
    // Message start: its first bytes. Otherwise (kFlagHeadCapture) this call's bytes that
    // belong to its message's head, or empty.
    absl::string_view capture;
  };
  struct ProcessWorkload {
    Workload workload;
    bool named = false;  // the namer has nothing more to add
  };
  struct OpenSpan {
    // Its strings view the members below, the builder's node, its process's names and its
    // connection (which outlive its spans).
    SpanRecord span;
    // The process's names as they were, when the process said hello again (and changed
    // them) while the span was open; else empty and unused.
    std::string service;
    std::string process;
    std::string status_message;  // a failed call's errno text
    ProcessWorkload* workload = nullptr;  // its process's, if in a container
    bool in_response = false;
    uint64_t request_end = 0;   // stream offset just past the last request byte seen
    uint64_t response_end = 0;
    uint64_t last_request_wall_ns = 0;
    uint64_t last_response_wall_ns = 0;
    // The first bytes of the request and of the response (at most kCaptureBytes), put
    // together from every call that carried some: names and status come from them when
    // the span ends.
    std::string request_head;
    std::string response_head;
    // The span's hashes are then Fingerprint64 of those heads, the same whatever calls the
    // bytes came in on either end (else: of the first call's bytes, as the hook hashed them).
    bool request_hash_from_head = false;
    bool response_hash_from_head = false;
    // The in-band trace id in hex, which the attribute inband.trace_id views (no
    // allocation: 16 bytes are past std::string's inline capacity).
    char inband_trace_id[16] = {};

    // Cleared for its next span, keeping what it allocated (its strings' buffers).
    void Reset();
  };
  // An in-band record's ids, for the span that will start at `offset`.
  struct PendingInband {
    uint64_t offset;
    uint64_t trace_id;
    uint64_t span_id;
  };
  struct Connection {
    SocketRole role = SocketRole::kUnknown;
    // As every span of the connection carries them (no address for a Unix-domain one).
    SpanEndpoint local;
    SpanEndpoint peer;
    // The name of a span whose protocol is unknown ("peer:port" for a client, the local
    // endpoint for a server), formatted once per connection (inet_ntop is not cheap).
    std::string fallback_name;
    std::string unix_name;  // a Unix-domain socket's name (path, or '@' + abstract name)
    // The wire bytes of what its spans have alike (SetConnectionFields), which they carry:
    // encoded when it opens and again when its process says hello again.
    ConnectionWire wire;
    uint64_t connect_parent = 0;  // server span of the connecting thread at connect time
    bool udp = false;              // a UDP conversation (else TCP or Unix-domain stream)
    uint64_t connect_wall_ns = 0;  // when connect() was called
    uint32_t connect_tid = 0;
    bool exchanged = false;       // a span was started on it, or it was reported as failed
    std::unique_ptr<OpenSpan> open;
    // DNS over UDP: queries waiting for their answer, by DNS id (a resolver sends several
    // on one socket, A and AAAA at once); each query and its answer is a span.
    std::map<uint16_t, std::unique_ptr<OpenSpan>> dns_pending;
    // In-band records waiting for the span starting at their offset, by offset (at most
    // kMaxPendingInband).
    std::vector<PendingInband> inband;
    absl::Time last_activity;
  };
  struct Process {
    // Viewed by its open spans: changed only through OnHello (see KeepNamesOfOpenSpans).
    std::string service;
    std::string process;
    // Set by the first hello if the process is in a container; its names are filled in
    // between sink calls only (LabelWorkload), never while a span views them.
    std::unique_ptr<ProcessWorkload> workload;
    uint32_t pid = 0;
    uint64_t wall_minus_mono = 0;  // from the hello: wall = mono + this (modulo 2^64)
    std::unordered_map<uint64_t, Connection> connections;   // by conn_id
    std::unordered_map<uint32_t, uint64_t> thread_server_span;  // by tid
  };

  // Thread contexts of an ended process, by tid; forgotten kEndedProcessMemory after the
  // first ExpireIdle that sees them.
  struct EndedProcess {
    std::unordered_map<uint32_t, uint64_t> thread_server_span;
    absl::Time seen_at = absl::InfinitePast();
  };

  // Gives `span` its workload's attributes, asking the namer first while it is unnamed.
  void LabelWorkload(ProcessWorkload* workload, SpanRecord* span) const;
  // Asks the namer, until it has named the workload.
  void NameWorkload(ProcessWorkload& workload) const;
  // The server span whose context thread `tid` of process `pid` has, looking at live
  // processes other than `self_key` first, then at ended ones; 0 if none.
  uint64_t ThreadContext(uint32_t pid, uint32_t tid, uint64_t self_key) const;
  // Gives the open spans of `process`, which view its names, copies of them: it is about to
  // take new ones.
  static void KeepNamesOfOpenSpans(Process& process);
  void OnOpen(Process& process, const EventRecord& event, absl::Time now);
  void OnTransfer(Process& process, const Transfer& t, absl::Time now);
  void OnBytes(Process& process, Connection& conn, const Transfer& t, absl::Time now);
  void OnFailedCall(Process& process, Connection& conn, const Transfer& t);
  // A span whose request begins with `t` (the connection's parent rules applied).
  std::unique_ptr<OpenSpan> StartSpan(Process& process, Connection& conn, const Transfer& t);
  // Gives `open`, a span of `conn` starting at request offset `offset`, the ids of the
  // in-band record at that offset, if one waits; drops the records below it.
  static void ApplyInband(Connection& conn, uint64_t offset, OpenSpan& open);
  // A finished span's object, kept for a later one (up to kMaxSpareSpans).
  void Recycle(std::unique_ptr<OpenSpan> open);
  void FinishSpan(Connection& conn);
  // Finishes `open`, a span of `conn`, and hands it to the sink.
  void Emit(const Connection& conn, OpenSpan& open);
  // Finishes every span open on `conn`.
  void FinishAllOf(Connection& conn);
  // A DNS query or answer on a UDP connection, paired by DNS id; false if the datagram
  // is not DNS (the exchange is then tracked like any other).
  bool OnDnsDatagram(Process& process, Connection& conn, const Transfer& t, bool is_request);
  // Names the span and sets its attributes and status from what the protocol parsers
  // (agent/protocol: HTTP/1.x, Redis, PostgreSQL, DNS) made of the heads it put together:
  // `request` (nullopt: an unknown protocol) and `response` (nullopt: none, or not
  // understood). The span's name and attributes view them.
  static void Describe(const std::optional<protocol::Request>& request,
                       const std::optional<protocol::Response>& response, OpenSpan& open);
  void EmitFailedClientSpan(Process& process, const Connection& conn, uint64_t conn_id,
                            uint32_t tid, uint64_t wall_ns, int error, uint64_t parent);
  uint64_t ClientParent(const Process& process, const Connection& conn, uint32_t tid,
                        bool first_exchange) const;
  // Sets the fields every span of `conn` has alike (kind, service, node, pid, process,
  // endpoints) in `span`; its service and process view `process`'s.
  void SetConnectionFields(const Process& process, const Connection& conn,
                           SpanRecord* span) const;
  // Encodes conn.wire from those fields.
  void EncodeConnectionFields(const Process& process, Connection& conn) const;
  // Sets what every span of `conn` starts with in `span`, a cleared record; its service
  // and process view `process`'s, and it carries conn.wire.
  void InitSpan(const Process& process, const Connection& conn, uint64_t conn_id,
                uint32_t tid, uint64_t start_wall_ns, SpanRecord* span) const;

  const std::string node_;
  const Sink sink_;
  WorkloadNamer namer_;
  const absl::Duration idle_timeout_;
  std::unordered_map<uint64_t, Process> processes_;
  std::unordered_map<uint32_t, uint64_t> key_by_pid_;  // the latest hello of each pid
  std::unordered_map<uint32_t, EndedProcess> ended_;   // by pid
  uint64_t spans_built_ = 0;
  uint64_t events_without_connection_ = 0;
  uint64_t inband_peers_not_hooked_ = 0;
  // Finished spans' objects, reset, for the next spans to start (any connection's).
  static constexpr size_t kMaxSpareSpans = 256;
  std::vector<std::unique_ptr<OpenSpan>> spare_spans_;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_BUILDER_H_

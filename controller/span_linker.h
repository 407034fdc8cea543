// Links stored spans into traces, inside the transaction that stored them.
//
// The result depends only on the set of stored spans, never on the order in which they
// arrived:
//  - inside a process, a span's parent is the parent_span_id the agent sent (thread
//    causality), even while that parent has not arrived yet;
//  - across processes, a server span without a local parent gets as parent the client
//    span that sent the same bytes: same TCP connection seen from the other end
//    (client.local == server.peer, client.peer == server.local) and the same request
//    stream offset. When several clients match (a 4-tuple reused over time), the one
//    nearest in start time within kMatchWindowNs wins (ties: lower span id, as a signed
//    BIGINT). Both ways are checked: a new server span looks for its client, a new
//    client span makes the matching server spans choose again (it may be nearer than
//    their current parent);
//  - through a Service's address translation (DNAT: the client connected to a virtual
//    IP, the server sees the connection on its own address, from the client's real
//    address and port): a server span that has no client on its own connection gets the
//    client span whose address and port are the server's peer, at the same offset and
//    with the same request fingerprint, the nearest in start time within
//    kTranslatedWindowNs (ties: lower id), among the clients no server span has as parent
//    yet. A client on the server's own connection arriving later still takes over. When
//    the source is translated too (SNAT), no endpoint agrees and the spans stay apart:
//    matching by content alone would guess among identical requests;
//  - in-band mode: a server span that arrives with a parent_span_id has it from the
//    agent, which gives one to a server span only when the request came framed in-band
//    (the frame named the client span that sent it: a cross-process parent decided
//    exactly). Stored as its local parent, it is kept like any local parent: the two
//    passive rules above only ever choose for server spans without a local parent (their
//    choices can change as spans arrive: a nearer client, a client on the server's own
//    connection), so no client span, before, with or after it, takes such a span over;
//  - a span's trace id is the span id of its topmost known ancestor. After the links
//    change, every touched span's root is found and the root's whole subtree relabelled.
//    Then the summary rows (table traces) of the affected traces are recomputed: a trace
//    of more than one span has one, a trace of a single span has none (ListTraces reads
//    such a trace from its span).
//
// Cost: most spans stand alone (no parent, no child, no other end stored). The writer
// links a batch in memory first (PrelinkBatch) and stores the spans with the parents and
// trace ids that gives; Link then asks the database, in one statement, only what memory
// cannot know (stored spans of the same connections, stored children), and runs the
// relabel walk and the summary statement only for spans that need them.
#ifndef REPTRACE_CONTROLLER_SPAN_LINKER_H_
#define REPTRACE_CONTROLLER_SPAN_LINKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "proto/reptrace.pb.h"

namespace reptrace::controller {

// A span of the batch being stored, as the writer stores it.
struct NewSpan {
  const v1::Span* span = nullptr;
  int64_t id = 0;
  int64_t parent = 0;    // parent_span_id as stored, 0 = NULL
  int64_t trace_id = 0;  // as stored
};

class SpanLinker {
 public:
  // Client and server spans of one exchange start at most this far apart (clocks of
  // different nodes included).
  static constexpr int64_t kMatchWindowNs = 60'000'000'000;
  // The same through address translation, where only the client's end and the bytes
  // match: a narrower window (network latency and clock skew between nodes).
  static constexpr int64_t kTranslatedWindowNs = 5'000'000'000;
  // Walks up and down a trace stop after this many levels (guards against a cycle made
  // of bogus parent ids, and against runaway work).
  static constexpr int kMaxTraceDepth = 1000;

  // Whether `span` has TCP/UDP addresses. A span whose local or peer port is 0 (a
  // Unix-domain socket, an address the agent could not read) never links across
  // processes, since any two such spans would otherwise "match" each other.
  static bool HasFlow(const v1::Span& span);
  // The same 64 bits for both ends of one exchange (server and client addresses, request
  // offset): a cheap key for grouping a batch's spans with stored ones in memory;
  // different exchanges may share a key, so a match is rechecked on the exact columns.
  // (Stored and indexed as spans.flow_key from migration 2 to 4, which is why it is only
  // XORs and shifts: migration 2 computed it in SQL.)
  static int64_t FlowKey(const v1::Span& span);
  // The same 64 bits for both ends of one exchange when only the server's end is
  // translated (a Kubernetes Service's DNAT): the client's address and port, and the
  // request offset; stored in spans.client_key and indexed: the one look-up key of
  // linking (both ends of an exchange share it, translated or not; rechecked); 0 (stored
  // as NULL) for a span without a flow.
  static int64_t ClientKey(const v1::Span& span);

  // Prepares the linker's statements on `conn` (once per connection).
  static void Prepare(pqxx::connection& conn);

  // Links the spans of one batch among themselves: local parents, and each server span
  // without one to its nearest client span in the batch. Fills parent and trace_id of
  // every element of `spans` (span and id set, ids distinct).
  static void PrelinkBatch(std::vector<NewSpan>& spans);

  // Links `spans` (just inserted by `tx`, all from batch (`agent_id`, `batch_id`), with
  // parent and trace_id as PrelinkBatch set them if `prelinked`, else parent = the local
  // parent and trace_id = id) with everything stored. Serialized across connections and
  // controller replicas by an advisory lock held until `tx` ends. Throws pqxx exceptions
  // on database errors. If `traces_touched` is not null, appends to it the id of every
  // trace that now holds a span of `spans` or whose spans changed (a trace may appear
  // more than once, and an id may name a trace that no longer has any span): what trace
  // sampling must (re)decide.
  static void Link(pqxx::transaction_base& tx, const std::string& agent_id,
                   uint64_t batch_id, const std::vector<NewSpan>& spans, bool prelinked,
                   std::vector<int64_t>* traces_touched = nullptr);
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_SPAN_LINKER_H_

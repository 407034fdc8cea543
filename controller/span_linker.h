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
//    nearest in start time within kMatchWindowNs wins (ties: lower span id). Both ways
//    are checked: a new server span looks for its client, a new client span makes the
//    matching server spans choose again (it may be nearer than their current parent);
//  - a span's trace id is the span id of its topmost known ancestor. After the links
//    change, every touched span's root is found and the root's whole subtree relabelled.
//    Then the summary rows (table traces) of the affected traces are recomputed, and the
//    rows of trace ids left without spans deleted.
#ifndef REPTRACE_CONTROLLER_SPAN_LINKER_H_
#define REPTRACE_CONTROLLER_SPAN_LINKER_H_

#include <cstdint>
#include <vector>

#include <pqxx/pqxx>

namespace reptrace::controller {

class SpanLinker {
 public:
  // Client and server spans of one exchange start at most this far apart (clocks of
  // different nodes included).
  static constexpr int64_t kMatchWindowNs = 60'000'000'000;
  // Walks up and down a trace stop after this many levels (guards against a cycle made
  // of bogus parent ids, and against runaway work).
  static constexpr int kMaxTraceDepth = 1000;

  // Prepares the linker's statements on `conn` (once per connection).
  static void Prepare(pqxx::connection& conn);

  // Links `new_span_ids` (spans `tx` has just inserted, with parent_span_id set from the
  // agent's local parent and trace_id = span_id) with everything stored. Serialized
  // across connections and controller replicas by an advisory lock held until `tx`
  // ends. Throws pqxx exceptions on database errors.
  static void Link(pqxx::transaction_base& tx, const std::vector<int64_t>& new_span_ids);
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_SPAN_LINKER_H_

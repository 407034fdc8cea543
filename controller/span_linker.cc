#include "controller/span_linker.h"

#include <set>
#include <string>

#include "controller/internal/pg_util.h"
#include "controller/schema.h"

namespace reptrace::controller {
namespace {

using internal::BigintArrayLiteral;

constexpr char kLockStatement[] = "linker_lock";
constexpr char kCrossLinkStatement[] = "linker_cross_link";
constexpr char kRelabelStatement[] = "linker_relabel";
constexpr char kNeedRelabelStatement[] = "linker_need_relabel";
constexpr char kTouchedTracesStatement[] = "linker_touched_traces";
constexpr char kUpsertSummariesStatement[] = "linker_upsert_summaries";
constexpr char kDeleteEmptySummariesStatement[] = "linker_delete_empty_summaries";

constexpr char kLockSql[] = "SELECT pg_advisory_xact_lock($1)";

// $1: ids of the new spans, $2: the match window. Picks every server span whose parent
// may change: the new server spans, and the server spans at the other end of a new client
// span. For each, the best client is chosen afresh among all stored spans, so the outcome
// does not depend on which end arrived first. Returns the spans whose parent changed.
// A span whose local or peer port is 0 has no TCP/UDP address (a Unix-domain socket, an
// address the agent could not read): it never links across processes, since any two
// such spans would otherwise "match" each other.
constexpr char kCrossLinkSql[] = R"sql(
WITH new_spans AS (
  SELECT n.* FROM spans n
   WHERE n.span_id = ANY($1::bigint[]) AND n.local_port <> 0 AND n.peer_port <> 0
),
candidates AS (
  SELECT n.span_id FROM new_spans n
   WHERE n.kind = 2 AND n.local_parent_span_id = 0
  UNION
  SELECT srv.span_id
    FROM new_spans c
    JOIN spans srv
      ON srv.local_ip = c.peer_ip AND srv.local_port = c.peer_port
     AND srv.peer_ip = c.local_ip AND srv.peer_port = c.local_port
     AND srv.request_offset = c.request_offset AND srv.kind = 2
   WHERE c.kind = 1 AND srv.local_parent_span_id = 0
     AND srv.start_ns BETWEEN c.start_ns - $2 AND c.start_ns + $2
),
best AS (
  SELECT srv.span_id,
         (SELECT c.span_id
            FROM spans c
           WHERE c.local_ip = srv.peer_ip AND c.local_port = srv.peer_port
             AND c.peer_ip = srv.local_ip AND c.peer_port = srv.local_port
             AND c.request_offset = srv.request_offset AND c.kind = 1
             AND c.start_ns BETWEEN srv.start_ns - $2 AND srv.start_ns + $2
           ORDER BY abs(c.start_ns - srv.start_ns), c.span_id
           LIMIT 1) AS client_id
    FROM candidates cand JOIN spans srv ON srv.span_id = cand.span_id
)
UPDATE spans s SET parent_span_id = b.client_id
  FROM best b
 WHERE s.span_id = b.span_id AND s.parent_span_id IS DISTINCT FROM b.client_id
RETURNING s.span_id
)sql";

// $1: ids of the touched spans, $2: the depth limit. Walks up from each touched span to
// its topmost known ancestor (a span whose parent is unknown or not stored), then down
// from the touched span (not from the root: the rest of the root's tree is labelled
// already, and walking it all would make every batch cost the size of its trace), and
// labels every span reached with the root's id. UNION (not UNION
// ALL) and the depth limit keep a cycle of bogus parent ids from looping. Returns, for
// each span relabelled, its old and its new trace id.
constexpr char kRelabelSql[] = R"sql(
WITH RECURSIVE up(origin, span_id, parent_span_id, depth) AS (
  SELECT s.span_id, s.span_id, s.parent_span_id, 0
    FROM spans s WHERE s.span_id = ANY($1::bigint[])
  UNION
  SELECT u.origin, p.span_id, p.parent_span_id, u.depth + 1
    FROM up u JOIN spans p ON p.span_id = u.parent_span_id
   WHERE u.depth < $2
),
roots AS (
  SELECT DISTINCT ON (u.origin) u.origin, u.span_id AS root
    FROM up u
   ORDER BY u.origin,
            (u.parent_span_id IS NULL OR NOT EXISTS (
               SELECT 1 FROM spans p WHERE p.span_id = u.parent_span_id)) DESC,
            u.depth DESC, u.span_id
),
down(root, span_id, depth) AS (
  SELECT r.root, r.origin, 0 FROM roots r
  UNION
  SELECT d.root, c.span_id, d.depth + 1
    FROM down d JOIN spans c ON c.parent_span_id = d.span_id
   WHERE d.depth < $2 AND c.span_id <> d.root
),
labels AS (
  SELECT DISTINCT ON (d.span_id) d.span_id, d.root
    FROM down d ORDER BY d.span_id, d.root
)
UPDATE spans s SET trace_id = l.root
  FROM labels l JOIN spans old ON old.span_id = l.span_id
 WHERE s.span_id = l.span_id AND s.trace_id <> l.root
RETURNING old.trace_id, l.root
)sql";

// $1: ids of new spans. Those whose trace id may not be their own: they have a parent, or
// children already stored. A new span with neither is a trace of its own, as inserted
// (trace_id = span_id), and the relabel walk would change nothing: skipping it saves
// about a third of the database's work per span when most spans stand alone.
constexpr char kNeedRelabelSql[] = R"sql(
SELECT s.span_id FROM spans s
 WHERE s.span_id = ANY($1::bigint[])
   AND (s.parent_span_id IS NOT NULL
        OR EXISTS (SELECT 1 FROM spans c WHERE c.parent_span_id = s.span_id))
)sql";

constexpr char kTouchedTracesSql[] =
    "SELECT DISTINCT trace_id FROM spans WHERE span_id = ANY($1::bigint[])";

// $1: trace ids whose summary must be recomputed.
constexpr char kUpsertSummariesSql[] = R"sql(
WITH agg AS (
  SELECT s.trace_id,
         min(s.start_ns) AS start_ns,
         max(s.end_ns) AS end_ns,
         count(*)::integer AS span_count,
         CASE WHEN bool_or(s.status = 2) THEN 2
              WHEN bool_or(s.status = 1) THEN 1
              ELSE 0 END AS status,
         array_agg(DISTINCT s.service ORDER BY s.service) AS services
    FROM spans s
   WHERE s.trace_id = ANY($1::bigint[])
   GROUP BY s.trace_id
)
INSERT INTO traces (trace_id, start_ns, end_ns, duration_ns, span_count, root_service,
                    root_name, status, services, updated_at)
SELECT a.trace_id, a.start_ns, a.end_ns, a.end_ns - a.start_ns, a.span_count, r.service,
       r.name, a.status, a.services, now()
  FROM agg a JOIN spans r ON r.span_id = a.trace_id
ON CONFLICT (trace_id) DO UPDATE SET
  start_ns = EXCLUDED.start_ns, end_ns = EXCLUDED.end_ns,
  duration_ns = EXCLUDED.duration_ns, span_count = EXCLUDED.span_count,
  root_service = EXCLUDED.root_service, root_name = EXCLUDED.root_name,
  status = EXCLUDED.status, services = EXCLUDED.services, updated_at = now()
)sql";

constexpr char kDeleteEmptySummariesSql[] = R"sql(
DELETE FROM traces t
 WHERE t.trace_id = ANY($1::bigint[])
   AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id)
)sql";

}  // namespace

void SpanLinker::Prepare(pqxx::connection& conn) {
  conn.prepare(kLockStatement, kLockSql);
  conn.prepare(kCrossLinkStatement, kCrossLinkSql);
  conn.prepare(kRelabelStatement, kRelabelSql);
  conn.prepare(kNeedRelabelStatement, kNeedRelabelSql);
  conn.prepare(kTouchedTracesStatement, kTouchedTracesSql);
  conn.prepare(kUpsertSummariesStatement, kUpsertSummariesSql);
  conn.prepare(kDeleteEmptySummariesStatement, kDeleteEmptySummariesSql);
}

void SpanLinker::Link(pqxx::transaction_base& tx, const std::vector<int64_t>& new_span_ids) {
  if (new_span_ids.empty()) return;

  // One lock for all linking, across every stream of every replica, held until commit.
  // Linking reads spans that other transactions may be inserting right now: without the
  // lock, a client span and its server span stored concurrently would each miss the
  // other (neither sees the other's uncommitted row) and never be linked. With it, the
  // second linker starts after the first committed, and READ COMMITTED lets each of its
  // statements see those spans. A single constant key rather than per-flow or per-trace
  // keys: which traces a batch merges is only known while linking, and linking is short
  // next to the COPY, which still runs in parallel.
  tx.exec_prepared(kLockStatement, kLinkLockKey);

  const std::string new_ids = BigintArrayLiteral(new_span_ids);
  // Spans whose parent the cross-link changed (to a client, or back to none) are always
  // relabelled; new spans only if they have a parent or children (kNeedRelabelSql).
  std::vector<int64_t> relinked;
  for (const auto& row : tx.exec_prepared(kCrossLinkStatement, new_ids, kMatchWindowNs)) {
    relinked.push_back(row[0].as<int64_t>());
  }
  std::vector<int64_t> relabel = relinked;
  for (const auto& row : tx.exec_prepared(kNeedRelabelStatement, new_ids)) {
    relabel.push_back(row[0].as<int64_t>());
  }

  // Traces whose summary changes: those a relabelled span left or joined, those holding a
  // relabelled span, and each new span that stands alone (its own trace, as inserted).
  std::set<int64_t> affected_traces;
  std::set<int64_t> vacated;  // trace ids spans moved away from: maybe empty now
  if (!relabel.empty()) {
    const std::string relabel_ids = BigintArrayLiteral(relabel);
    for (const auto& row : tx.exec_prepared(kRelabelStatement, relabel_ids, kMaxTraceDepth)) {
      vacated.insert(row[0].as<int64_t>());
      affected_traces.insert(row[1].as<int64_t>());
    }
    for (const auto& row : tx.exec_prepared(kTouchedTracesStatement, relabel_ids)) {
      affected_traces.insert(row[0].as<int64_t>());
    }
  }
  const std::set<int64_t> relabelled(relabel.begin(), relabel.end());
  for (int64_t id : new_span_ids) {
    if (relabelled.count(id) == 0) affected_traces.insert(id);
  }
  affected_traces.insert(vacated.begin(), vacated.end());
  tx.exec_prepared(kUpsertSummariesStatement,
                   BigintArrayLiteral(std::vector<int64_t>(affected_traces.begin(),
                                                           affected_traces.end())));
  if (!vacated.empty()) {
    tx.exec_prepared(kDeleteEmptySummariesStatement,
                     BigintArrayLiteral(std::vector<int64_t>(vacated.begin(), vacated.end())));
  }
}

}  // namespace reptrace::controller

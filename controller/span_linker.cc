#include "controller/span_linker.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "controller/internal/pg_util.h"
#include "controller/schema.h"

namespace reptrace::controller {
namespace {

using internal::BigintArrayLiteral;
using internal::ToBigint;

constexpr char kLockStatement[] = "linker_lock";
constexpr char kProbeStatement[] = "linker_probe";
constexpr char kSetParentsStatement[] = "linker_set_parents";
constexpr char kRelabelStatement[] = "linker_relabel";
constexpr char kSummariesStatement[] = "linker_summaries";

constexpr char kLockSql[] = "SELECT pg_advisory_xact_lock($1)";

// What memory cannot know about a batch. $1: the flow keys of its spans, $2: their ids,
// $3, $4: the batch (its own rows are known). Rows with `true` first: every stored span
// with one of the keys (the caller rechecks the exact columns); rows with `false`: the
// ids of the batch that stored spans name as their parent (children that came first).
constexpr char kProbeSql[] = R"sql(
SELECT true, s.span_id, s.kind, s.local_parent_span_id, coalesce(s.parent_span_id, 0),
       s.start_ns, s.local_ip, s.local_port, s.peer_ip, s.peer_port, s.request_offset
  FROM spans s
 WHERE s.flow_key = ANY($1::bigint[]) AND s.flow_key IS NOT NULL
   AND NOT (s.batch_id = $3 AND s.agent_id = $4)
UNION ALL
SELECT DISTINCT false, c.parent_span_id, 0::smallint, 0::bigint, 0::bigint, 0::bigint,
       NULL::bytea, 0, NULL::bytea, 0, 0::bigint
  FROM spans c
 WHERE c.parent_span_id = ANY($2::bigint[]) AND c.parent_span_id IS NOT NULL
   AND NOT (c.batch_id = $3 AND c.agent_id = $4)
)sql";

// $1: span ids, $2: their new parents (0: none).
constexpr char kSetParentsSql[] = R"sql(
UPDATE spans s SET parent_span_id = NULLIF(u.parent, 0)
  FROM unnest($1::bigint[], $2::bigint[]) AS u(span_id, parent)
 WHERE s.span_id = u.span_id
)sql";

// $1: ids of the touched spans, $2: the depth limit. Walks up from each touched span to
// its topmost known ancestor (a span whose parent is unknown or not stored: the deepest
// step of the walk, which follows one parent at a time), then down from the touched span
// (not from the root: the rest of the root's tree is labelled already, and walking it all
// would make every batch cost the size of its trace), and labels every span reached with
// the root's id. UNION (not UNION ALL) and the depth limit keep a cycle of bogus parent
// ids from looping; in a cycle the deepest step within the limit is the root. Returns
// every trace id whose spans changed: those spans left, and those the walk labelled.
// The steps are LATERAL subqueries kept apart by OFFSET 0, so that each is an index
// look-up: the planner cannot estimate a recursive walk's size and would otherwise
// hash-join the whole spans table.
constexpr char kRelabelSql[] = R"sql(
WITH RECURSIVE up(origin, span_id, parent_span_id, depth) AS (
  SELECT s.span_id, s.span_id, s.parent_span_id, 0
    FROM spans s WHERE s.span_id = ANY($1::bigint[])
  UNION
  SELECT u.origin, p.span_id, p.parent_span_id, u.depth + 1
    FROM up u CROSS JOIN LATERAL (
      SELECT p.span_id, p.parent_span_id FROM spans p WHERE p.span_id = u.parent_span_id
      OFFSET 0
    ) p
   WHERE u.depth < $2
),
roots AS (
  SELECT DISTINCT ON (u.origin) u.origin, u.span_id AS root
    FROM up u
   ORDER BY u.origin, u.depth DESC, u.span_id
),
down(root, span_id, depth) AS (
  SELECT r.root, r.origin, 0 FROM roots r
  UNION
  SELECT d.root, c.span_id, d.depth + 1
    FROM down d CROSS JOIN LATERAL (
      SELECT c.span_id FROM spans c
       WHERE c.parent_span_id = d.span_id AND c.parent_span_id IS NOT NULL
      OFFSET 0
    ) c
   WHERE d.depth < $2 AND c.span_id <> d.root
),
labels AS (
  SELECT DISTINCT ON (d.span_id) d.span_id, d.root
    FROM down d ORDER BY d.span_id, d.root
),
moved AS (
  UPDATE spans s SET trace_id = l.root
    FROM labels l JOIN spans old ON old.span_id = l.span_id
   WHERE s.span_id = l.span_id AND s.trace_id <> l.root
  RETURNING old.trace_id
)
SELECT trace_id FROM moved
UNION
SELECT root FROM labels
)sql";

// $1: trace ids whose summary may have changed. A trace of more than one span gets its
// summary row (inserted or replaced); any other (one span, or none left) loses it. The
// spans of trace T: its root (span_id = T) and the members of the partial trace index.
// (The roots are fetched by id, then filtered: written as one condition, the planner
// would scan a whole partial index of roots.)
constexpr char kSummariesSql[] = R"sql(
WITH named AS MATERIALIZED (
  SELECT s.span_id, s.trace_id, s.start_ns, s.end_ns, s.status, s.service
    FROM spans s WHERE s.span_id = ANY($1::bigint[])
),
members AS (
  SELECT n.trace_id, n.start_ns, n.end_ns, n.status, n.service
    FROM named n WHERE n.trace_id = n.span_id
  UNION ALL
  SELECT s.trace_id, s.start_ns, s.end_ns, s.status, s.service
    FROM spans s WHERE s.trace_id = ANY($1::bigint[]) AND s.trace_id <> s.span_id
),
agg AS (
  SELECT m.trace_id,
         min(m.start_ns) AS start_ns,
         max(m.end_ns) AS end_ns,
         count(*)::integer AS span_count,
         CASE WHEN bool_or(m.status = 2) THEN 2
              WHEN bool_or(m.status = 1) THEN 1
              ELSE 0 END AS status,
         array_agg(DISTINCT m.service ORDER BY m.service) AS services
    FROM members m
   GROUP BY m.trace_id
  HAVING count(*) > 1
),
upserted AS (
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
)
DELETE FROM traces t
 WHERE t.trace_id = ANY($1::bigint[])
   AND NOT EXISTS (SELECT 1 FROM agg a WHERE a.trace_id = t.trace_id)
)sql";

// 32 bits of an address: its big-endian words XORed.
uint64_t FoldIp(const std::string& ip) {
  uint64_t folded = 0;
  for (size_t i = 0; i < ip.size(); ++i) {
    folded ^= static_cast<uint64_t>(static_cast<unsigned char>(ip[i])) << (8 * (3 - i % 4));
  }
  return folded;
}

// One span in an exchange group.
struct Member {
  int64_t id;
  bool server;
  int64_t local_parent;  // 0 = none
  int64_t parent;        // as stored now, 0 = NULL
  int64_t start_ns;
};

// What identifies one exchange exactly: server and client addresses, request offset.
std::string ExchangeOf(bool server, const std::string& local_ip, uint32_t local_port,
                       const std::string& peer_ip, uint32_t peer_port, uint64_t offset) {
  const std::string& server_ip = server ? local_ip : peer_ip;
  const std::string& client_ip = server ? peer_ip : local_ip;
  const uint32_t server_port = server ? local_port : peer_port;
  const uint32_t client_port = server ? peer_port : local_port;
  std::string key;
  key.reserve(server_ip.size() + client_ip.size() + 18);
  key.push_back(static_cast<char>(server_ip.size()));
  key.append(server_ip);
  key.push_back(static_cast<char>(client_ip.size()));
  key.append(client_ip);
  key.append(reinterpret_cast<const char*>(&server_port), sizeof(server_port));
  key.append(reinterpret_cast<const char*>(&client_port), sizeof(client_port));
  key.append(reinterpret_cast<const char*>(&offset), sizeof(offset));
  return key;
}

std::string ExchangeOf(const v1::Span& span) {
  return ExchangeOf(span.kind() == v1::SPAN_KIND_SERVER, span.local().ip(),
                    span.local().port(), span.peer().ip(), span.peer().port(),
                    span.request_offset());
}

// The client a server span of `group` should have as parent: the nearest in start time
// within the window, ties to the lower id; 0 if none.
int64_t BestClient(const std::vector<Member>& group, const Member& server) {
  int64_t best = 0;
  int64_t best_distance = 0;
  for (const Member& client : group) {
    if (client.server) continue;
    const int64_t distance = std::llabs(client.start_ns - server.start_ns);
    if (distance > SpanLinker::kMatchWindowNs) continue;
    if (best == 0 || distance < best_distance ||
        (distance == best_distance && client.id < best)) {
      best = client.id;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace

bool SpanLinker::HasFlow(const v1::Span& span) {
  return span.local().port() != 0 && span.peer().port() != 0;
}

int64_t SpanLinker::FlowKey(const v1::Span& span) {
  const bool server = span.kind() == v1::SPAN_KIND_SERVER;
  const v1::Endpoint& server_end = server ? span.local() : span.peer();
  const v1::Endpoint& client_end = server ? span.peer() : span.local();
  const uint64_t key = span.request_offset() ^ (uint64_t{server_end.port()} << 48) ^
                       (uint64_t{client_end.port()} << 32) ^
                       (FoldIp(server_end.ip()) << 20) ^ (FoldIp(client_end.ip()) << 4);
  return ToBigint(key);
}

void SpanLinker::Prepare(pqxx::connection& conn) {
  conn.prepare(kLockStatement, kLockSql);
  conn.prepare(kProbeStatement, kProbeSql);
  conn.prepare(kSetParentsStatement, kSetParentsSql);
  conn.prepare(kRelabelStatement, kRelabelSql);
  conn.prepare(kSummariesStatement, kSummariesSql);
}

void SpanLinker::PrelinkBatch(std::vector<NewSpan>& spans) {
  std::unordered_map<int64_t, size_t> index;
  index.reserve(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) index.emplace(spans[i].id, i);

  // Local parents, then each server without one to its nearest client in the batch.
  std::unordered_map<std::string, std::vector<Member>> exchanges;
  for (NewSpan& s : spans) {
    s.parent = ToBigint(s.span->parent_span_id());
    if (!HasFlow(*s.span)) continue;
    exchanges[ExchangeOf(*s.span)].push_back(
        Member{s.id, s.span->kind() == v1::SPAN_KIND_SERVER, s.parent, s.parent,
               s.span->start_ns()});
  }
  for (const auto& [exchange, group] : exchanges) {
    if (group.size() < 2) continue;
    for (const Member& m : group) {
      if (m.server && m.local_parent == 0) spans[index.at(m.id)].parent = BestClient(group, m);
    }
  }

  // Trace id: the topmost ancestor in the batch. A chain that does not end within the
  // batch's size or the depth limit (a cycle of bogus ids) is left to the relabel walk:
  // such a span keeps its own id, which Link takes as "not settled".
  const size_t limit = std::min(spans.size(), static_cast<size_t>(kMaxTraceDepth));
  for (NewSpan& s : spans) {
    const NewSpan* top = &s;
    bool ended = false;
    for (size_t depth = 0; depth <= limit; ++depth) {
      auto parent = index.find(top->parent);
      if (top->parent == 0 || parent == index.end()) {
        ended = true;
        break;
      }
      top = &spans[parent->second];
    }
    s.trace_id = ended ? top->id : s.id;
  }
}

void SpanLinker::Link(pqxx::transaction_base& tx, const std::string& agent_id,
                      uint64_t batch_id, const std::vector<NewSpan>& spans, bool prelinked) {
  if (spans.empty()) return;

  // One lock for all linking, across every stream of every replica, held until commit.
  // Linking reads spans that other transactions may be inserting right now: without the
  // lock, a client span and its server span stored concurrently would each miss the
  // other (neither sees the other's uncommitted row) and never be linked. With it, the
  // second linker starts after the first committed, and READ COMMITTED lets each of its
  // statements see those spans. A single constant key rather than per-flow or per-trace
  // keys: which traces a batch merges is only known while linking, and linking is short
  // next to the COPY, which still runs in parallel.
  tx.exec_prepared(kLockStatement, kLinkLockKey);

  std::unordered_map<int64_t, size_t> index;
  index.reserve(spans.size());
  std::vector<int64_t> ids;
  ids.reserve(spans.size());
  std::unordered_set<int64_t> key_set;
  std::vector<int64_t> keys;
  keys.reserve(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    index.emplace(spans[i].id, i);
    ids.push_back(spans[i].id);
    if (HasFlow(*spans[i].span) && key_set.insert(FlowKey(*spans[i].span)).second) {
      keys.push_back(FlowKey(*spans[i].span));
    }
  }

  // Stored spans of the batch's exchanges, grouped with the batch's own.
  std::unordered_map<std::string, std::vector<Member>> exchanges;
  std::unordered_set<std::string> with_stored;  // exchanges with a stored span
  std::unordered_set<int64_t> has_stored_child;
  for (const auto& row : tx.exec_prepared(kProbeStatement, BigintArrayLiteral(keys),
                                          BigintArrayLiteral(ids), ToBigint(batch_id),
                                          agent_id)) {
    if (!row[0].as<bool>()) {
      has_stored_child.insert(row[1].as<int64_t>());
      continue;
    }
    const bool server = row[2].as<int>() == v1::SPAN_KIND_SERVER;
    const std::string exchange = ExchangeOf(
        server, pqxx::binarystring(row[6]).str(), row[7].as<uint32_t>(),
        pqxx::binarystring(row[8]).str(), row[9].as<uint32_t>(),
        static_cast<uint64_t>(row[10].as<int64_t>()));
    exchanges[exchange].push_back(Member{row[1].as<int64_t>(), server, row[3].as<int64_t>(),
                                         row[4].as<int64_t>(), row[5].as<int64_t>()});
    with_stored.insert(exchange);
  }
  if (!with_stored.empty() || !prelinked) {
    for (const NewSpan& s : spans) {
      if (!HasFlow(*s.span)) continue;
      const std::string exchange = ExchangeOf(*s.span);
      if (prelinked && with_stored.count(exchange) == 0) continue;  // decided in memory
      exchanges[exchange].push_back(Member{s.id, s.span->kind() == v1::SPAN_KIND_SERVER,
                                           ToBigint(s.span->parent_span_id()), s.parent,
                                           s.span->start_ns()});
    }
  }

  // Every server without a local parent in those exchanges chooses its client afresh
  // among all of them; only the ones whose choice differs from what is stored change.
  std::vector<int64_t> changed_ids;
  std::vector<int64_t> changed_parents;
  std::unordered_map<int64_t, int64_t> parent_now;  // of batch spans that changed
  for (const auto& [exchange, group] : exchanges) {
    for (const Member& m : group) {
      if (!m.server || m.local_parent != 0) continue;
      const int64_t best = BestClient(group, m);
      if (best == m.parent) continue;
      changed_ids.push_back(m.id);
      changed_parents.push_back(best);
      if (index.count(m.id) > 0) parent_now[m.id] = best;
    }
  }
  if (!changed_ids.empty()) {
    tx.exec_prepared(kSetParentsStatement, BigintArrayLiteral(changed_ids),
                     BigintArrayLiteral(changed_parents));
  }

  // Spans whose trace id may be wrong: those whose parent changed, those of the batch
  // whose parent is not in the batch (a stored span, or not stored yet) or was not
  // followed in memory (a span with a parent in the batch that kept its own id as trace
  // id), and those with stored children.
  std::vector<int64_t> relabel = changed_ids;
  for (const NewSpan& s : spans) {
    if (parent_now.count(s.id) > 0) continue;  // already in
    const bool unsettled =
        s.parent != 0 && (!prelinked || index.count(s.parent) == 0 || s.trace_id == s.id);
    if (unsettled || has_stored_child.count(s.id) > 0) relabel.push_back(s.id);
  }

  // Traces whose summary may change: those the walk touched, and those of more than one
  // span that the batch formed in memory.
  std::set<int64_t> affected;
  if (!relabel.empty()) {
    for (const auto& row : tx.exec_prepared(kRelabelStatement, BigintArrayLiteral(relabel),
                                            kMaxTraceDepth)) {
      affected.insert(row[0].as<int64_t>());
    }
  }
  if (prelinked) {
    for (const NewSpan& s : spans) {
      if (s.trace_id != s.id) affected.insert(s.trace_id);
    }
  }
  if (!affected.empty()) {
    tx.exec_prepared(kSummariesStatement,
                     BigintArrayLiteral(std::vector<int64_t>(affected.begin(), affected.end())));
  }
}

}  // namespace reptrace::controller

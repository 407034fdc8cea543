#include "controller/span_linker.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/strings/string_view.h"
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

// What memory cannot know about a batch. $1: the client keys of its spans, $2: their ids,
// $3, $4: the batch (its own rows are known). Rows of type 1: every stored span sharing a
// client key with the batch, and for a client whether a server span has it as parent
// already (the caller keeps those it can use: ends of the batch's own exchanges by flow
// key, and within the matching window clients for its servers without one, parentless
// servers for its clients); type 2: the ids of the batch that stored spans name as their
// parent (children that came first).
constexpr char kProbeSql[] = R"sql(
SELECT 1::smallint, s.span_id, s.kind, s.local_parent_span_id, coalesce(s.parent_span_id, 0),
       s.start_ns, s.local_ip, s.local_port, s.peer_ip, s.peer_port, s.request_offset,
       s.request_hash, s.client_key,
       CASE WHEN s.kind = 1
            THEN EXISTS (SELECT 1 FROM spans t WHERE t.parent_span_id = s.span_id AND t.kind = 2)
            ELSE false END
  FROM spans s
 WHERE s.client_key = ANY($1::bigint[]) AND s.client_key IS NOT NULL
   AND NOT (s.batch_id = $3 AND s.agent_id = $4)
UNION ALL
SELECT DISTINCT 2::smallint, c.parent_span_id, 0::smallint, 0::bigint, 0::bigint, 0::bigint,
       NULL::bytea, 0, NULL::bytea, 0, 0::bigint, 0::bigint, 0::bigint, false
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
// the root's id. The depth limit keeps a cycle of bogus parent ids from looping; in a
// cycle the deepest step within the limit is the root. UNION ALL: every row of a step has
// a greater depth than the rows before, so UNION would remove nothing, and it built a
// hash table sized by the planner's guess (cleared with memset) on every execution, 9 %
// of PostgreSQL's time in the ingest benchmark. Returns
// every trace id whose spans changed: those spans left, and those the walk labelled.
// The steps are LATERAL subqueries kept apart by OFFSET 0, so that each is an index
// look-up: the planner cannot estimate a recursive walk's size and would otherwise
// hash-join the whole spans table.
constexpr char kRelabelSql[] = R"sql(
WITH RECURSIVE up(origin, span_id, parent_span_id, depth) AS (
  SELECT s.span_id, s.span_id, s.parent_span_id, 0
    FROM spans s WHERE s.span_id = ANY($1::bigint[])
  UNION ALL
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
  UNION ALL
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
uint64_t FoldIp(absl::string_view ip) {
  uint64_t folded = 0;
  for (size_t i = 0; i < ip.size(); ++i) {
    folded ^= static_cast<uint64_t>(static_cast<unsigned char>(ip[i])) << (8 * (3 - i % 4));
  }
  return folded;
}

// SpanLinker::FlowKey of an end given by its columns.
int64_t FlowKeyOf(bool server, absl::string_view local_ip, uint32_t local_port,
                  absl::string_view peer_ip, uint32_t peer_port, uint64_t offset) {
  const absl::string_view server_ip = server ? local_ip : peer_ip;
  const absl::string_view client_ip = server ? peer_ip : local_ip;
  const uint32_t server_port = server ? local_port : peer_port;
  const uint32_t client_port = server ? peer_port : local_port;
  return ToBigint(offset ^ (uint64_t{server_port} << 48) ^ (uint64_t{client_port} << 32) ^
                  (FoldIp(server_ip) << 20) ^ (FoldIp(client_ip) << 4));
}

// One span in an exchange group.
struct Member {
  int64_t id;
  bool server;
  int64_t local_parent;  // 0 = none
  int64_t parent;        // as stored now, 0 = NULL
  int64_t start_ns;
  std::string exchange;  // ExchangeOf
  size_t position;       // in the batch, or kStored
  int64_t client_key = 0;  // SpanLinker::ClientKey, 0 = none
  int64_t request_hash = 0;
  int64_t request_offset = 0;
  bool taken = false;    // a client some server span has as parent already
  std::string client_end;  // the client's address and port (ClientEndOf)
};
constexpr size_t kStored = static_cast<size_t>(-1);
// Link's runs of spans by flow key hold batch positions, or this plus a stored span's
// position among the probe's rows.
constexpr size_t kStoredBase = size_t{1} << 62;

// What identifies one exchange exactly: server and client addresses, request offset.
std::string ExchangeOf(bool server, absl::string_view local_ip, uint32_t local_port,
                       absl::string_view peer_ip, uint32_t peer_port, uint64_t offset) {
  const absl::string_view server_ip = server ? local_ip : peer_ip;
  const absl::string_view client_ip = server ? peer_ip : local_ip;
  const uint32_t server_port = server ? local_port : peer_port;
  const uint32_t client_port = server ? peer_port : local_port;
  std::string key;
  key.reserve(server_ip.size() + client_ip.size() + 18);
  key.push_back(static_cast<char>(server_ip.size()));
  key.append(server_ip.data(), server_ip.size());
  key.push_back(static_cast<char>(client_ip.size()));
  key.append(client_ip.data(), client_ip.size());
  key.append(reinterpret_cast<const char*>(&server_port), sizeof(server_port));
  key.append(reinterpret_cast<const char*>(&client_port), sizeof(client_port));
  key.append(reinterpret_cast<const char*>(&offset), sizeof(offset));
  return key;
}

// The client's end of a connection (its address and port) as either end saw it: what a
// Service's DNAT keeps while it rewrites the server's end.
std::string ClientEndOf(bool server, absl::string_view local_ip, uint32_t local_port,
                        absl::string_view peer_ip, uint32_t peer_port) {
  const absl::string_view ip = server ? peer_ip : local_ip;
  const uint32_t port = server ? peer_port : local_port;
  std::string key(ip.data(), ip.size());
  key.append(reinterpret_cast<const char*>(&port), sizeof(port));
  return key;
}

Member NewMember(const NewSpan& s, size_t position) {
  const v1::Span& span = *s.span;
  const bool server = span.kind() == v1::SPAN_KIND_SERVER;
  return Member{s.id,
                server,
                ToBigint(span.parent_span_id()),
                s.parent,
                span.start_ns(),
                ExchangeOf(server, span.local().ip(), span.local().port(), span.peer().ip(),
                           span.peer().port(), span.request_offset()),
                position,
                SpanLinker::ClientKey(span),
                ToBigint(span.request_hash()),
                ToBigint(span.request_offset()),
                false,
                ClientEndOf(server, span.local().ip(), span.local().port(), span.peer().ip(),
                            span.peer().port())};
}

// The client span `server` should have as parent among `members`: of those `fits`
// accepts, the nearest in start time within `window`, ties to the lower id; 0 if none.
template <typename Fits>
int64_t NearestClient(const std::vector<Member>& members, const Member& server, Fits fits,
                      int64_t window = SpanLinker::kMatchWindowNs) {
  int64_t best = 0;
  int64_t best_distance = 0;
  for (const Member& client : members) {
    if (client.server || !fits(client)) continue;
    const int64_t distance = std::llabs(client.start_ns - server.start_ns);
    if (distance > window) continue;
    if (best == 0 || distance < best_distance ||
        (distance == best_distance && client.id < best)) {
      best = client.id;
      best_distance = distance;
    }
  }
  return best;
}

// For each server without a local parent among `members` (spans sharing a flow key),
// the client it should have as parent: the nearest member of its exact exchange (see
// NearestClient). Calls `decided(server, best)`.
template <typename Fn>
void ChooseClients(const std::vector<Member>& members, Fn decided) {
  for (const Member& server : members) {
    if (!server.server || server.local_parent != 0) continue;
    decided(server, NearestClient(members, server, [&](const Member& client) {
              return client.exchange == server.exchange;
            }));
  }
}

// Among `members` (spans sharing a client key), for each server that may take a client
// by its end (`open(server)`), the nearest client (see NearestClient) on another
// connection than the server's own whose address and port are the server's peer (a
// Service's DNAT rewrites only the server's end), at the same request offset, with the
// same request fingerprint when both have one, and not already some server's parent.
// Calls `decided(server, best)`.
template <typename Open, typename Fn>
void ChooseByClientEnd(const std::vector<Member>& members, Open open, Fn decided) {
  // Most runs are a server alone with no client traced.
  if (std::none_of(members.begin(), members.end(), [](const Member& m) { return !m.server; })) {
    return;
  }
  for (const Member& server : members) {
    if (!server.server || server.local_parent != 0 || !open(server)) continue;
    decided(server, NearestClient(members, server, [&](const Member& client) {
              return (client.request_hash == server.request_hash ||
                      client.request_hash == 0 || server.request_hash == 0) &&
                     client.request_offset == server.request_offset &&
                     client.client_end == server.client_end &&
                     client.exchange != server.exchange && !client.taken &&
                     std::none_of(members.begin(), members.end(), [&](const Member& other) {
                       return other.server && other.exchange == client.exchange;
                     });
            }, SpanLinker::kTranslatedWindowNs));
  }
}

// Runs of equal keys in sorted (key, position) pairs: calls `run(begin, end)` for each run
// of at least `min_size`.
template <typename Fn>
void ForEachRun(const std::vector<std::pair<int64_t, size_t>>& sorted, size_t min_size, Fn run) {
  for (size_t begin = 0, end = 0; begin < sorted.size(); begin = end) {
    for (end = begin + 1; end < sorted.size() && sorted[end].first == sorted[begin].first;) {
      ++end;
    }
    if (end - begin >= min_size) run(begin, end);
  }
}

// The batch's spans by id, without a node allocation per span.
class IdIndex {
 public:
  explicit IdIndex(const std::vector<NewSpan>& spans) {
    pairs_.reserve(spans.size());
    for (size_t i = 0; i < spans.size(); ++i) pairs_.emplace_back(spans[i].id, i);
    std::sort(pairs_.begin(), pairs_.end());
  }
  // The position of `id` in the batch, or kStored if it is not in it.
  size_t Find(int64_t id) const {
    auto it = std::lower_bound(pairs_.begin(), pairs_.end(), std::make_pair(id, size_t{0}));
    return it != pairs_.end() && it->first == id ? it->second : kStored;
  }

 private:
  std::vector<std::pair<int64_t, size_t>> pairs_;
};

}  // namespace

bool SpanLinker::HasFlow(const v1::Span& span) {
  return span.local().port() != 0 && span.peer().port() != 0;
}

int64_t SpanLinker::ClientKey(const v1::Span& span) {
  if (!HasFlow(span)) return 0;
  const bool server = span.kind() == v1::SPAN_KIND_SERVER;
  const v1::Endpoint& client_end = server ? span.peer() : span.local();
  const int64_t key = ToBigint(span.request_offset() ^ (uint64_t{client_end.port()} << 32) ^
                               (FoldIp(client_end.ip()) << 8));
  return key == 0 ? 1 : key;  // 0 means none
}

int64_t SpanLinker::FlowKey(const v1::Span& span) {
  return FlowKeyOf(span.kind() == v1::SPAN_KIND_SERVER, span.local().ip(),
                   span.local().port(), span.peer().ip(), span.peer().port(),
                   span.request_offset());
}

void SpanLinker::Prepare(pqxx::connection& conn) {
  conn.prepare(kLockStatement, kLockSql);
  conn.prepare(kProbeStatement, kProbeSql);
  conn.prepare(kSetParentsStatement, kSetParentsSql);
  conn.prepare(kRelabelStatement, kRelabelSql);
  conn.prepare(kSummariesStatement, kSummariesSql);
}

void SpanLinker::PrelinkBatch(std::vector<NewSpan>& spans) {
  const IdIndex index(spans);

  // Local parents, then each server without one to its nearest client in the batch:
  // spans sorted by flow key, and only runs of more than one span looked at closer.
  std::vector<std::pair<int64_t, size_t>> by_key;
  by_key.reserve(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    spans[i].parent = ToBigint(spans[i].span->parent_span_id());
    if (HasFlow(*spans[i].span)) by_key.emplace_back(FlowKey(*spans[i].span), i);
  }
  std::sort(by_key.begin(), by_key.end());
  std::vector<Member> members;
  ForEachRun(by_key, 2, [&](size_t begin, size_t end) {
    members.clear();
    for (size_t k = begin; k < end; ++k) {
      members.push_back(NewMember(spans[by_key[k].second], by_key[k].second));
    }
    ChooseClients(members, [&](const Member& server, int64_t best) {
      spans[server.position].parent = best;
    });
  });

  // Then servers left without a client take one whose end is their peer (through a
  // Service's address translation).
  std::vector<std::pair<int64_t, size_t>> by_client;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (const int64_t key = ClientKey(*spans[i].span); key != 0) {
      by_client.emplace_back(key, i);
    }
  }
  std::sort(by_client.begin(), by_client.end());
  ForEachRun(by_client, 2, [&](size_t begin, size_t end) {
    members.clear();
    for (size_t k = begin; k < end; ++k) {
      members.push_back(NewMember(spans[by_client[k].second], by_client[k].second));
    }
    ChooseByClientEnd(
        members, [&](const Member& server) { return spans[server.position].parent == 0; },
        [&](const Member& server, int64_t best) { spans[server.position].parent = best; });
  });

  // Trace id: the topmost ancestor in the batch. A chain that does not end within the
  // batch's size or the depth limit (a cycle of bogus ids) is left to the relabel walk:
  // such a span keeps its own id, which Link takes as "not settled".
  const size_t limit = std::min(spans.size(), static_cast<size_t>(kMaxTraceDepth));
  for (NewSpan& s : spans) {
    const NewSpan* top = &s;
    bool ended = false;
    for (size_t depth = 0; depth <= limit; ++depth) {
      const size_t parent = top->parent == 0 ? kStored : index.Find(top->parent);
      if (parent == kStored) {
        ended = true;
        break;
      }
      top = &spans[parent];
    }
    s.trace_id = ended ? top->id : s.id;
  }
}

void SpanLinker::Link(pqxx::transaction_base& tx, const std::string& agent_id,
                      uint64_t batch_id, const std::vector<NewSpan>& spans, bool prelinked,
                      std::vector<int64_t>* traces_touched) {
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

  const IdIndex index(spans);
  std::vector<int64_t> ids;
  ids.reserve(spans.size());
  // (flow key, position in the batch or kStoredBase + position in `stored`) of every
  // span with a flow.
  std::vector<std::pair<int64_t, size_t>> by_key;
  by_key.reserve(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    ids.push_back(spans[i].id);
    if (HasFlow(*spans[i].span)) by_key.emplace_back(FlowKey(*spans[i].span), i);
  }
  std::vector<int64_t> keys;  // sorted, unique: every flow key of the batch
  keys.reserve(by_key.size());
  for (const auto& [key, position] : by_key) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  // What the batch asks by client end: for its servers without a client yet, stored
  // clients; for its clients, stored servers without any parent; within the matching
  // window of the batch's start times.
  std::vector<int64_t> batch_client_keys;  // sorted, unique: every client key of the batch
  std::vector<int64_t> server_keys, client_keys;  // sorted, unique
  int64_t earliest = INT64_MAX, latest = INT64_MIN;
  for (const NewSpan& s : spans) {
    const int64_t key = ClientKey(*s.span);
    if (key == 0) continue;
    batch_client_keys.push_back(key);
    if (s.span->kind() == v1::SPAN_KIND_CLIENT) {
      client_keys.push_back(key);
    } else if (s.parent == 0 && s.span->parent_span_id() == 0) {
      server_keys.push_back(key);
    } else {
      continue;
    }
    earliest = std::min(earliest, s.span->start_ns());
    latest = std::max(latest, s.span->start_ns());
  }
  for (std::vector<int64_t>* v : {&batch_client_keys, &server_keys, &client_keys}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  auto contains = [](const std::vector<int64_t>& sorted, int64_t key) {
    return std::binary_search(sorted.begin(), sorted.end(), key);
  };
  auto in_window = [&](int64_t start_ns) {
    return earliest <= latest && start_ns >= earliest - kTranslatedWindowNs &&
           start_ns <= latest + kTranslatedWindowNs;
  };

  // Stored spans sharing a client key with the batch, and the batch's spans with stored
  // children.
  std::vector<Member> stored;
  std::vector<int64_t> has_stored_child;
  // (client key, kStoredBase + position in `stored`) of stored spans sharing one with
  // the batch.
  std::vector<std::pair<int64_t, size_t>> by_client;
  for (const auto& row : tx.exec_prepared(kProbeStatement, BigintArrayLiteral(batch_client_keys),
                                          BigintArrayLiteral(ids), ToBigint(batch_id),
                                          agent_id)) {
    if (row[0].as<int>() == 2) {
      has_stored_child.push_back(row[1].as<int64_t>());
      continue;
    }
    const int kind = row[2].as<int>();
    const bool server = kind == v1::SPAN_KIND_SERVER;
    const pqxx::binarystring local_ip_bytes(row[6]);
    const pqxx::binarystring peer_ip_bytes(row[8]);
    const absl::string_view local_ip(local_ip_bytes.get(), local_ip_bytes.size());
    const absl::string_view peer_ip(peer_ip_bytes.get(), peer_ip_bytes.size());
    const auto local_port = row[7].as<uint32_t>();
    const auto peer_port = row[9].as<uint32_t>();
    const auto offset = static_cast<uint64_t>(row[10].as<int64_t>());
    Member member{row[1].as<int64_t>(),
                  server,
                  row[3].as<int64_t>(),
                  row[4].as<int64_t>(),
                  row[5].as<int64_t>(),
                  ExchangeOf(server, local_ip, local_port, peer_ip, peer_port, offset),
                  kStored,
                  row[12].as<int64_t>(),
                  row[11].as<int64_t>(),
                  static_cast<int64_t>(offset),
                  row[13].as<bool>(),
                  ClientEndOf(server, local_ip, local_port, peer_ip, peer_port)};
    // An end of one of the batch's exchanges (its flow key), whenever it started: it
    // joins the run of that key, which must hold every stored span of the key, or its
    // servers would choose among part of their candidates.
    const int64_t flow_key = FlowKeyOf(server, local_ip, local_port, peer_ip, peer_port, offset);
    const bool same_flow = contains(keys, flow_key);
    // Within the window, a client that a server of the batch without a client may take,
    // or a server without any parent that a client of the batch may be.
    const bool by_end =
        in_window(member.start_ns) &&
        (server ? member.parent == 0 && member.local_parent == 0 &&
                      contains(client_keys, member.client_key)
                : kind == v1::SPAN_KIND_CLIENT && contains(server_keys, member.client_key));
    if (!same_flow && !by_end) continue;
    const size_t at = kStoredBase + stored.size();
    stored.push_back(std::move(member));
    by_client.emplace_back(stored.back().client_key, at);
    if (same_flow) by_key.emplace_back(flow_key, at);
  }
  std::sort(has_stored_child.begin(), has_stored_child.end());

  // Every server without a local parent in a run of spans sharing a flow key chooses its
  // client afresh among the run; only those whose choice differs from what is stored
  // change. After linking in memory, only runs with a stored span can change.
  // (A server decided by its own connection keeps that decision: `exact`, by id.)
  std::unordered_map<int64_t, int64_t> exact;
  std::unordered_map<int64_t, int64_t> decided;  // server id -> new parent, if it changes
  std::vector<bool> changed_in_batch(spans.size(), false);
  auto decide = [&](const Member& server, int64_t current, int64_t best) {
    if (best == current) {
      decided.erase(server.id);
      return;
    }
    decided[server.id] = best;
    if (server.position != kStored) changed_in_batch[server.position] = true;
  };
  std::sort(by_key.begin(), by_key.end());
  std::vector<Member> members;
  // The members of a run: stored ones as probed, the batch's as linked so far.
  auto gather = [&](const std::vector<std::pair<int64_t, size_t>>& sorted, size_t begin,
                    size_t end) {
    members.clear();
    for (size_t k = begin; k < end; ++k) {
      const size_t at = sorted[k].second;
      members.push_back(at >= kStoredBase ? stored[at - kStoredBase] : NewMember(spans[at], at));
    }
  };
  ForEachRun(by_key, 1, [&](size_t begin, size_t end) {
    const bool has_stored = std::any_of(by_key.begin() + begin, by_key.begin() + end,
                                        [](const auto& k) { return k.second >= kStoredBase; });
    if (prelinked ? !has_stored : end - begin < 2) return;
    gather(by_key, begin, end);
    ChooseClients(members, [&](const Member& server, int64_t best) {
      exact[server.id] = best;
      // No client on its own connection: a parent it has came from its bytes (below).
      if (best != 0) decide(server, server.parent, best);
    });
  });

  // Servers without a client on their own connection, by the client's end: the batch's,
  // and the stored ones that share a client key with it (a late client through a Service).
  for (size_t i = 0; i < spans.size(); ++i) {
    if (const int64_t key = ClientKey(*spans[i].span); key != 0) {
      by_client.emplace_back(key, i);
    }
  }
  std::sort(by_client.begin(), by_client.end());
  ForEachRun(by_client, 2, [&](size_t begin, size_t end) {
    // Every run, even one the batch alone makes up: its choices in memory may have just
    // been undone by the look-up by connection above, and recomputing them is cheap.
    gather(by_client, begin, end);
    // The parent a server has now: as decided above, else as stored (or set in memory).
    auto current = [&](const Member& server) {
      auto d = decided.find(server.id);
      return d != decided.end() ? d->second : server.parent;
    };
    ChooseByClientEnd(
        members,
        [&](const Member& server) {
          auto e = exact.find(server.id);
          if (e != exact.end()) return e->second == 0;
          // Not looked at by connection: free if it has no parent, or one that the client's
          // end gave it (a client of this run on another connection).
          const int64_t now = current(server);
          return now == 0 ||
                 std::any_of(members.begin(), members.end(), [&](const Member& m) {
                   return !m.server && m.id == now && m.exchange != server.exchange;
                 });
        },
        [&](const Member& server, int64_t best) { decide(server, server.parent, best); });
  });

  std::vector<int64_t> changed_ids;
  std::vector<int64_t> changed_parents;
  for (const auto& [id, parent] : decided) {
    changed_ids.push_back(id);
    changed_parents.push_back(parent);
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
  for (size_t i = 0; i < spans.size(); ++i) {
    const NewSpan& s = spans[i];
    if (changed_in_batch[i]) continue;  // already in
    const bool unsettled = s.parent != 0 && (!prelinked || index.Find(s.parent) == kStored ||
                                             s.trace_id == s.id);
    if (unsettled ||
        std::binary_search(has_stored_child.begin(), has_stored_child.end(), s.id)) {
      relabel.push_back(s.id);
    }
  }

  // Traces whose summary may change: those the walk touched, and those of more than one
  // span that the batch formed in memory.
  std::vector<int64_t> affected;
  if (!relabel.empty()) {
    for (const auto& row : tx.exec_prepared(kRelabelStatement, BigintArrayLiteral(relabel),
                                            kMaxTraceDepth)) {
      affected.push_back(row[0].as<int64_t>());
    }
  }
  if (prelinked) {
    for (const NewSpan& s : spans) {
      if (s.trace_id != s.id) affected.push_back(s.trace_id);
    }
  }
  if (traces_touched != nullptr) {
    // Every span the walk did not reach keeps the trace id it was stored with; the walk's
    // labels and the traces it took spans from are in `affected` already.
    std::sort(relabel.begin(), relabel.end());
    for (const NewSpan& s : spans) {
      if (!std::binary_search(relabel.begin(), relabel.end(), s.id)) {
        traces_touched->push_back(s.trace_id);
      }
    }
    traces_touched->insert(traces_touched->end(), affected.begin(), affected.end());
  }
  if (!affected.empty()) {
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    tx.exec_prepared(kSummariesStatement, BigintArrayLiteral(affected));
  }
}

}  // namespace reptrace::controller

#include "controller/store.h"

#include <exception>
#include <algorithm>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/ids.h"
#include "common/status_macros.h"
#include "controller/config_validation.h"
#include "controller/internal/pg_util.h"
#include "controller/schema.h"
#include "controller/span_linker.h"

namespace reptrace::controller {
namespace {

using internal::DatabaseError;
using internal::FromBigint;
using internal::ToBigint;

// Columns the writer COPYs into spans (or the staging table), in the order of SpanRow.
const std::vector<std::string>& SpanColumns() {
  static const auto* columns = new std::vector<std::string>{
      "span_id",        "trace_id",             "parent_span_id", "client_key",
      "local_parent_span_id", "kind",          "service",
      "node",           "pid",                  "tid",           "process",
      "name",           "start_ns",             "end_ns",        "status",
      "status_message", "local_ip",             "local_port",    "peer_ip",
      "peer_port",      "request_offset",       "request_bytes", "response_offset",
      "response_bytes", "request_hash",         "response_hash", "connection_id",
      "attributes",     "agent_id",             "batch_id"};
  return *columns;
}

// PostgreSQL text cannot hold NUL; an agent could send it. Dropped.
std::string WithoutNul(const std::string& text) {
  if (text.find('\0') == std::string::npos) return text;
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c != '\0') out.push_back(c);
  }
  return out;
}

// The COPY rows of `spans`, in the order of SpanColumns, each field in its column's type.
absl::string_view SpanRows(const std::string& agent_id, uint64_t batch_id,
                           const std::vector<NewSpan>& spans, internal::CopyBinary* rows) {
  static const int16_t kFields = static_cast<int16_t>(SpanColumns().size());
  rows->Clear();
  for (const NewSpan& s : spans) {
    const v1::Span& span = *s.span;
    rows->StartRow(kFields);
    rows->Int8(s.id);
    rows->Int8(s.trace_id);
    if (s.parent == 0) {
      rows->Null();
    } else {
      rows->Int8(s.parent);
    }
    if (const int64_t key = SpanLinker::ClientKey(span); key != 0) {
      rows->Int8(key);
    } else {
      rows->Null();
    }
    rows->Int8(ToBigint(span.parent_span_id()));
    // kind and status are enum values validation checked; ports are at most 65535.
    rows->Int2(static_cast<int16_t>(span.kind()));
    rows->Text(span.service());
    rows->Text(span.node());
    rows->Int8(span.pid());
    rows->Int8(span.tid());
    rows->Text(span.process());
    rows->Text(span.name());
    rows->Int8(span.start_ns());
    rows->Int8(span.end_ns());
    rows->Int2(static_cast<int16_t>(span.status()));
    rows->Text(span.status_message());
    rows->Bytea(span.local().ip());
    rows->Int4(static_cast<int32_t>(span.local().port()));
    rows->Bytea(span.peer().ip());
    rows->Int4(static_cast<int32_t>(span.peer().port()));
    rows->Int8(ToBigint(span.request_offset()));
    rows->Int8(ToBigint(span.request_bytes()));
    rows->Int8(ToBigint(span.response_offset()));
    rows->Int8(ToBigint(span.response_bytes()));
    rows->Int8(ToBigint(span.request_hash()));
    rows->Int8(ToBigint(span.response_hash()));
    rows->Int8(ToBigint(span.connection_id()));
    rows->JsonbObject(span.attributes());
    rows->Text(agent_id);
    rows->Int8(ToBigint(batch_id));
  }
  return rows->Finish();
}

// Writer statements.

// $1 agent, $2 batch, $3 spans in it, $4 spans stored, $5 spans rejected, $6 now. Records
// the batch and, unless it was stored before (then it returns 0), counts it for its agent.
constexpr char kRecordBatchStatement[] = "writer_record_batch";
constexpr char kRecordBatchSql[] = R"sql(
WITH batch AS (
  INSERT INTO ingested_batches (agent_id, batch_id, span_count) VALUES ($1, $2, $3)
  ON CONFLICT (agent_id, batch_id) DO NOTHING RETURNING batch_id
), agent AS (
  UPDATE agents SET
    batches_stored = batches_stored + 1, spans_stored = spans_stored + $4,
    spans_rejected = spans_rejected + $5, last_seen_ns = $6
  WHERE agent_id = $1 AND EXISTS (SELECT 1 FROM batch)
)
SELECT count(*) FROM batch
)sql";

constexpr char kInsertStagedStatement[] = "writer_insert_staged";
std::string InsertStagedSql() {
  const std::string columns = absl::StrJoin(SpanColumns(), ", ");
  return absl::StrCat("INSERT INTO ", kSpansTable, " (", columns, ") SELECT ", columns,
                      " FROM ", kSpansStagingTable,
                      " ON CONFLICT (span_id) DO NOTHING RETURNING span_id");
}

constexpr char kAgentConnectedStatement[] = "writer_agent_connected";
constexpr char kAgentConnectedSql[] = R"sql(
INSERT INTO agents (agent_id, node, agent_version, hostname, connected, connected_at_ns,
                    last_seen_ns)
VALUES ($1, $2, $3, $4, true, $5, $5)
ON CONFLICT (agent_id) DO UPDATE SET
  node = EXCLUDED.node, agent_version = EXCLUDED.agent_version,
  hostname = EXCLUDED.hostname, connected = true,
  connected_at_ns = EXCLUDED.connected_at_ns, last_seen_ns = EXCLUDED.last_seen_ns
)sql";

constexpr char kAgentCountersStatement[] = "writer_agent_counters";
constexpr char kAgentCountersSql[] = R"sql(
UPDATE agents SET
  processes_connected = $2, events_received = $3, records_malformed = $4,
  hook_events_dropped = $5, spans_built = $6, spans_dropped = $7, batches_sent = $8,
  batches_acked = $9, batches_resent = $10, events_without_connection = $11,
  inband_peers_not_hooked = $12, hook_events_rate_limited = $13, last_seen_ns = $14
WHERE agent_id = $1
)sql";

// $1: ids of traces a batch touched (distinct), $2: now. Sampling decides each once it
// has been quiet for the decision wait: a touch restarts its wait.
constexpr char kMarkPendingStatement[] = "writer_mark_pending";
constexpr char kMarkPendingSql[] = R"sql(
INSERT INTO sampling_pending (trace_id, touched_ns)
SELECT t.id, $2 FROM unnest($1::bigint[]) AS t(id)
ON CONFLICT (trace_id) DO UPDATE
  SET touched_ns = GREATEST(sampling_pending.touched_ns, EXCLUDED.touched_ns)
)sql";

constexpr char kAgentDisconnectedStatement[] = "writer_agent_disconnected";
constexpr char kAgentDisconnectedSql[] =
    "UPDATE agents SET connected = false, last_seen_ns = $2"
    " WHERE agent_id = $1 AND connected_at_ns = $3";

constexpr char kAgentConfigAppliedStatement[] = "writer_agent_config_applied";
constexpr char kAgentConfigAppliedSql[] =
    "UPDATE agents SET config_version = $2, last_seen_ns = $3 WHERE agent_id = $1";

// Query statements.

// Traces of more than one span have a summary row; a trace of one span is its span, a
// root (trace_id = span_id) without a summary row. The newest of each kind, merged.
// Single-span traces are indexed by (service, start): without a service, the services
// are enumerated through that index (one look-up each) and the newest of each merged.
// Two statements rather than one with "$1 = '' OR ...": they use the index differently.
constexpr char kListTracesStatement[] = "query_list_traces";
constexpr char kListTracesSql[] = R"sql(
WITH RECURSIVE services(service) AS (
  SELECT min(s.service COLLATE "C") FROM spans s WHERE s.trace_id = s.span_id
  UNION ALL
  SELECT (SELECT min(s.service COLLATE "C") FROM spans s
           WHERE s.trace_id = s.span_id AND s.service COLLATE "C" > v.service)
    FROM services v WHERE v.service IS NOT NULL
)
SELECT * FROM (
  (SELECT trace_id, start_ns, duration_ns, span_count, root_service, root_name, status,
          array_to_json(services)::text
     FROM traces
    ORDER BY start_ns DESC, trace_id DESC
    LIMIT $1)
  UNION ALL
  (SELECT single.*
     FROM services v CROSS JOIN LATERAL (
       SELECT s.span_id, s.start_ns, s.end_ns - s.start_ns, 1, s.service, s.name, s.status,
              json_build_array(s.service)::text
         FROM spans s
        WHERE s.trace_id = s.span_id AND s.service COLLATE "C" = v.service
          AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = s.span_id)
        ORDER BY s.start_ns DESC, s.span_id DESC
        LIMIT $1) AS single
    WHERE v.service IS NOT NULL)
) AS listed(trace_id, start_ns, duration_ns, span_count, root_service, root_name, status,
            services)
 ORDER BY start_ns DESC, trace_id DESC
 LIMIT $1
)sql";

constexpr char kListServiceTracesStatement[] = "query_list_service_traces";
constexpr char kListServiceTracesSql[] = R"sql(
SELECT * FROM (
  (SELECT trace_id, start_ns, duration_ns, span_count, root_service, root_name, status,
          array_to_json(services)::text
     FROM traces
    WHERE services @> ARRAY[$1::text]
    ORDER BY start_ns DESC, trace_id DESC
    LIMIT $2)
  UNION ALL
  (SELECT s.span_id, s.start_ns, s.end_ns - s.start_ns, 1, s.service, s.name, s.status,
          json_build_array(s.service)::text
     FROM spans s
    WHERE s.trace_id = s.span_id AND s.service COLLATE "C" = $1::text
      AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = s.span_id)
    ORDER BY s.start_ns DESC, s.span_id DESC
    LIMIT $2)
) AS listed(trace_id, start_ns, duration_ns, span_count, root_service, root_name, status,
            services)
 ORDER BY start_ns DESC, trace_id DESC
 LIMIT $2
)sql";

constexpr char kTraceOfSpanStatement[] = "query_trace_of_span";
constexpr char kTraceOfSpanSql[] = "SELECT trace_id FROM spans WHERE span_id = $1";

// The spans of trace $1: its root, and the other members (a partial index holds only
// spans that are not their trace's root).
constexpr char kTraceSpansStatement[] = "query_trace_spans";
constexpr char kTraceSpansSql[] = R"sql(
SELECT span_id, trace_id, parent_span_id, kind, service, node, pid, tid, process, name,
       start_ns, end_ns, status, status_message, local_ip, local_port, peer_ip, peer_port,
       request_offset, request_bytes, response_offset, response_bytes, request_hash,
       response_hash, connection_id, attributes::text
  FROM spans
 WHERE span_id = $1 AND trace_id = $1
UNION ALL
SELECT span_id, trace_id, parent_span_id, kind, service, node, pid, tid, process, name,
       start_ns, end_ns, status, status_message, local_ip, local_port, peer_ip, peer_port,
       request_offset, request_bytes, response_offset, response_bytes, request_hash,
       response_hash, connection_id, attributes::text
  FROM spans
 WHERE trace_id = $1 AND trace_id <> span_id
 ORDER BY start_ns, span_id
)sql";

constexpr char kListAgentsStatement[] = "query_list_agents";
constexpr char kListAgentsSql[] = R"sql(
SELECT agent_id, node, agent_version, hostname, connected, connected_at_ns, last_seen_ns,
       batches_stored, spans_stored, processes_connected, events_received,
       records_malformed, hook_events_dropped, spans_built, spans_dropped, batches_sent,
       batches_acked, batches_resent, events_without_connection, inband_peers_not_hooked,
       config_version, hook_events_rate_limited
  FROM agents
 ORDER BY node, agent_id
)sql";

// Config statements. Every version's row as (version, document, author, created ns).
#define REPTRACE_CONFIG_COLUMNS \
  "version, document, author, (extract(epoch FROM created_at) * 1000000)::bigint * 1000"
constexpr char kConfigNewestStatement[] = "config_newest";
constexpr char kConfigNewestSql[] = "SELECT " REPTRACE_CONFIG_COLUMNS
                                    " FROM config_versions ORDER BY version DESC LIMIT 1";
constexpr char kConfigHistoryStatement[] = "config_history";
constexpr char kConfigHistorySql[] = "SELECT " REPTRACE_CONFIG_COLUMNS
                                     " FROM config_versions ORDER BY version DESC LIMIT $1";
constexpr char kConfigAfterStatement[] = "config_after";
constexpr char kConfigAfterSql[] =
    "SELECT " REPTRACE_CONFIG_COLUMNS
    " FROM config_versions WHERE version > $1 ORDER BY version LIMIT $2";
constexpr char kConfigLockStatement[] = "config_lock";
constexpr char kConfigLockSql[] = "SELECT pg_advisory_xact_lock($1)";
constexpr char kConfigCurrentStatement[] = "config_current";
constexpr char kConfigCurrentSql[] = "SELECT coalesce(max(version), 0) FROM config_versions";
constexpr char kConfigInsertStatement[] = "config_insert";
constexpr char kConfigInsertSql[] =
    "INSERT INTO config_versions (version, document, author) VALUES ($1, $2, $3)"
    " RETURNING (extract(epoch FROM created_at) * 1000000)::bigint * 1000";
constexpr char kConfigNotifyStatement[] = "config_notify";
constexpr char kConfigNotifySql[] = "SELECT pg_notify($1, $2)";
#undef REPTRACE_CONFIG_COLUMNS

// Per agent: its counters, and what the controllers stored and rejected of its batches.
constexpr char kAgentStatsStatement[] = "query_agent_stats";
constexpr char kAgentStatsSql[] = R"sql(
SELECT agent_id, node, connected, events_received, spans_built, spans_stored,
       hook_events_dropped, hook_events_rate_limited, records_malformed,
       events_without_connection, spans_dropped, spans_rejected
  FROM agents
 ORDER BY node, agent_id
)sql";

// Sampling's counts by decision (TraceSampler::Decision), and the traces waiting.
constexpr char kSamplingStatsStatement[] = "query_sampling_stats";
constexpr char kSamplingStatsSql[] = R"sql(
SELECT decision, traces, spans FROM sampling_counts
UNION ALL
SELECT 0::smallint, count(*), 0 FROM sampling_pending
)sql";

constexpr int kDefaultTraceLimit = 20;
constexpr int kMaxTraceLimit = 1000;
constexpr int kDefaultConfigHistoryLimit = 20;
constexpr int kMaxConfigHistoryLimit = 1000;

// A config_versions row (kConfig*Sql's columns). DATA_LOSS if its document does not parse.
absl::Status ConfigVersionFromRow(const pqxx::row& row, v1::ConfigVersion* version) {
  version->set_version(FromBigint(row[0].as<int64_t>()));
  if (!version->mutable_config()->ParseFromString(pqxx::binarystring(row[1]).str())) {
    return absl::DataLossError(
        absl::StrCat("config version ", version->version(), " is not a TraceConfig"));
  }
  version->set_author(row[2].as<std::string>());
  version->set_created_ns(row[3].as<int64_t>());
  return absl::OkStatus();
}

void UpdateCounters(pqxx::transaction_base& tx, const std::string& agent_id,
                    const v1::AgentCounters& c, int64_t now_ns) {
  tx.exec_prepared(kAgentCountersStatement, agent_id, ToBigint(c.processes_connected()),
                   ToBigint(c.events_received()), ToBigint(c.records_malformed()),
                   ToBigint(c.hook_events_dropped()), ToBigint(c.spans_built()),
                   ToBigint(c.spans_dropped()), ToBigint(c.batches_sent()),
                   ToBigint(c.batches_acked()), ToBigint(c.batches_resent()),
                   ToBigint(c.events_without_connection()),
                   ToBigint(c.inband_peers_not_hooked()),
                   ToBigint(c.hook_events_rate_limited()), now_ns);
}

void SpanFromRow(const pqxx::row& row, v1::Span* span) {
  span->set_span_id(FromBigint(row[0].as<int64_t>()));
  span->set_trace_id(FromBigint(row[1].as<int64_t>()));
  span->set_parent_span_id(row[2].is_null() ? 0 : FromBigint(row[2].as<int64_t>()));
  span->set_kind(static_cast<v1::SpanKind>(row[3].as<int>()));
  span->set_service(row[4].as<std::string>());
  span->set_node(row[5].as<std::string>());
  span->set_pid(static_cast<uint32_t>(row[6].as<int64_t>()));
  span->set_tid(static_cast<uint32_t>(row[7].as<int64_t>()));
  span->set_process(row[8].as<std::string>());
  span->set_name(row[9].as<std::string>());
  span->set_start_ns(row[10].as<int64_t>());
  span->set_end_ns(row[11].as<int64_t>());
  span->set_status(static_cast<v1::SpanStatus>(row[12].as<int>()));
  span->set_status_message(row[13].as<std::string>());
  span->mutable_local()->set_ip(pqxx::binarystring(row[14]).str());
  span->mutable_local()->set_port(static_cast<uint32_t>(row[15].as<int64_t>()));
  span->mutable_peer()->set_ip(pqxx::binarystring(row[16]).str());
  span->mutable_peer()->set_port(static_cast<uint32_t>(row[17].as<int64_t>()));
  span->set_request_offset(FromBigint(row[18].as<int64_t>()));
  span->set_request_bytes(FromBigint(row[19].as<int64_t>()));
  span->set_response_offset(FromBigint(row[20].as<int64_t>()));
  span->set_response_bytes(FromBigint(row[21].as<int64_t>()));
  span->set_request_hash(FromBigint(row[22].as<int64_t>()));
  span->set_response_hash(FromBigint(row[23].as<int64_t>()));
  span->set_connection_id(FromBigint(row[24].as<int64_t>()));
  const auto attributes = nlohmann::json::parse(row[25].as<std::string>(), nullptr, false);
  if (attributes.is_object()) {
    for (const auto& [key, value] : attributes.items()) {
      if (value.is_string()) (*span->mutable_attributes())[key] = value.get<std::string>();
    }
  }
}

// Our statements are short look-ups; the planner cannot size a recursive walk or an
// array parameter and may estimate one costly enough for JIT compilation, which then
// takes hundreds of milliseconds per execution (seen on the relabel walk).
void DisableJit(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  tx.exec0("SET jit = off");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// SpanWriter

SpanWriter::SpanWriter(std::unique_ptr<pqxx::connection> conn,
                       const std::atomic<bool>* sampling_on)
    : conn_(std::move(conn)), sampling_on_(sampling_on) {}
SpanWriter::~SpanWriter() = default;

void SpanWriter::LinkAndMark(pqxx::transaction_base& tx, const std::string& agent,
                             uint64_t batch_id, const std::vector<NewSpan>& spans,
                             bool prelinked) {
  if (!sampling_on_->load(std::memory_order_relaxed)) {
    SpanLinker::Link(tx, agent, batch_id, spans, prelinked);
    return;
  }
  std::vector<int64_t> touched;
  SpanLinker::Link(tx, agent, batch_id, spans, prelinked, &touched);
  if (touched.empty()) return;
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  // Still under the link lock Link took: a sampler deciding these traces waits for it.
  tx.exec_prepared(kMarkPendingStatement, internal::BigintArrayLiteral(touched),
                   absl::GetCurrentTimeNanos());
}

absl::Status SpanWriter::Prepare() {
  try {
    DisableJit(*conn_);
    {
      // Every writer statement looks a few rows up by key among many. While the tables
      // are young the planner finds a sequential scan cheaper, and the generic plan it
      // makes then stays cached while the tables grow (seen: the relabel's update and
      // the linker's probe scanning all spans for each batch).
      pqxx::nontransaction tx(*conn_);
      tx.exec0("SET enable_seqscan = off");
    }
    conn_->prepare(kRecordBatchStatement, kRecordBatchSql);
    conn_->prepare(kAgentConnectedStatement, kAgentConnectedSql);
    conn_->prepare(kAgentCountersStatement, kAgentCountersSql);
    conn_->prepare(kAgentDisconnectedStatement, kAgentDisconnectedSql);
    conn_->prepare(kAgentConfigAppliedStatement, kAgentConfigAppliedSql);
    conn_->prepare(kMarkPendingStatement, kMarkPendingSql);
    SpanLinker::Prepare(*conn_);
  } catch (const std::exception& e) {
    return DatabaseError("cannot prepare span writer", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<WriteOutcome> SpanWriter::WriteBatch(const std::string& agent_id,
                                                    const v1::SpanBatch& batch,
                                                    int64_t spans_rejected) {
  const std::string agent = WithoutNul(agent_id);
  // A span id twice in one batch is stored once (the first).
  std::vector<NewSpan> spans;
  spans.reserve(batch.spans_size());
  {
    std::vector<std::pair<int64_t, int>> ids;  // sorted: no allocation per span
    ids.reserve(batch.spans_size());
    for (int i = 0; i < batch.spans_size(); ++i) {
      ids.emplace_back(ToBigint(batch.spans(i).span_id()), i);
    }
    std::sort(ids.begin(), ids.end());
    std::vector<bool> repeated(batch.spans_size(), false);
    for (size_t k = 1; k < ids.size(); ++k) {
      if (ids[k].first == ids[k - 1].first) repeated[ids[k].second] = true;
    }
    for (int i = 0; i < batch.spans_size(); ++i) {
      if (repeated[i]) continue;
      const v1::Span& span = batch.spans(i);
      spans.push_back(NewSpan{&span, ToBigint(span.span_id()), 0, 0});
    }
  }
  SpanLinker::PrelinkBatch(spans);
  try {
    return WriteNewSpans(agent, batch, spans, spans_rejected);
  } catch (const pqxx::unique_violation&) {
    // A span id is stored already: the slower way, which skips such spans.
  } catch (const std::exception& e) {
    return DatabaseError(absl::StrCat("cannot store batch ", batch.batch_id()), e);
  }
  try {
    return WriteStaged(agent, batch, spans, spans_rejected);
  } catch (const std::exception& e) {
    return DatabaseError(absl::StrCat("cannot store batch ", batch.batch_id()), e);
  }
}

WriteOutcome SpanWriter::WriteNewSpans(const std::string& agent, const v1::SpanBatch& batch,
                                       const std::vector<NewSpan>& spans,
                                       int64_t spans_rejected) {
  WriteOutcome outcome;
  pqxx::work tx(*conn_);
  // A concurrent insert of the same batch waits for the other transaction, then
  // conflicts: a batch resent on a second stream is still stored once. The agent's row
  // is updated here, before the link lock is taken, in every path: a writer never holds
  // the link lock while waiting for an agent row.
  const int64_t now_ns = absl::GetCurrentTimeNanos();
  const int64_t stored = static_cast<int64_t>(spans.size());
  if (tx.exec_prepared1(kRecordBatchStatement, agent, ToBigint(batch.batch_id()),
                        batch.spans_size(), stored, spans_rejected, now_ns)[0]
          .as<int64_t>() == 0) {
    tx.abort();
    outcome.duplicate = true;
    return outcome;
  }
  if (batch.has_counters()) UpdateCounters(tx, agent, batch.counters(), now_ns);
  if (!spans.empty()) {
    // Straight into spans, with the parents and trace ids linking in memory gave. A span
    // id stored before makes the COPY fail (unique_violation): the caller then takes the
    // staged way.
    internal::CopyRows(tx, kSpansTable, SpanColumns(),
                       SpanRows(agent, batch.batch_id(), spans, &copy_rows_));
    LinkAndMark(tx, agent, batch.batch_id(), spans, /*prelinked=*/true);
  }
  tx.commit();
  outcome.spans_inserted = static_cast<int>(stored);
  return outcome;
}

WriteOutcome SpanWriter::WriteStaged(const std::string& agent, const v1::SpanBatch& batch,
                                     const std::vector<NewSpan>& prelinked,
                                     int64_t spans_rejected) {
  WriteOutcome outcome;
  pqxx::work tx(*conn_);
  if (!staging_ready_) {
    // Per connection, shaped like spans. ON COMMIT DELETE ROWS: empty at the start of
    // every batch.
    tx.exec0(absl::StrCat("CREATE TEMP TABLE IF NOT EXISTS ", kSpansStagingTable, " (LIKE ",
                          kSpansTable, ") ON COMMIT DELETE ROWS"));
    conn_->prepare(kInsertStagedStatement, InsertStagedSql());
  }
  // Stored as inserted before any linking (the links made in memory may involve a span
  // that is not new); Link then treats every span as unlinked.
  std::vector<NewSpan> unlinked = prelinked;
  for (NewSpan& span : unlinked) {
    span.parent = ToBigint(span.span->parent_span_id());
    span.trace_id = span.id;
  }
  if (!unlinked.empty()) {
    internal::CopyRows(tx, kSpansStagingTable, SpanColumns(),
                       SpanRows(agent, batch.batch_id(), unlinked, &copy_rows_));
  }
  std::unordered_set<int64_t> inserted;
  for (const auto& row : tx.exec_prepared(kInsertStagedStatement)) {
    inserted.insert(row[0].as<int64_t>());
  }
  std::vector<NewSpan> spans;
  for (const NewSpan& span : unlinked) {
    if (inserted.count(span.id) > 0) spans.push_back(span);
  }
  const int64_t now_ns = absl::GetCurrentTimeNanos();
  if (tx.exec_prepared1(kRecordBatchStatement, agent, ToBigint(batch.batch_id()),
                        batch.spans_size(), static_cast<int64_t>(spans.size()),
                        spans_rejected, now_ns)[0]
          .as<int64_t>() == 0) {
    tx.abort();
    outcome.duplicate = true;
    return outcome;
  }
  if (batch.has_counters()) UpdateCounters(tx, agent, batch.counters(), now_ns);
  LinkAndMark(tx, agent, batch.batch_id(), spans, /*prelinked=*/false);
  tx.commit();
  staging_ready_ = true;
  outcome.spans_inserted = static_cast<int>(spans.size());
  return outcome;
}

absl::Status SpanWriter::AgentConnected(const v1::AgentHello& hello, int64_t now_ns) {
  try {
    pqxx::work tx(*conn_);
    tx.exec_prepared(kAgentConnectedStatement, WithoutNul(hello.agent_id()),
                     WithoutNul(hello.node()), WithoutNul(hello.agent_version()),
                     WithoutNul(hello.hostname()), now_ns);
    tx.commit();
  } catch (const std::exception& e) {
    return DatabaseError("cannot record agent", e);
  }
  return absl::OkStatus();
}

absl::Status SpanWriter::AgentCounters(const std::string& agent_id,
                                       const v1::AgentCounters& counters, int64_t now_ns) {
  try {
    pqxx::work tx(*conn_);
    UpdateCounters(tx, WithoutNul(agent_id), counters, now_ns);
    tx.commit();
  } catch (const std::exception& e) {
    return DatabaseError("cannot record agent counters", e);
  }
  return absl::OkStatus();
}

absl::Status SpanWriter::AgentDisconnected(const std::string& agent_id,
                                           int64_t connected_at_ns, int64_t now_ns) {
  try {
    pqxx::work tx(*conn_);
    tx.exec_prepared(kAgentDisconnectedStatement, WithoutNul(agent_id), now_ns,
                     connected_at_ns);
    tx.commit();
  } catch (const std::exception& e) {
    return DatabaseError("cannot record agent disconnection", e);
  }
  return absl::OkStatus();
}

absl::Status SpanWriter::AgentConfigApplied(const std::string& agent_id, uint64_t version,
                                            int64_t now_ns) {
  try {
    pqxx::work tx(*conn_);
    tx.exec_prepared(kAgentConfigAppliedStatement, WithoutNul(agent_id), ToBigint(version),
                     now_ns);
    tx.commit();
  } catch (const std::exception& e) {
    return DatabaseError("cannot record the agent's config version", e);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Store

Store::Store(std::string conninfo) : conninfo_(std::move(conninfo)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<pqxx::connection>> Store::Connect() {
  try {
    return std::make_unique<pqxx::connection>(conninfo_);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to database: ", internal::OneLine(e.what())));
  }
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& conninfo) {
  std::unique_ptr<Store> store(new Store(conninfo));
  ASSIGN_OR_RETURN(std::unique_ptr<pqxx::connection> conn, store->Connect());
  RETURN_IF_ERROR(ApplyMigrations(*conn).status());
  return store;
}

absl::StatusOr<std::unique_ptr<SpanWriter>> Store::NewWriter() {
  ASSIGN_OR_RETURN(std::unique_ptr<pqxx::connection> conn, Connect());
  std::unique_ptr<SpanWriter> writer(new SpanWriter(std::move(conn), &sampling_on_));
  RETURN_IF_ERROR(writer->Prepare());
  return writer;
}

absl::Status Store::RunQuery(absl::string_view what,
                             const std::function<void(pqxx::connection&)>& body) {
  // A pooled connection may have been dropped by the server since its last use (a
  // restart, a failover): then the query is tried once more on a new connection.
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<pqxx::connection> conn;
    {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty() && attempt == 0) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    const bool pooled = conn != nullptr;
    try {
      if (conn == nullptr) {
        ASSIGN_OR_RETURN(conn, Connect());
        DisableJit(*conn);
        conn->prepare(kListTracesStatement, kListTracesSql);
        conn->prepare(kListServiceTracesStatement, kListServiceTracesSql);
        conn->prepare(kTraceOfSpanStatement, kTraceOfSpanSql);
        conn->prepare(kTraceSpansStatement, kTraceSpansSql);
        conn->prepare(kListAgentsStatement, kListAgentsSql);
        conn->prepare(kAgentStatsStatement, kAgentStatsSql);
        conn->prepare(kSamplingStatsStatement, kSamplingStatsSql);
        conn->prepare(kConfigNewestStatement, kConfigNewestSql);
        conn->prepare(kConfigHistoryStatement, kConfigHistorySql);
        conn->prepare(kConfigAfterStatement, kConfigAfterSql);
        conn->prepare(kConfigLockStatement, kConfigLockSql);
        conn->prepare(kConfigCurrentStatement, kConfigCurrentSql);
        conn->prepare(kConfigInsertStatement, kConfigInsertSql);
        conn->prepare(kConfigNotifyStatement, kConfigNotifySql);
      }
      body(*conn);
    } catch (const pqxx::broken_connection& e) {
      if (pooled) continue;
      return DatabaseError(what, e);
    } catch (const std::exception& e) {
      return DatabaseError(what, e);  // the connection may be unusable: not reused
    }
    absl::MutexLock lock(&mu_);
    if (idle_.size() < kMaxIdleQueryConnections) idle_.push_back(std::move(conn));
    return absl::OkStatus();
  }
}

absl::StatusOr<std::vector<v1::TraceSummary>> Store::ListTraces(const std::string& service,
                                                                int limit) {
  if (limit <= 0) limit = kDefaultTraceLimit;
  if (limit > kMaxTraceLimit) limit = kMaxTraceLimit;
  std::vector<v1::TraceSummary> traces;
  RETURN_IF_ERROR(RunQuery("cannot list traces", [&](pqxx::connection& conn) {
    traces.clear();
    pqxx::read_transaction tx(conn);
    const pqxx::result rows =
        service.empty() ? tx.exec_prepared(kListTracesStatement, limit)
                        : tx.exec_prepared(kListServiceTracesStatement, service, limit);
    for (const auto& row : rows) {
      v1::TraceSummary& t = traces.emplace_back();
      t.set_trace_id(FromBigint(row[0].as<int64_t>()));
      t.set_start_ns(row[1].as<int64_t>());
      t.set_duration_ns(row[2].as<int64_t>());
      t.set_span_count(row[3].as<int>());
      t.set_root_service(row[4].as<std::string>());
      t.set_root_name(row[5].as<std::string>());
      t.set_status(static_cast<v1::SpanStatus>(row[6].as<int>()));
      const auto services = nlohmann::json::parse(row[7].as<std::string>(), nullptr, false);
      if (services.is_array()) {
        for (const auto& s : services) {
          if (s.is_string()) t.add_services(s.get<std::string>());
        }
      }
    }
    tx.commit();
  }));
  return traces;
}

absl::StatusOr<v1::Trace> Store::GetTrace(uint64_t id) {
  v1::Trace trace;
  bool found = false;
  RETURN_IF_ERROR(RunQuery("cannot get trace", [&](pqxx::connection& conn) {
    trace.Clear();
    // REPEATABLE READ: the trace id and its spans come from one snapshot.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn);
    const pqxx::result owner = tx.exec_prepared(kTraceOfSpanStatement, ToBigint(id));
    if (owner.empty()) return;
    const int64_t trace_id = owner[0][0].as<int64_t>();
    trace.set_trace_id(FromBigint(trace_id));
    for (const auto& row : tx.exec_prepared(kTraceSpansStatement, trace_id)) {
      SpanFromRow(row, trace.add_spans());
    }
    found = true;
    tx.commit();
  }));
  if (!found) return absl::NotFoundError(absl::StrCat("no trace or span ", FormatId(id)));
  return trace;
}

absl::StatusOr<std::vector<v1::AgentInfo>> Store::ListAgents() {
  std::vector<v1::AgentInfo> agents;
  RETURN_IF_ERROR(RunQuery("cannot list agents", [&](pqxx::connection& conn) {
    agents.clear();
    pqxx::read_transaction tx(conn);
    for (const auto& row : tx.exec_prepared(kListAgentsStatement)) {
      v1::AgentInfo& a = agents.emplace_back();
      a.set_agent_id(row[0].as<std::string>());
      a.set_node(row[1].as<std::string>());
      a.set_agent_version(row[2].as<std::string>());
      a.set_hostname(row[3].as<std::string>());
      a.set_connected(row[4].as<bool>());
      a.set_connected_at_ns(row[5].as<int64_t>());
      a.set_last_seen_ns(row[6].as<int64_t>());
      a.set_batches_stored(FromBigint(row[7].as<int64_t>()));
      a.set_spans_stored(FromBigint(row[8].as<int64_t>()));
      v1::AgentCounters* c = a.mutable_counters();
      c->set_processes_connected(FromBigint(row[9].as<int64_t>()));
      c->set_events_received(FromBigint(row[10].as<int64_t>()));
      c->set_records_malformed(FromBigint(row[11].as<int64_t>()));
      c->set_hook_events_dropped(FromBigint(row[12].as<int64_t>()));
      c->set_spans_built(FromBigint(row[13].as<int64_t>()));
      c->set_spans_dropped(FromBigint(row[14].as<int64_t>()));
      c->set_batches_sent(FromBigint(row[15].as<int64_t>()));
      c->set_batches_acked(FromBigint(row[16].as<int64_t>()));
      c->set_batches_resent(FromBigint(row[17].as<int64_t>()));
      c->set_events_without_connection(FromBigint(row[18].as<int64_t>()));
      c->set_inband_peers_not_hooked(FromBigint(row[19].as<int64_t>()));
      a.set_config_version(FromBigint(row[20].as<int64_t>()));
      c->set_hook_events_rate_limited(FromBigint(row[21].as<int64_t>()));
    }
    tx.commit();
  }));
  return agents;
}

absl::StatusOr<v1::GetStatsResponse> Store::GetStats() {
  v1::GetStatsResponse stats;
  RETURN_IF_ERROR(RunQuery("cannot get stats", [&](pqxx::connection& conn) {
    stats.Clear();
    // REPEATABLE READ: the agents and the sampling counts from one snapshot.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn);
    for (const auto& row : tx.exec_prepared(kAgentStatsStatement)) {
      v1::AgentStats& a = *stats.add_agents();
      a.set_agent_id(row[0].as<std::string>());
      a.set_node(row[1].as<std::string>());
      a.set_connected(row[2].as<bool>());
      a.set_events_received(FromBigint(row[3].as<int64_t>()));
      a.set_spans_built(FromBigint(row[4].as<int64_t>()));
      a.set_spans_stored(FromBigint(row[5].as<int64_t>()));
      a.set_hook_events_dropped(FromBigint(row[6].as<int64_t>()));
      a.set_hook_events_rate_limited(FromBigint(row[7].as<int64_t>()));
      a.set_records_malformed(FromBigint(row[8].as<int64_t>()));
      a.set_events_without_connection(FromBigint(row[9].as<int64_t>()));
      a.set_spans_dropped(FromBigint(row[10].as<int64_t>()));
      a.set_spans_rejected(FromBigint(row[11].as<int64_t>()));
    }
    v1::SamplingStats& sampling = *stats.mutable_sampling();
    for (const auto& row : tx.exec_prepared(kSamplingStatsStatement)) {
      const auto traces = FromBigint(row[1].as<int64_t>());
      const auto spans = FromBigint(row[2].as<int64_t>());
      v1::SamplingCount* count = nullptr;
      switch (row[0].as<int>()) {
        case 0: sampling.set_traces_pending(traces); continue;
        case 1: count = sampling.mutable_kept_error(); break;
        case 2: count = sampling.mutable_kept_slow(); break;
        case 3: count = sampling.mutable_kept_probability(); break;
        case 4: count = sampling.mutable_dropped_probability(); break;
        default: continue;  // a decision a newer controller counts
      }
      count->set_traces(traces);
      count->set_spans(spans);
    }
    tx.commit();
  }));
  return stats;
}

absl::StatusOr<v1::ConfigVersion> Store::GetConfig() {
  v1::ConfigVersion version;
  bool found = false;
  absl::Status parsed;
  RETURN_IF_ERROR(RunQuery("cannot get config", [&](pqxx::connection& conn) {
    pqxx::read_transaction tx(conn);
    const pqxx::result rows = tx.exec_prepared(kConfigNewestStatement);
    found = !rows.empty();
    if (found) parsed = ConfigVersionFromRow(rows[0], &version);
    tx.commit();
  }));
  RETURN_IF_ERROR(parsed);
  if (!found) return absl::NotFoundError("no config version is stored");
  return version;
}

absl::StatusOr<v1::ConfigVersion> Store::SetConfig(const v1::TraceConfig& config,
                                                   uint64_t expected_version,
                                                   const std::string& author) {
  RETURN_IF_ERROR(ValidateConfig(config));
  v1::ConfigVersion stored;
  *stored.mutable_config() = config;
  stored.set_author(author.empty() ? "unknown" : WithoutNul(author));
  const std::string document = config.SerializeAsString();
  absl::Status refused;
  RETURN_IF_ERROR(RunQuery("cannot set config", [&](pqxx::connection& conn) {
    refused = absl::OkStatus();
    pqxx::work tx(conn);
    // Held until commit: the next change, on any replica, reads the version this one
    // stores (each statement of a READ COMMITTED transaction sees what was committed
    // before it started).
    tx.exec_prepared(kConfigLockStatement, kConfigLockKey);
    const uint64_t current =
        FromBigint(tx.exec_prepared1(kConfigCurrentStatement)[0].as<int64_t>());
    if (current != expected_version) {
      refused = absl::FailedPreconditionError(absl::StrCat(
          "stale version ", expected_version, ": the current version is ", current));
      tx.abort();
      return;
    }
    const uint64_t next = current + 1;
    const pqxx::row row =
        tx.exec_prepared1(kConfigInsertStatement, ToBigint(next),
                          pqxx::binarystring(document), stored.author());
    stored.set_version(next);
    stored.set_created_ns(row[0].as<int64_t>());
    // Delivered to every listener when the transaction commits, not before.
    tx.exec_prepared(kConfigNotifyStatement, kConfigChannel, absl::StrCat(next));
    tx.commit();
  }));
  RETURN_IF_ERROR(refused);
  return stored;
}

absl::StatusOr<std::vector<v1::ConfigVersion>> Store::ListConfigHistory(int limit) {
  if (limit <= 0) limit = kDefaultConfigHistoryLimit;
  if (limit > kMaxConfigHistoryLimit) limit = kMaxConfigHistoryLimit;
  std::vector<v1::ConfigVersion> versions;
  absl::Status parsed;
  RETURN_IF_ERROR(RunQuery("cannot list config history", [&](pqxx::connection& conn) {
    versions.clear();
    parsed = absl::OkStatus();
    pqxx::read_transaction tx(conn);
    for (const auto& row : tx.exec_prepared(kConfigHistoryStatement, limit)) {
      if (parsed.ok()) parsed = ConfigVersionFromRow(row, &versions.emplace_back());
    }
    tx.commit();
  }));
  RETURN_IF_ERROR(parsed);
  return versions;
}

absl::StatusOr<std::vector<v1::ConfigVersion>> Store::ConfigVersionsAfter(uint64_t after,
                                                                          int limit) {
  std::vector<v1::ConfigVersion> versions;
  absl::Status parsed;
  RETURN_IF_ERROR(RunQuery("cannot read config versions", [&](pqxx::connection& conn) {
    versions.clear();
    parsed = absl::OkStatus();
    pqxx::read_transaction tx(conn);
    for (const auto& row : tx.exec_prepared(kConfigAfterStatement, ToBigint(after), limit)) {
      if (parsed.ok()) parsed = ConfigVersionFromRow(row, &versions.emplace_back());
    }
    tx.commit();
  }));
  RETURN_IF_ERROR(parsed);
  return versions;
}

}  // namespace reptrace::controller

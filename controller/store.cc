#include "controller/store.h"

#include <exception>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/ids.h"
#include "common/status_macros.h"
#include "controller/internal/pg_util.h"
#include "controller/schema.h"
#include "controller/span_linker.h"

namespace reptrace::controller {
namespace {

using internal::DatabaseError;
using internal::FromBigint;
using internal::ToBigint;

// Columns the writer COPYs into the staging table, in the order of StagedRow.
const std::vector<std::string>& StagedColumns() {
  static const auto* columns = new std::vector<std::string>{
      "span_id",        "local_parent_span_id", "kind",          "service",
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

// BYTEA in text form ("\x0a000001"); stream_to escapes the backslash for COPY.
std::string ByteaText(const std::string& bytes) {
  return absl::StrCat("\\x", absl::BytesToHexString(bytes));
}

std::string AttributesJson(const v1::Span& span) {
  nlohmann::json attributes = nlohmann::json::object();
  for (const auto& [key, value] : span.attributes()) {
    attributes[WithoutNul(key)] = WithoutNul(value);
  }
  return attributes.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

auto StagedRow(const std::string& agent_id, uint64_t batch_id, const v1::Span& span) {
  return std::make_tuple(
      ToBigint(span.span_id()), ToBigint(span.parent_span_id()),
      static_cast<int>(span.kind()), WithoutNul(span.service()), WithoutNul(span.node()),
      static_cast<int64_t>(span.pid()), static_cast<int64_t>(span.tid()),
      WithoutNul(span.process()), WithoutNul(span.name()), span.start_ns(), span.end_ns(),
      static_cast<int>(span.status()), WithoutNul(span.status_message()),
      ByteaText(span.local().ip()), static_cast<int64_t>(span.local().port()),
      ByteaText(span.peer().ip()), static_cast<int64_t>(span.peer().port()),
      ToBigint(span.request_offset()), ToBigint(span.request_bytes()),
      ToBigint(span.response_offset()), ToBigint(span.response_bytes()),
      ToBigint(span.request_hash()), ToBigint(span.response_hash()),
      ToBigint(span.connection_id()), AttributesJson(span), WithoutNul(agent_id),
      ToBigint(batch_id));
}

// Writer statements.
constexpr char kInsertBatchStatement[] = "writer_insert_batch";
constexpr char kInsertBatchSql[] =
    "INSERT INTO ingested_batches (agent_id, batch_id, span_count) VALUES ($1, $2, $3) "
    "ON CONFLICT (agent_id, batch_id) DO NOTHING RETURNING batch_id";

constexpr char kInsertSpansStatement[] = "writer_insert_spans";
std::string InsertSpansSql() {
  std::vector<std::string> rest;  // staged columns after span_id
  std::vector<std::string> rest_selected;
  for (const std::string& column : StagedColumns()) {
    if (column == "span_id") continue;
    rest.push_back(column);
    rest_selected.push_back(absl::StrCat("st.", column));
  }
  return absl::StrCat("INSERT INTO ", kSpansTable, " (span_id, trace_id, parent_span_id, ",
                      absl::StrJoin(rest, ", "),
                      ") SELECT DISTINCT ON (st.span_id) st.span_id, st.span_id, "
                      "NULLIF(st.local_parent_span_id, 0), ",
                      absl::StrJoin(rest_selected, ", "), " FROM ", kSpansStagingTable,
                      " st ORDER BY st.span_id ON CONFLICT (span_id) DO NOTHING "
                      "RETURNING span_id");
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
  batches_acked = $9, batches_resent = $10, last_seen_ns = $11
WHERE agent_id = $1
)sql";

constexpr char kAgentBatchStoredStatement[] = "writer_agent_batch_stored";
constexpr char kAgentBatchStoredSql[] = R"sql(
UPDATE agents SET
  batches_stored = batches_stored + 1, spans_stored = spans_stored + $2,
  spans_rejected = spans_rejected + $3, last_seen_ns = $4
WHERE agent_id = $1
)sql";

constexpr char kAgentDisconnectedStatement[] = "writer_agent_disconnected";
constexpr char kAgentDisconnectedSql[] =
    "UPDATE agents SET connected = false, last_seen_ns = $2"
    " WHERE agent_id = $1 AND connected_at_ns = $3";

// Query statements.
constexpr char kListTracesStatement[] = "query_list_traces";
constexpr char kListTracesSql[] = R"sql(
SELECT trace_id, start_ns, duration_ns, span_count, root_service, root_name, status,
       array_to_json(services)::text
  FROM traces
 WHERE $1::text = '' OR services @> ARRAY[$1::text]
 ORDER BY start_ns DESC, trace_id DESC
 LIMIT $2
)sql";

constexpr char kTraceOfSpanStatement[] = "query_trace_of_span";
constexpr char kTraceOfSpanSql[] = "SELECT trace_id FROM spans WHERE span_id = $1";

constexpr char kTraceSpansStatement[] = "query_trace_spans";
constexpr char kTraceSpansSql[] = R"sql(
SELECT span_id, trace_id, parent_span_id, kind, service, node, pid, tid, process, name,
       start_ns, end_ns, status, status_message, local_ip, local_port, peer_ip, peer_port,
       request_offset, request_bytes, response_offset, response_bytes, request_hash,
       response_hash, connection_id, attributes::text
  FROM spans
 WHERE trace_id = $1
 ORDER BY start_ns, span_id
)sql";

constexpr char kListAgentsStatement[] = "query_list_agents";
constexpr char kListAgentsSql[] = R"sql(
SELECT agent_id, node, agent_version, hostname, connected, connected_at_ns, last_seen_ns,
       batches_stored, spans_stored, processes_connected, events_received,
       records_malformed, hook_events_dropped, spans_built, spans_dropped, batches_sent,
       batches_acked, batches_resent
  FROM agents
 ORDER BY node, agent_id
)sql";

constexpr int kDefaultTraceLimit = 20;
constexpr int kMaxTraceLimit = 1000;

void UpdateCounters(pqxx::transaction_base& tx, const std::string& agent_id,
                    const v1::AgentCounters& c, int64_t now_ns) {
  tx.exec_prepared(kAgentCountersStatement, agent_id, ToBigint(c.processes_connected()),
                   ToBigint(c.events_received()), ToBigint(c.records_malformed()),
                   ToBigint(c.hook_events_dropped()), ToBigint(c.spans_built()),
                   ToBigint(c.spans_dropped()), ToBigint(c.batches_sent()),
                   ToBigint(c.batches_acked()), ToBigint(c.batches_resent()), now_ns);
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

}  // namespace

// ---------------------------------------------------------------------------------------
// SpanWriter

SpanWriter::SpanWriter(std::unique_ptr<pqxx::connection> conn) : conn_(std::move(conn)) {}
SpanWriter::~SpanWriter() = default;

absl::Status SpanWriter::Prepare() {
  try {
    pqxx::nontransaction tx(*conn_);
    // A per-connection staging table shaped like spans, without the columns the
    // controller computes. ON COMMIT DELETE ROWS: empty at the start of every batch.
    tx.exec0(absl::StrCat("CREATE TEMP TABLE IF NOT EXISTS ", kSpansStagingTable, " (LIKE ",
                          kSpansTable, ") ON COMMIT DELETE ROWS"));
    tx.exec0(absl::StrCat("ALTER TABLE ", kSpansStagingTable,
                          " DROP COLUMN IF EXISTS trace_id,"
                          " DROP COLUMN IF EXISTS parent_span_id"));
    conn_->prepare(kInsertBatchStatement, kInsertBatchSql);
    conn_->prepare(kInsertSpansStatement, InsertSpansSql());
    conn_->prepare(kAgentConnectedStatement, kAgentConnectedSql);
    conn_->prepare(kAgentCountersStatement, kAgentCountersSql);
    conn_->prepare(kAgentBatchStoredStatement, kAgentBatchStoredSql);
    conn_->prepare(kAgentDisconnectedStatement, kAgentDisconnectedSql);
    SpanLinker::Prepare(*conn_);
  } catch (const std::exception& e) {
    return DatabaseError("cannot prepare span writer", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<WriteOutcome> SpanWriter::WriteBatch(const std::string& agent_id,
                                                    const v1::SpanBatch& batch,
                                                    int64_t spans_rejected) {
  WriteOutcome outcome;
  try {
    pqxx::work tx(*conn_);
    // A concurrent insert of the same key waits for the other transaction, then
    // conflicts: a batch resent on a second stream is still stored once.
    const pqxx::result recorded =
        tx.exec_prepared(kInsertBatchStatement, agent_id, ToBigint(batch.batch_id()),
                         batch.spans_size());
    if (recorded.empty()) {
      tx.abort();
      outcome.duplicate = true;
      return outcome;
    }
    std::vector<int64_t> new_span_ids;
    if (batch.spans_size() > 0) {
      pqxx::stream_to copy(tx, kSpansStagingTable, StagedColumns());
      for (const v1::Span& span : batch.spans()) {
        copy << StagedRow(agent_id, batch.batch_id(), span);
      }
      copy.complete();
      for (const auto& row : tx.exec_prepared(kInsertSpansStatement)) {
        new_span_ids.push_back(row[0].as<int64_t>());
      }
      SpanLinker::Link(tx, new_span_ids);
    }
    const int64_t now_ns = absl::GetCurrentTimeNanos();
    tx.exec_prepared(kAgentBatchStoredStatement, agent_id,
                     static_cast<int64_t>(new_span_ids.size()), spans_rejected, now_ns);
    if (batch.has_counters()) UpdateCounters(tx, agent_id, batch.counters(), now_ns);
    tx.commit();
    outcome.spans_inserted = static_cast<int>(new_span_ids.size());
  } catch (const std::exception& e) {
    return DatabaseError(absl::StrCat("cannot store batch ", batch.batch_id()), e);
  }
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
  std::unique_ptr<SpanWriter> writer(new SpanWriter(std::move(conn)));
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
        conn->prepare(kListTracesStatement, kListTracesSql);
        conn->prepare(kTraceOfSpanStatement, kTraceOfSpanSql);
        conn->prepare(kTraceSpansStatement, kTraceSpansSql);
        conn->prepare(kListAgentsStatement, kListAgentsSql);
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
    for (const auto& row : tx.exec_prepared(kListTracesStatement, service, limit)) {
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
    }
    tx.commit();
  }));
  return agents;
}

}  // namespace reptrace::controller

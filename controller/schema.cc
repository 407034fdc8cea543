#include "controller/schema.h"

#include <exception>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace reptrace::controller {
namespace {

// Version 1: spans, traces, ingested batches, agents.
//
// Ids (span, trace, hashes) are stored as BIGINT with the same 64 bits as the uint64 on
// the wire. IP addresses are BYTEA, 4 or 16 bytes, exactly as in v1::Endpoint.
constexpr char kMigration1[] = R"sql(
CREATE TABLE spans (
  span_id              BIGINT PRIMARY KEY,
  trace_id             BIGINT NOT NULL,
  parent_span_id       BIGINT,                  -- resolved: local parent, or linked client
  local_parent_span_id BIGINT NOT NULL DEFAULT 0,  -- as the agent sent it, 0 = none
  kind                 SMALLINT NOT NULL,
  service              TEXT NOT NULL,
  node                 TEXT NOT NULL,
  pid                  BIGINT NOT NULL,
  tid                  BIGINT NOT NULL,
  process              TEXT NOT NULL,
  name                 TEXT NOT NULL,
  start_ns             BIGINT NOT NULL,
  end_ns               BIGINT NOT NULL,
  status               SMALLINT NOT NULL,
  status_message       TEXT NOT NULL,
  local_ip             BYTEA NOT NULL,
  local_port           INTEGER NOT NULL,
  peer_ip              BYTEA NOT NULL,
  peer_port            INTEGER NOT NULL,
  request_offset       BIGINT NOT NULL,
  request_bytes        BIGINT NOT NULL,
  response_offset      BIGINT NOT NULL,
  response_bytes       BIGINT NOT NULL,
  request_hash         BIGINT NOT NULL,
  response_hash        BIGINT NOT NULL,
  connection_id        BIGINT NOT NULL,
  attributes           JSONB NOT NULL DEFAULT '{}',
  agent_id             TEXT NOT NULL,
  batch_id             BIGINT NOT NULL
);
CREATE INDEX spans_trace_id_idx ON spans (trace_id);
CREATE INDEX spans_start_ns_idx ON spans (start_ns);
CREATE INDEX spans_parent_idx ON spans (parent_span_id);
-- The linker looks a connection's other end up by (its own address, peer, offset).
CREATE INDEX spans_flow_idx
  ON spans (local_ip, local_port, peer_ip, peer_port, request_offset, kind);

CREATE TABLE traces (
  trace_id     BIGINT PRIMARY KEY,    -- the span_id of the root span
  start_ns     BIGINT NOT NULL,
  end_ns       BIGINT NOT NULL,
  duration_ns  BIGINT NOT NULL,
  span_count   INTEGER NOT NULL,
  root_service TEXT NOT NULL,
  root_name    TEXT NOT NULL,
  status       SMALLINT NOT NULL,
  services     TEXT[] NOT NULL,
  updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX traces_start_ns_idx ON traces (start_ns DESC);
CREATE INDEX traces_services_idx ON traces USING GIN (services);

CREATE TABLE ingested_batches (
  agent_id   TEXT NOT NULL,
  batch_id   BIGINT NOT NULL,
  stored_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  span_count INTEGER NOT NULL,
  PRIMARY KEY (agent_id, batch_id)
);

CREATE TABLE agents (
  agent_id            TEXT PRIMARY KEY,
  node                TEXT NOT NULL,
  agent_version       TEXT NOT NULL,
  hostname            TEXT NOT NULL,
  connected           BOOLEAN NOT NULL,
  connected_at_ns     BIGINT NOT NULL,
  last_seen_ns        BIGINT NOT NULL,
  batches_stored      BIGINT NOT NULL DEFAULT 0,
  spans_stored        BIGINT NOT NULL DEFAULT 0,
  spans_rejected      BIGINT NOT NULL DEFAULT 0,  -- malformed spans dropped by the controller
  processes_connected BIGINT NOT NULL DEFAULT 0,
  events_received     BIGINT NOT NULL DEFAULT 0,
  records_malformed   BIGINT NOT NULL DEFAULT 0,
  hook_events_dropped BIGINT NOT NULL DEFAULT 0,
  spans_built         BIGINT NOT NULL DEFAULT 0,
  spans_dropped       BIGINT NOT NULL DEFAULT 0,
  batches_sent        BIGINT NOT NULL DEFAULT 0,
  batches_acked       BIGINT NOT NULL DEFAULT 0,
  batches_resent      BIGINT NOT NULL DEFAULT 0
);
)sql";

// Version 2: cheaper ingest. Most spans stand alone (one request, one trace), so:
//  - a trace of a single span has no row in `traces`: ListTraces takes it from the span
//    itself (a root: trace_id = span_id) through a partial index of roots; `traces`
//    keeps the summaries of traces with more than one span (a row may still exist for a
//    single-span trace: it is then right, just not needed; those are dropped here);
//  - the trace_id and parent indexes leave out what most spans hold (a root's own id, no
//    parent), and start_ns (no query walks all spans by time) is gone;
//  - the linker finds a connection's other end by one bigint, flow_key (see
//    SpanLinker::FlowKey, which this backfill repeats in SQL), instead of a six-column
//    index; it rechecks the exact columns.
constexpr char kMigration2[] = R"sql(
ALTER TABLE spans ADD COLUMN flow_key BIGINT;
UPDATE spans SET flow_key =
    request_offset
    # ((CASE WHEN kind = 2 THEN local_port ELSE peer_port END)::bigint << 48)
    # ((CASE WHEN kind = 2 THEN peer_port ELSE local_port END)::bigint << 32)
    # ((SELECT coalesce(bit_xor(get_byte(ip, j)::bigint << (8 * (3 - j % 4))), 0)
          FROM (SELECT CASE WHEN kind = 2 THEN local_ip ELSE peer_ip END) AS server(ip),
               generate_series(0, length(ip) - 1) AS j) << 20)
    # ((SELECT coalesce(bit_xor(get_byte(ip, j)::bigint << (8 * (3 - j % 4))), 0)
          FROM (SELECT CASE WHEN kind = 2 THEN peer_ip ELSE local_ip END) AS client(ip),
               generate_series(0, length(ip) - 1) AS j) << 4)
  WHERE local_port <> 0 AND peer_port <> 0;
DROP INDEX spans_flow_idx;
DROP INDEX spans_start_ns_idx;
DROP INDEX spans_trace_id_idx;
DROP INDEX spans_parent_idx;
CREATE INDEX spans_flow_key_idx ON spans (flow_key) WHERE flow_key IS NOT NULL;
-- The spans of trace T are T's root (span_id = T, by the primary key) and these.
CREATE INDEX spans_trace_member_idx ON spans (trace_id) WHERE trace_id <> span_id;
CREATE INDEX spans_child_idx ON spans (parent_span_id) WHERE parent_span_id IS NOT NULL;
-- Single-span traces by service and time; ListTraces without a service walks it service
-- by service (a second index by time alone would cost every span another entry). Byte
-- order ("C"): every insert compares services, and the database's collation would do it
-- through strcoll.
CREATE INDEX spans_root_service_idx
  ON spans (service COLLATE "C", start_ns, span_id) WHERE trace_id = span_id;
DELETE FROM traces WHERE span_count = 1;
)sql";

// Version 3: linking through a Service's address translation (DNAT): the two ends see
// different 4-tuples, but the client's end (address and port) and the offset agree:
// client_key (SpanLinker::ClientKey, which this backfill repeats in SQL) finds the
// candidates, which the linker rechecks. Indexed for clients, and for servers that have
// no parent at all (what a late client looks for).
constexpr char kMigration3[] = R"sql(
ALTER TABLE spans ADD COLUMN client_key BIGINT;
UPDATE spans SET client_key = CASE WHEN k = 0 THEN 1 ELSE k END
  FROM (SELECT span_id AS id,
               request_offset
               # ((CASE WHEN kind = 2 THEN peer_port ELSE local_port END)::bigint << 32)
               # ((SELECT coalesce(bit_xor(get_byte(ip, j)::bigint << (8 * (3 - j % 4))), 0)
                     FROM (SELECT CASE WHEN kind = 2 THEN peer_ip ELSE local_ip END) AS c(ip),
                          generate_series(0, length(ip) - 1) AS j) << 8) AS k
          FROM spans WHERE local_port <> 0 AND peer_port <> 0) keys
 WHERE spans.span_id = keys.id;
CREATE INDEX spans_client_key_client_idx ON spans (client_key)
  WHERE client_key IS NOT NULL AND kind = 1;
CREATE INDEX spans_client_key_orphan_idx ON spans (client_key)
  WHERE client_key IS NOT NULL AND kind = 2 AND parent_span_id IS NULL
    AND local_parent_span_id = 0;
)sql";

// Version 4: the agents' count of data records whose connection they never saw opened.
constexpr char kMigration4[] = R"sql(
ALTER TABLE agents ADD COLUMN events_without_connection BIGINT NOT NULL DEFAULT 0;
)sql";

// Version 5: one look-up key for linking instead of three. Every stored end that shares
// a batch's client key is what the linker asks for: an end of the same exchange (the same
// client end and offset, whatever the server's address), a client for a server through a
// Service, a parentless server for a late client. One index of every span with a flow
// serves all three, and the linker sorts the answer out in memory (flow key, kind,
// parent, time window). Each span then costs one index entry for linking instead of two
// (flow key, and client key for a client or a parentless server), and flow_key, which
// only that index used, is no longer stored.
constexpr char kMigration5[] = R"sql(
CREATE INDEX spans_client_key_idx ON spans (client_key) WHERE client_key IS NOT NULL;
DROP INDEX spans_flow_key_idx;
DROP INDEX spans_client_key_client_idx;
DROP INDEX spans_client_key_orphan_idx;
ALTER TABLE spans DROP COLUMN flow_key;
)sql";

// Version 6: the agents' count of in-band peers that answered unframed (not hooked).
constexpr char kMigration6[] = R"sql(
ALTER TABLE agents ADD COLUMN inband_peers_not_hooked BIGINT NOT NULL DEFAULT 0;
)sql";

// Version 7: the config document's versions (reptrace.v1.ConfigService), with version 1
// the default document: a serialized v1::TraceConfig {enabled: true, capture_bytes: 128,
// sampling {probability: 1}} (config_validation's DefaultConfig, which a test compares).
constexpr char kMigration7[] = R"sql(
CREATE TABLE config_versions (
  version    BIGINT PRIMARY KEY,
  document   BYTEA NOT NULL,          -- a serialized reptrace.v1.TraceConfig
  author     TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO config_versions (version, document, author)
  VALUES (1, decode('0801208001320909000000000000f03f', 'hex'), 'default');
)sql";

// Version 8: the config version each agent last acknowledged (ConfigApplied), 0 = none.
constexpr char kMigration8[] = R"sql(
ALTER TABLE agents ADD COLUMN config_version BIGINT NOT NULL DEFAULT 0;
)sql";

// Version 9: the agents' count of records their hooked processes' rate limits refused.
constexpr char kMigration9[] = R"sql(
ALTER TABLE agents ADD COLUMN hook_events_rate_limited BIGINT NOT NULL DEFAULT 0;
)sql";

// Version 10: trace sampling (controller/trace_sampler.h).
//  - sampling_pending: the traces stored or changed while sampling is on, waiting to be
//    decided, with when a span was last added to or relinked into each (the writing
//    controller's clock, ns); a trace is decided once that is older than the decision
//    wait;
//  - sampling_counts: what was decided, one row per rule, added to by every replica.
constexpr char kMigration10[] = R"sql(
CREATE TABLE sampling_pending (
  trace_id   BIGINT PRIMARY KEY,
  touched_ns BIGINT NOT NULL
);
CREATE INDEX sampling_pending_touched_idx ON sampling_pending (touched_ns);
CREATE TABLE sampling_counts (
  decision SMALLINT PRIMARY KEY,  -- TraceSampler::Decision
  name     TEXT NOT NULL,
  traces   BIGINT NOT NULL DEFAULT 0,
  spans    BIGINT NOT NULL DEFAULT 0
);
INSERT INTO sampling_counts (decision, name) VALUES
  (1, 'kept: error'), (2, 'kept: slow'), (3, 'kept: probability'),
  (4, 'dropped: probability');
)sql";

}  // namespace

const std::vector<Migration>& Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1, "spans, traces, ingested_batches, agents", kMigration1},
      {2, "flow key, partial span indexes, summaries only of multi-span traces",
       kMigration2},
      {3, "client key: linking through a Service's address translation", kMigration3},
      {4, "agents' count of events without a connection", kMigration4},
      {5, "one client-key index for linking; flow_key no longer stored", kMigration5},
      {6, "agents' count of in-band peers not hooked", kMigration6},
      {7, "config_versions, with the default config as version 1", kMigration7},
      {8, "agents' acknowledged config version", kMigration8},
      {9, "agents' count of events rate-limited in the hooks", kMigration9},
      {10, "trace sampling: pending traces and decision counts", kMigration10},
  };
  return *migrations;
}

absl::StatusOr<std::vector<int>> ApplyMigrations(pqxx::connection& conn, int up_to) {
  std::vector<int> applied;
  try {
    pqxx::work tx(conn);
    // Held until commit: replicas starting together take turns; the one that waited
    // then sees the versions the first one recorded.
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
    tx.exec0(absl::StrCat("CREATE TABLE IF NOT EXISTS ", kSchemaMigrationsTable,
                          " (version INTEGER PRIMARY KEY,"
                          " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"));
    std::set<int> present;
    for (const auto& row :
         tx.exec(absl::StrCat("SELECT version FROM ", kSchemaMigrationsTable))) {
      present.insert(row[0].as<int>());
    }
    for (const Migration& migration : Migrations()) {
      if (present.count(migration.version) > 0 || migration.version > up_to) continue;
      tx.exec(migration.sql);
      tx.exec_params(absl::StrCat("INSERT INTO ", kSchemaMigrationsTable,
                                  " (version) VALUES ($1)"),
                     migration.version);
      applied.push_back(migration.version);
    }
    tx.commit();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("schema migration failed: ", e.what()));
  }
  for (const Migration& migration : Migrations()) {
    for (int version : applied) {
      if (version == migration.version) {
        LogInfo("applied schema migration %d (%s)", version, migration.description);
      }
    }
  }
  return applied;
}

}  // namespace reptrace::controller

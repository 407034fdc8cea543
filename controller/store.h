// The controller's PostgreSQL store: spans, traces, ingested batches, agents, and the
// versions of the config document.
//
// Threading: libpqxx connections are not thread-safe, so a connection is only ever used
// by one thread at a time. Each ingest stream writes through its own SpanWriter (its own
// connection); queries borrow a connection from a small mutex-guarded pool. Store itself
// is thread-safe.
//
// Cost: a batch is normally one transaction of a few statements: the batch recorded
// (de-duplication) and counted for its agent, its spans COPYed straight into spans with
// the links made in memory, one probe for what memory cannot know, and the relabel walk
// and summary update only for the few spans that need them (SpanLinker). A single-span
// trace, most of them, costs one span row with three index entries and nothing else.
// While trace sampling is on (SetSamplingOn; controller/trace_sampler.h), a batch also
// upserts one sampling_pending row per trace it touched, in one statement.
//
// Errors: a database that cannot be reached or that fails a statement gives UNAVAILABLE
// (the caller may retry later); an unknown trace gives NOT_FOUND; a config document that
// is invalid INVALID_ARGUMENT, a config change on a version that is not the newest
// FAILED_PRECONDITION.
#ifndef REPTRACE_CONTROLLER_STORE_H_
#define REPTRACE_CONTROLLER_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controller/internal/pg_util.h"
#include "controller/span_linker.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller {

// What WriteBatch did.
struct WriteOutcome {
  bool duplicate = false;  // (agent_id, batch_id) was stored before; nothing was written
  int spans_inserted = 0;  // new spans (a span id already stored is not stored again)
};

// Writes one agent stream's batches. Owns one connection; use from one thread at a time.
class SpanWriter {
 public:
  ~SpanWriter();
  SpanWriter(const SpanWriter&) = delete;
  SpanWriter& operator=(const SpanWriter&) = delete;

  // Stores `batch` (already validated: no span with id 0, unspecified kind or end before
  // start) in one transaction, links its spans into traces and updates the agent's
  // counters; `spans_rejected` is how many spans validation dropped from it. When this
  // returns OK the batch is durable and may be acknowledged. If (agent_id, batch_id) was
  // stored before, stores nothing and reports duplicate.
  absl::StatusOr<WriteOutcome> WriteBatch(const std::string& agent_id,
                                          const v1::SpanBatch& batch,
                                          int64_t spans_rejected = 0);

  // Agent bookkeeping (table agents). Connected inserts or refreshes the agent's row
  // and marks it connected at `now_ns`. Disconnected marks it disconnected only if its
  // latest connection is still the one made at `connected_at_ns`: when an agent has
  // already reconnected on a new stream, the old stream ending changes nothing.
  absl::Status AgentConnected(const v1::AgentHello& hello, int64_t now_ns);
  absl::Status AgentCounters(const std::string& agent_id, const v1::AgentCounters& counters,
                             int64_t now_ns);
  absl::Status AgentDisconnected(const std::string& agent_id, int64_t connected_at_ns,
                                 int64_t now_ns);
  // Records that the agent acknowledged config `version` (ListAgents' config_version).
  absl::Status AgentConfigApplied(const std::string& agent_id, uint64_t version,
                                  int64_t now_ns);

 private:
  friend class Store;
  SpanWriter(std::unique_ptr<pqxx::connection> conn, const std::atomic<bool>* sampling_on);
  absl::Status Prepare();
  // SpanLinker::Link, then, while sampling is on, the touched traces marked pending (their
  // decision wait restarts) in the same transaction.
  void LinkAndMark(pqxx::transaction_base& tx, const std::string& agent, uint64_t batch_id,
                   const std::vector<NewSpan>& spans, bool prelinked);
  // The two ways WriteBatch stores a batch's distinct spans; both throw pqxx exceptions.
  // WriteNewSpans COPYs them straight into spans, linked in memory; it throws
  // pqxx::unique_violation when a span id is stored already. WriteStaged COPYs them into
  // a temporary table and inserts those whose id is not stored yet.
  WriteOutcome WriteNewSpans(const std::string& agent, const v1::SpanBatch& batch,
                             const std::vector<NewSpan>& spans, int64_t spans_rejected);
  WriteOutcome WriteStaged(const std::string& agent, const v1::SpanBatch& batch,
                           const std::vector<NewSpan>& prelinked, int64_t spans_rejected);

  std::unique_ptr<pqxx::connection> conn_;
  const std::atomic<bool>* sampling_on_;  // Store::sampling_on_
  bool staging_ready_ = false;  // the temporary staging table exists on conn_
  internal::CopyBinary copy_rows_;  // one batch's rows; its memory is reused
};

class Store {
 public:
  // Connects to `conninfo` (a libpq connection string) and applies the schema
  // migrations. The error message starts with "cannot connect to database: " when the
  // database cannot be reached.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& conninfo);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // A writer with its own connection, for one ingest stream.
  absl::StatusOr<std::unique_ptr<SpanWriter>> NewWriter();

  // Traces newest first (by start); only those with a span of `service` unless it is
  // empty. limit <= 0 means 20; at most 1000.
  absl::StatusOr<std::vector<v1::TraceSummary>> ListTraces(const std::string& service,
                                                           int limit);
  // The whole trace holding `id`, which is a trace id or the id of any of its spans.
  // Spans ordered by start, each with trace_id and its resolved parent_span_id.
  absl::StatusOr<v1::Trace> GetTrace(uint64_t id);
  absl::StatusOr<std::vector<v1::AgentInfo>> ListAgents();
  // Per agent: events, spans and drops by reason; cluster-wide: trace sampling's counts.
  absl::StatusOr<v1::GetStatsResponse> GetStats();

  // Trace sampling (TraceSampler sets it from the config): while on, every writer marks
  // the traces each batch touches as pending a decision (table sampling_pending); while
  // off (the default: every trace kept), writers do no sampling bookkeeping at all.
  void SetSamplingOn(bool on) { sampling_on_.store(on, std::memory_order_relaxed); }
  bool sampling_on() const { return sampling_on_.load(std::memory_order_relaxed); }

  // Config versions (table config_versions; version 1 is the default document). The
  // newest version.
  absl::StatusOr<v1::ConfigVersion> GetConfig();
  // Stores `config` as version M+1 if the newest version M is `expected_version`, else
  // FAILED_PRECONDITION "stale version N: the current version is M". An invalid document
  // (ValidateConfig) is INVALID_ARGUMENT. Either way nothing is written then. In one
  // transaction that holds kConfigLockKey, so concurrent changes on any replica are
  // ordered; it announces the new version on kConfigChannel (NOTIFY), delivered to the
  // listeners when it commits. An empty `author` is stored as "unknown".
  absl::StatusOr<v1::ConfigVersion> SetConfig(const v1::TraceConfig& config,
                                              uint64_t expected_version,
                                              const std::string& author);
  // Versions newest first. limit <= 0 means 20; at most 1000.
  absl::StatusOr<std::vector<v1::ConfigVersion>> ListConfigHistory(int limit);
  // The versions after `after`, oldest first, at most `limit` of them.
  absl::StatusOr<std::vector<v1::ConfigVersion>> ConfigVersionsAfter(uint64_t after,
                                                                     int limit);

  const std::string& conninfo() const { return conninfo_; }

 private:
  explicit Store(std::string conninfo);
  // A new connection; the error says "cannot connect to database: ...".
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Connect();
  // Runs `body` on a pooled query connection (a new one if none is idle). A connection
  // that failed is closed rather than returned to the pool.
  absl::Status RunQuery(absl::string_view what,
                        const std::function<void(pqxx::connection&)>& body);

  static constexpr size_t kMaxIdleQueryConnections = 4;

  const std::string conninfo_;
  std::atomic<bool> sampling_on_{false};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_STORE_H_

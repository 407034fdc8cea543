#include "controller/trace_sampler.h"

#include <cmath>
#include <exception>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/log.h"
#include "common/trace_config.h"
#include "controller/internal/pg_util.h"
#include "controller/schema.h"

namespace reptrace::controller {
namespace {

using internal::BigintArrayLiteral;
using internal::DatabaseError;

constexpr char kAnyDueStatement[] = "sampler_any_due";
constexpr char kAnyDueSql[] =
    "SELECT EXISTS (SELECT 1 FROM sampling_pending WHERE touched_ns <= $1)";

constexpr char kLockStatement[] = "sampler_lock";
constexpr char kLockSql[] = "SELECT pg_advisory_xact_lock($1)";

// $1: due time, $2: at most this many; the longest quiet first.
constexpr char kDueStatement[] = "sampler_due";
constexpr char kDueSql[] =
    "SELECT trace_id FROM sampling_pending WHERE touched_ns <= $1"
    " ORDER BY touched_ns, trace_id LIMIT $2";

// $1: trace ids. Per trace that still has spans: span count, whether one failed (status
// 2, SPAN_STATUS_ERROR), first start, last end. A trace's spans are its root (span_id =
// trace id; fetched by id, then filtered, as the linker's summaries do) and the members
// of the partial trace index.
constexpr char kMeasureStatement[] = "sampler_measure";
constexpr char kMeasureSql[] = R"sql(
WITH named AS MATERIALIZED (
  SELECT s.span_id, s.trace_id, s.start_ns, s.end_ns, s.status
    FROM spans s WHERE s.span_id = ANY($1::bigint[])
),
members AS (
  SELECT n.trace_id, n.start_ns, n.end_ns, n.status FROM named n WHERE n.trace_id = n.span_id
  UNION ALL
  SELECT s.trace_id, s.start_ns, s.end_ns, s.status
    FROM spans s WHERE s.trace_id = ANY($1::bigint[]) AND s.trace_id <> s.span_id
)
SELECT m.trace_id, count(*), bool_or(m.status = 2), min(m.start_ns), max(m.end_ns)
  FROM members m
 GROUP BY m.trace_id
)sql";

// $1: trace ids. Deletes their spans and summary rows; returns the spans deleted.
constexpr char kDeleteStatement[] = "sampler_delete";
constexpr char kDeleteSql[] = R"sql(
WITH roots AS (
  DELETE FROM spans s WHERE s.span_id = ANY($1::bigint[]) AND s.trace_id = s.span_id
  RETURNING 1
), members AS (
  DELETE FROM spans s WHERE s.trace_id = ANY($1::bigint[]) AND s.trace_id <> s.span_id
  RETURNING 1
), summaries AS (
  DELETE FROM traces t WHERE t.trace_id = ANY($1::bigint[])
  RETURNING 1
)
SELECT (SELECT count(*) FROM roots) + (SELECT count(*) FROM members)
)sql";

constexpr char kSettleStatement[] = "sampler_settle";
constexpr char kSettleSql[] =
    "DELETE FROM sampling_pending WHERE trace_id = ANY($1::bigint[])";

// $1: decisions, $2: traces, $3: spans to add.
constexpr char kCountStatement[] = "sampler_count";
constexpr char kCountSql[] = R"sql(
UPDATE sampling_counts c SET traces = c.traces + u.traces, spans = c.spans + u.spans
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(decision, traces, spans)
 WHERE c.decision = u.decision
)sql";

// splitmix64's finalizer: every bit of the id moves every bit of the result.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

void PrepareConnection(pqxx::connection& conn) {
  {
    // As the writers: short look-ups by key (see SpanWriter::Prepare), and no JIT.
    pqxx::nontransaction tx(conn);
    tx.exec0("SET jit = off");
    tx.exec0("SET enable_seqscan = off");
  }
  conn.prepare(kAnyDueStatement, kAnyDueSql);
  conn.prepare(kLockStatement, kLockSql);
  conn.prepare(kDueStatement, kDueSql);
  conn.prepare(kMeasureStatement, kMeasureSql);
  conn.prepare(kDeleteStatement, kDeleteSql);
  conn.prepare(kSettleStatement, kSettleSql);
  conn.prepare(kCountStatement, kCountSql);
}

}  // namespace

bool TraceSampler::KeptByProbability(uint64_t trace_id, double probability) {
  if (!(probability > 0)) return false;  // NaN too
  if (probability >= 1) return true;
  // The top 53 bits as a fraction in [0, 1), exactly representable in a double.
  const double fraction = std::ldexp(static_cast<double>(Mix(trace_id) >> 11), -53);
  return fraction < probability;
}

TraceSampler::TraceSampler(Store& store, absl::Duration decision_wait,
                           std::unique_ptr<pqxx::connection> conn)
    : store_(store), decision_wait_(decision_wait), conn_(std::move(conn)) {}

TraceSampler::~TraceSampler() { StopLoop(); }

absl::StatusOr<std::unique_ptr<TraceSampler>> TraceSampler::Create(
    Store& store, absl::Duration decision_wait) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(store.conninfo());
    PrepareConnection(*conn);
  } catch (const std::exception& e) {
    return DatabaseError("cannot connect the trace sampler to the database", e);
  }
  return std::unique_ptr<TraceSampler>(
      new TraceSampler(store, decision_wait, std::move(conn)));
}

absl::Status TraceSampler::Reconnect() {
  try {
    auto conn = std::make_unique<pqxx::connection>(store_.conninfo());
    PrepareConnection(*conn);
    conn_ = std::move(conn);
  } catch (const std::exception& e) {
    return DatabaseError("cannot reconnect the trace sampler to the database", e);
  }
  return absl::OkStatus();
}

void TraceSampler::SetConfig(const v1::TraceConfig& config) {
  absl::MutexLock lock(&mu_);
  config_ = config;
  store_.SetSamplingOn(SamplingProbability(config) < 1);
}

absl::StatusOr<SamplingTally> TraceSampler::DecideQuietTraces(int64_t now_ns) {
  v1::Sampling sampling;
  double probability = 1;
  {
    absl::MutexLock lock(&mu_);
    sampling = config_.sampling();
    probability = SamplingProbability(config_);
  }
  const int64_t due_ns = now_ns - absl::ToInt64Nanoseconds(decision_wait_);
  SamplingTally tally;
  if (conn_ == nullptr || !conn_->is_open()) {
    absl::Status reconnected = Reconnect();
    if (!reconnected.ok()) return reconnected;
  }
  try {
    while (DecideSome(due_ns, sampling, probability, &tally) == kMaxTracesPerTransaction) {
    }
  } catch (const pqxx::broken_connection& e) {
    conn_.reset();  // reopened on the next call
    return DatabaseError("cannot decide sampled traces", e);
  } catch (const std::exception& e) {
    return DatabaseError("cannot decide sampled traces", e);
  }
  return tally;
}

int TraceSampler::DecideSome(int64_t due_ns, const v1::Sampling& sampling,
                             double probability, SamplingTally* tally) {
  {
    // Most ticks find nothing due: that is found out without the link lock.
    pqxx::read_transaction tx(*conn_);
    const bool any = tx.exec_prepared1(kAnyDueStatement, due_ns)[0].as<bool>();
    tx.commit();
    if (!any) return 0;
  }
  pqxx::work tx(*conn_);
  tx.exec_prepared(kLockStatement, kLinkLockKey);
  std::vector<int64_t> due;
  for (const auto& row : tx.exec_prepared(kDueStatement, due_ns, kMaxTracesPerTransaction)) {
    due.push_back(row[0].as<int64_t>());
  }
  if (due.empty()) {  // another replica decided them meanwhile
    tx.commit();
    return 0;
  }
  const int64_t slow_ns =
      sampling.keep_slower_than_ms() > 0 ? sampling.keep_slower_than_ms() * 1'000'000 : 0;
  SamplingTally::Count counts[5];  // by Decision
  std::vector<int64_t> dropped;
  int64_t dropped_spans = 0;
  int64_t measured = 0;
  for (const auto& row : tx.exec_prepared(kMeasureStatement, BigintArrayLiteral(due))) {
    ++measured;
    const int64_t trace_id = row[0].as<int64_t>();
    const int64_t spans = row[1].as<int64_t>();
    const bool failed = row[2].as<bool>();
    const int64_t duration_ns = row[4].as<int64_t>() - row[3].as<int64_t>();
    Decision decision;
    if (sampling.keep_errors() && failed) {
      decision = Decision::kKeptError;
    } else if (slow_ns > 0 && duration_ns >= slow_ns) {
      decision = Decision::kKeptSlow;
    } else if (KeptByProbability(internal::FromBigint(trace_id), probability)) {
      decision = Decision::kKeptProbability;
    } else {
      decision = Decision::kDroppedProbability;
      dropped.push_back(trace_id);
      dropped_spans += spans;
    }
    SamplingTally::Count& count = counts[static_cast<int>(decision)];
    count.traces += 1;
    count.spans += spans;
  }
  if (!dropped.empty()) {
    const int64_t deleted =
        tx.exec_prepared1(kDeleteStatement, BigintArrayLiteral(dropped))[0].as<int64_t>();
    if (deleted != dropped_spans) {
      // Cannot happen under the link lock; if it does, the counts say what was deleted.
      LogWarning("sampling: counted %d spans in %d dropped traces but deleted %d",
                 dropped_spans, dropped.size(), deleted);
      counts[static_cast<int>(Decision::kDroppedProbability)].spans = deleted;
    }
  }
  tx.exec_prepared(kSettleStatement, BigintArrayLiteral(due));
  std::vector<int64_t> decisions, traces, spans;
  for (int d = 1; d <= 4; ++d) {
    if (counts[d].traces == 0) continue;
    decisions.push_back(d);
    traces.push_back(counts[d].traces);
    spans.push_back(counts[d].spans);
  }
  if (!decisions.empty()) {
    tx.exec_prepared(kCountStatement, BigintArrayLiteral(decisions), BigintArrayLiteral(traces),
                     BigintArrayLiteral(spans));
  }
  tx.commit();
  auto add = [](SamplingTally::Count& to, const SamplingTally::Count& from) {
    to.traces += from.traces;
    to.spans += from.spans;
  };
  add(tally->kept_error, counts[static_cast<int>(Decision::kKeptError)]);
  add(tally->kept_slow, counts[static_cast<int>(Decision::kKeptSlow)]);
  add(tally->kept_probability, counts[static_cast<int>(Decision::kKeptProbability)]);
  add(tally->dropped_probability, counts[static_cast<int>(Decision::kDroppedProbability)]);
  tally->vanished += static_cast<int64_t>(due.size()) - measured;
  return static_cast<int>(due.size());
}

void TraceSampler::FollowConfig(const ConfigWatcher& watcher) {
  if (config_version_ != 0 && watcher.version() <= config_version_) return;
  absl::StatusOr<v1::ConfigVersion> config = store_.GetConfig();
  if (!config.ok()) {
    LogWarning("sampling: cannot read the config: %s", config.status().message());
    return;
  }
  SetConfig(config->config());
  config_version_ = config->version();
}

void TraceSampler::StartLoop(const ConfigWatcher& watcher, absl::Duration tick) {
  FollowConfig(watcher);
  thread_ = std::thread([this, &watcher, tick] {
    std::string last_error;
    for (;;) {
      FollowConfig(watcher);
      absl::StatusOr<SamplingTally> tally = DecideQuietTraces(absl::GetCurrentTimeNanos());
      if (!tally.ok()) {
        // Once per distinct error, not once per tick.
        std::string error(tally.status().message());
        if (error != last_error) LogWarning("sampling: %s", error);
        last_error = std::move(error);
      } else {
        last_error.clear();
      }
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), tick)) return;
    }
  });
}

void TraceSampler::StopLoop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace reptrace::controller

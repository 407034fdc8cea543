// The controller's PostgreSQL schema, as numbered migrations applied at start-up.
//
// Migrations are append-only: a released migration is never edited, a change is a new
// one. ApplyMigrations is safe when several controller replicas start at the same time:
// it runs in one transaction that first takes a transaction-scoped advisory lock, so the
// replicas apply the missing migrations one after the other and the later ones find
// nothing left to do.
#ifndef REPTRACE_CONTROLLER_SCHEMA_H_
#define REPTRACE_CONTROLLER_SCHEMA_H_

#include <limits>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/statusor.h"

namespace reptrace::controller {

// Table and column names, pasted unquoted into SQL (COPY needs them as identifiers).
inline constexpr char kSpansTable[] = "spans";
inline constexpr char kSpansStagingTable[] = "spans_staging";
inline constexpr char kTracesTable[] = "traces";
inline constexpr char kIngestedBatchesTable[] = "ingested_batches";
inline constexpr char kAgentsTable[] = "agents";
inline constexpr char kSchemaMigrationsTable[] = "schema_migrations";
inline constexpr char kConfigVersionsTable[] = "config_versions";
inline constexpr char kSamplingPendingTable[] = "sampling_pending";
inline constexpr char kSamplingCountsTable[] = "sampling_counts";

// The LISTEN/NOTIFY channel on which a new config version is announced; the payload is
// the version number in decimal.
inline constexpr char kConfigChannel[] = "reptrace_config";

// pg_advisory_xact_lock keys. Arbitrary constants, distinct from each other; the high
// bytes spell "rept" so they are unlikely to meet another application's keys.
inline constexpr long long kMigrationLockKey = 0x7265707400000001LL;
inline constexpr long long kLinkLockKey = 0x7265707400000002LL;
inline constexpr long long kConfigLockKey = 0x7265707400000003LL;  // config changes

struct Migration {
  int version;
  const char* description;
  const char* sql;  // one or more statements
};

// Every migration, in version order.
const std::vector<Migration>& Migrations();

// Applies the migrations the database lacks, up to version `up_to` (tests use it to
// build an older schema). Returns the versions it applied (empty when the schema was
// already current).
absl::StatusOr<std::vector<int>> ApplyMigrations(pqxx::connection& conn,
                                                 int up_to = std::numeric_limits<int>::max());

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_SCHEMA_H_

// reptracectl's --json output: query responses as JSON documents. Pure.
//
// Conventions: ids are 16-lower-case-hex-digit strings (common/ids.h FormatId); a span
// with no parent has "parent_span_id": "" (a string, so the field has one type); times
// are JSON integers in ns since the Unix epoch, durations JSON integers in ns; kind is
// "client"/"server" ("unspecified" if the agent did not set it); status is
// "ok"/"error"/"unset"; peer is FormatEndpoint(span.peer).
#ifndef REPTRACE_CLI_JSON_OUTPUT_H_
#define REPTRACE_CLI_JSON_OUTPUT_H_

#include <nlohmann/json.hpp>

#include "proto/reptrace.pb.h"

namespace reptrace {
namespace cli {

// {"span_id", "parent_span_id", "service", "node", "pid", "kind", "name", "peer",
//  "start_ns", "duration_ns", "status", "attributes": {string: string}}
nlohmann::json SpanToJson(const v1::Span& span);

// {"trace_id", "spans": [SpanToJson...]} in the order the controller sent them.
nlohmann::json TraceToJson(const v1::Trace& trace);

// {"traces": [{"trace_id", "start_ns", "duration_ns", "span_count", "root_service",
//              "root_name", "status", "services": [string]}]}
nlohmann::json TraceListToJson(const v1::ListTracesResponse& response);

// {"agents": [{"agent_id", "node", "agent_version", "hostname", "connected",
//              "connected_at_ns", "last_seen_ns", "batches_stored", "spans_stored",
//              "counters": {"processes_connected", "events_received", "records_malformed",
//                           "hook_events_dropped", "spans_built", "spans_dropped",
//                           "batches_sent", "batches_acked", "batches_resent",
//                           "events_without_connection"}}]}
nlohmann::json AgentListToJson(const v1::ListAgentsResponse& response);

// {"agents": [{"agent_id", "node", "connected", "events_received", "spans_built",
//              "spans_stored",
//              "drops": {"hook_events_dropped", "hook_events_rate_limited",
//                        "records_malformed", "events_without_connection",
//                        "spans_dropped", "spans_rejected"}}],
//  "sampling": {"kept": {"error": {"traces", "spans"}, "slow": {...},
//                        "probability": {...}},
//               "dropped": {"probability": {"traces", "spans"}},
//               "traces_pending"}}
nlohmann::json StatsToJson(const v1::GetStatsResponse& response);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_JSON_OUTPUT_H_

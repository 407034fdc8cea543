#include "cli/json_output.h"

#include <algorithm>
#include <map>
#include <string>

#include "cli/text_output.h"
#include "common/endpoint.h"
#include "common/ids.h"

namespace reptrace {
namespace cli {

nlohmann::json SpanToJson(const v1::Span& span) {
  // A std::map so attributes come out sorted (the proto map's order is unspecified).
  std::map<std::string, std::string> attributes(span.attributes().begin(),
                                                span.attributes().end());
  return nlohmann::json{
      {"span_id", FormatId(span.span_id())},
      {"parent_span_id", span.parent_span_id() == 0 ? "" : FormatId(span.parent_span_id())},
      {"service", span.service()},
      {"node", span.node()},
      {"pid", span.pid()},
      {"kind", KindName(span.kind())},
      {"name", span.name()},
      {"peer", FormatEndpoint(span.peer())},
      {"start_ns", span.start_ns()},
      {"duration_ns", std::max<int64_t>(0, span.end_ns() - span.start_ns())},
      {"status", StatusName(span.status())},
      {"attributes", attributes},
  };
}

nlohmann::json TraceToJson(const v1::Trace& trace) {
  nlohmann::json spans = nlohmann::json::array();
  for (const v1::Span& span : trace.spans()) spans.push_back(SpanToJson(span));
  return nlohmann::json{{"trace_id", FormatId(trace.trace_id())}, {"spans", std::move(spans)}};
}

nlohmann::json TraceListToJson(const v1::ListTracesResponse& response) {
  nlohmann::json traces = nlohmann::json::array();
  for (const v1::TraceSummary& trace : response.traces()) {
    nlohmann::json services = nlohmann::json::array();
    for (const std::string& service : trace.services()) services.push_back(service);
    traces.push_back({
        {"trace_id", FormatId(trace.trace_id())},
        {"start_ns", trace.start_ns()},
        {"duration_ns", trace.duration_ns()},
        {"span_count", trace.span_count()},
        {"root_service", trace.root_service()},
        {"root_name", trace.root_name()},
        {"status", StatusName(trace.status())},
        {"services", std::move(services)},
    });
  }
  return nlohmann::json{{"traces", std::move(traces)}};
}

nlohmann::json AgentListToJson(const v1::ListAgentsResponse& response) {
  nlohmann::json agents = nlohmann::json::array();
  for (const v1::AgentInfo& agent : response.agents()) {
    const v1::AgentCounters& c = agent.counters();
    agents.push_back({
        {"agent_id", agent.agent_id()},
        {"node", agent.node()},
        {"agent_version", agent.agent_version()},
        {"hostname", agent.hostname()},
        {"connected", agent.connected()},
        {"connected_at_ns", agent.connected_at_ns()},
        {"last_seen_ns", agent.last_seen_ns()},
        {"config_version", agent.config_version()},
        {"batches_stored", agent.batches_stored()},
        {"spans_stored", agent.spans_stored()},
        {"counters",
         {
             {"processes_connected", c.processes_connected()},
             {"events_received", c.events_received()},
             {"records_malformed", c.records_malformed()},
             {"hook_events_dropped", c.hook_events_dropped()},
             {"spans_built", c.spans_built()},
             {"spans_dropped", c.spans_dropped()},
             {"batches_sent", c.batches_sent()},
             {"batches_acked", c.batches_acked()},
             {"batches_resent", c.batches_resent()},
             {"events_without_connection", c.events_without_connection()},
             {"inband_peers_not_hooked", c.inband_peers_not_hooked()},
             {"hook_events_rate_limited", c.hook_events_rate_limited()},
         }},
    });
  }
  return nlohmann::json{{"agents", std::move(agents)}};
}

nlohmann::json StatsToJson(const v1::GetStatsResponse& response) {
  nlohmann::json agents = nlohmann::json::array();
  for (const v1::AgentStats& a : response.agents()) {
    agents.push_back({
        {"agent_id", a.agent_id()},
        {"node", a.node()},
        {"connected", a.connected()},
        {"events_received", a.events_received()},
        {"spans_built", a.spans_built()},
        {"spans_stored", a.spans_stored()},
        {"drops",
         {
             {"hook_events_dropped", a.hook_events_dropped()},
             {"hook_events_rate_limited", a.hook_events_rate_limited()},
             {"records_malformed", a.records_malformed()},
             {"events_without_connection", a.events_without_connection()},
             {"spans_dropped", a.spans_dropped()},
             {"spans_rejected", a.spans_rejected()},
         }},
    });
  }
  auto count = [](const v1::SamplingCount& c) {
    return nlohmann::json{{"traces", c.traces()}, {"spans", c.spans()}};
  };
  const v1::SamplingStats& s = response.sampling();
  return {
      {"agents", agents},
      {"sampling",
       {
           {"kept",
            {{"error", count(s.kept_error())},
             {"slow", count(s.kept_slow())},
             {"probability", count(s.kept_probability())}}},
           {"dropped", {{"probability", count(s.dropped_probability())}}},
           {"traces_pending", s.traces_pending()},
       }},
  };
}

}  // namespace cli
}  // namespace reptrace

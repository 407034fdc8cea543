#include "cli/json_output.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace reptrace {
namespace cli {
namespace {

std::set<std::string> Keys(const nlohmann::json& object) {
  std::set<std::string> keys;
  for (auto it = object.begin(); it != object.end(); ++it) keys.insert(it.key());
  return keys;
}

v1::Trace TwoSpanTrace() {
  v1::Trace trace;
  trace.set_trace_id(0x00ab00cd00ef0012ULL);
  v1::Span* root = trace.add_spans();
  root->set_span_id(0x1111);
  root->set_kind(v1::SPAN_KIND_CLIENT);
  root->set_service("curl");
  root->set_node("node-a");
  root->set_pid(4242);
  root->set_name("GET /");
  root->mutable_peer()->set_ip(std::string("\x0a\x00\x00\x02", 4));
  root->mutable_peer()->set_port(80);
  root->set_start_ns(1'700'000'000'000'000'000);
  root->set_end_ns(1'700'000'000'003'000'000);
  root->set_status(v1::SPAN_STATUS_OK);
  v1::Span* child = trace.add_spans();
  child->set_span_id(0xfedcba9876543210ULL);
  child->set_parent_span_id(0x1111);
  child->set_kind(v1::SPAN_KIND_SERVER);
  child->set_service("nginx");
  child->set_start_ns(1'700'000'000'001'000'000);
  child->set_end_ns(1'700'000'000'002'000'000);
  child->set_status(v1::SPAN_STATUS_ERROR);
  (*child->mutable_attributes())["http.status_code"] = "500";
  return trace;
}

TEST(JsonOutputTest, TraceHasExactlyTheContractKeysAndTypes) {
  nlohmann::json doc = TraceToJson(TwoSpanTrace());
  EXPECT_EQ(Keys(doc), (std::set<std::string>{"trace_id", "spans"}));
  EXPECT_EQ(doc["trace_id"], "00ab00cd00ef0012");
  ASSERT_TRUE(doc["spans"].is_array());
  ASSERT_EQ(doc["spans"].size(), 2u);
  for (const nlohmann::json& span : doc["spans"]) {
    EXPECT_EQ(Keys(span), (std::set<std::string>{"span_id", "parent_span_id", "service", "node",
                                                 "pid", "kind", "name", "peer", "start_ns",
                                                 "duration_ns", "status", "attributes"}));
    for (const char* key : {"span_id", "parent_span_id", "service", "node", "kind", "name",
                            "peer", "status"}) {
      EXPECT_TRUE(span[key].is_string()) << key;
    }
    for (const char* key : {"pid", "start_ns", "duration_ns"}) {
      EXPECT_TRUE(span[key].is_number_integer()) << key;
    }
    EXPECT_TRUE(span["attributes"].is_object());
    EXPECT_EQ(span["span_id"].get<std::string>().size(), 16u);
  }
}

TEST(JsonOutputTest, SpanValuesFollowTheConventions) {
  nlohmann::json doc = TraceToJson(TwoSpanTrace());
  const nlohmann::json& root = doc["spans"][0];
  EXPECT_EQ(root["span_id"], "0000000000001111");
  EXPECT_EQ(root["parent_span_id"], "");
  EXPECT_EQ(root["kind"], "client");
  EXPECT_EQ(root["status"], "ok");
  EXPECT_EQ(root["peer"], "10.0.0.2:80");
  EXPECT_EQ(root["pid"], 4242);
  EXPECT_EQ(root["start_ns"].get<int64_t>(), 1'700'000'000'000'000'000);
  EXPECT_EQ(root["duration_ns"], 3'000'000);
  EXPECT_EQ(root["attributes"], nlohmann::json::object());

  const nlohmann::json& child = doc["spans"][1];
  EXPECT_EQ(child["span_id"], "fedcba9876543210");
  EXPECT_EQ(child["parent_span_id"], "0000000000001111");
  EXPECT_EQ(child["kind"], "server");
  EXPECT_EQ(child["status"], "error");
  EXPECT_EQ(child["peer"], "?");
  EXPECT_EQ(child["duration_ns"], 1'000'000);
  EXPECT_EQ(child["attributes"]["http.status_code"], "500");
}

TEST(JsonOutputTest, TraceListShape) {
  v1::ListTracesResponse response;
  v1::TraceSummary* summary = response.add_traces();
  summary->set_trace_id(0x42);
  summary->set_start_ns(1'700'000'000'000'000'000);
  summary->set_duration_ns(1234);
  summary->set_span_count(4);
  summary->set_root_service("curl");
  summary->set_root_name("GET /");
  summary->set_status(v1::SPAN_STATUS_ERROR);
  summary->add_services("curl");
  summary->add_services("nginx");

  nlohmann::json doc = TraceListToJson(response);
  EXPECT_EQ(Keys(doc), (std::set<std::string>{"traces"}));
  ASSERT_EQ(doc["traces"].size(), 1u);
  const nlohmann::json& trace = doc["traces"][0];
  EXPECT_EQ(Keys(trace),
            (std::set<std::string>{"trace_id", "start_ns", "duration_ns", "span_count",
                                   "root_service", "root_name", "status", "services"}));
  EXPECT_EQ(trace["trace_id"], "0000000000000042");
  EXPECT_TRUE(trace["start_ns"].is_number_integer());
  EXPECT_EQ(trace["duration_ns"], 1234);
  EXPECT_EQ(trace["span_count"], 4);
  EXPECT_EQ(trace["status"], "error");
  EXPECT_EQ(trace["services"], nlohmann::json({"curl", "nginx"}));
}

TEST(JsonOutputTest, EmptyListsAreEmptyArrays) {
  EXPECT_EQ(TraceListToJson(v1::ListTracesResponse()).dump(), R"({"traces":[]})");
  EXPECT_EQ(AgentListToJson(v1::ListAgentsResponse()).dump(), R"({"agents":[]})");
  v1::Trace empty;
  empty.set_trace_id(1);
  EXPECT_EQ(TraceToJson(empty).dump(), R"({"spans":[],"trace_id":"0000000000000001"})");
}

TEST(JsonOutputTest, StatsShapeAndValues) {
  v1::GetStatsResponse response;
  v1::AgentStats* agent = response.add_agents();
  agent->set_agent_id("agent-1");
  agent->set_node("node-a");
  agent->set_connected(true);
  agent->set_events_received(100);
  agent->set_spans_built(40);
  agent->set_spans_stored(39);
  agent->set_hook_events_dropped(1);
  agent->set_hook_events_rate_limited(2);
  agent->set_records_malformed(3);
  agent->set_events_without_connection(4);
  agent->set_spans_dropped(5);
  agent->set_spans_rejected(6);
  v1::SamplingStats* s = response.mutable_sampling();
  s->mutable_kept_error()->set_traces(7);
  s->mutable_kept_error()->set_spans(8);
  s->mutable_kept_slow()->set_traces(9);
  s->mutable_kept_slow()->set_spans(10);
  s->mutable_kept_probability()->set_traces(11);
  s->mutable_kept_probability()->set_spans(12);
  s->mutable_dropped_probability()->set_traces(13);
  s->mutable_dropped_probability()->set_spans(14);
  s->set_traces_pending(15);

  nlohmann::json doc = StatsToJson(response);

  EXPECT_EQ(Keys(doc), (std::set<std::string>{"agents", "sampling"}));
  ASSERT_EQ(doc["agents"].size(), 1u);
  const nlohmann::json& a = doc["agents"][0];
  EXPECT_EQ(Keys(a), (std::set<std::string>{"agent_id", "node", "connected", "events_received",
                                            "spans_built", "spans_stored", "drops"}));
  EXPECT_EQ(a["agent_id"], "agent-1");
  EXPECT_EQ(a["connected"], true);
  EXPECT_EQ(a["events_received"], 100);
  EXPECT_EQ(a["spans_built"], 40);
  EXPECT_EQ(a["spans_stored"], 39);
  EXPECT_EQ(a["drops"], nlohmann::json::parse(
                            R"({"hook_events_dropped": 1, "hook_events_rate_limited": 2,
                                "records_malformed": 3, "events_without_connection": 4,
                                "spans_dropped": 5, "spans_rejected": 6})"));
  EXPECT_EQ(doc["sampling"], nlohmann::json::parse(R"({
      "kept": {"error": {"traces": 7, "spans": 8}, "slow": {"traces": 9, "spans": 10},
               "probability": {"traces": 11, "spans": 12}},
      "dropped": {"probability": {"traces": 13, "spans": 14}},
      "traces_pending": 15})"));
  EXPECT_EQ(StatsToJson(v1::GetStatsResponse())["agents"], nlohmann::json::array());
}

TEST(JsonOutputTest, AgentListShape) {
  v1::ListAgentsResponse response;
  v1::AgentInfo* agent = response.add_agents();
  agent->set_agent_id("9b2f6c1e-0000-4000-8000-000000000001");
  agent->set_node("node-a");
  agent->set_agent_version("0.1.0");
  agent->set_hostname("host-a");
  agent->set_connected(true);
  agent->set_connected_at_ns(5);
  agent->set_last_seen_ns(6);
  agent->set_config_version(4);
  agent->set_batches_stored(7);
  agent->set_spans_stored(8);
  agent->mutable_counters()->set_hook_events_dropped(9);
  agent->mutable_counters()->set_inband_peers_not_hooked(11);
  agent->mutable_counters()->set_spans_dropped(10);

  nlohmann::json doc = AgentListToJson(response);
  ASSERT_EQ(doc["agents"].size(), 1u);
  const nlohmann::json& a = doc["agents"][0];
  EXPECT_EQ(Keys(a), (std::set<std::string>{"agent_id", "node", "agent_version", "hostname",
                                            "connected", "connected_at_ns", "last_seen_ns",
                                            "config_version", "batches_stored", "spans_stored", "counters"}));
  EXPECT_EQ(a["connected"], true);
  EXPECT_EQ(a["spans_stored"], 8);
  EXPECT_EQ(a["config_version"], 4);
  EXPECT_EQ(Keys(a["counters"]),
            (std::set<std::string>{"processes_connected", "events_received", "records_malformed",
                                   "hook_events_dropped", "spans_built", "spans_dropped",
                                   "batches_sent", "batches_acked", "batches_resent",
                                   "events_without_connection", "inband_peers_not_hooked",
                                   "hook_events_rate_limited"}));
  EXPECT_EQ(a["counters"]["hook_events_dropped"], 9);
  EXPECT_EQ(a["counters"]["inband_peers_not_hooked"], 11);
  EXPECT_EQ(a["counters"]["spans_dropped"], 10);
}

}  // namespace
}  // namespace cli
}  // namespace reptrace

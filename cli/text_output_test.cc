#include "cli/text_output.h"

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace cli {
namespace {

TEST(FormatDurationTest, PicksUnitAndThreeDigits) {
  EXPECT_EQ(FormatDuration(0, Charset::kAscii), "0ns");
  EXPECT_EQ(FormatDuration(-5, Charset::kAscii), "0ns");
  EXPECT_EQ(FormatDuration(850, Charset::kAscii), "850ns");
  EXPECT_EQ(FormatDuration(12'345, Charset::kAscii), "12.3us");
  EXPECT_EQ(FormatDuration(12'345, Charset::kUnicode), "12.3\xC2\xB5s");
  EXPECT_EQ(FormatDuration(1'234'567, Charset::kAscii), "1.23ms");
  EXPECT_EQ(FormatDuration(123'456'789, Charset::kAscii), "123ms");
  EXPECT_EQ(FormatDuration(999'900, Charset::kAscii), "1.00ms");  // not "1000us"
  EXPECT_EQ(FormatDuration(4'560'000'000, Charset::kAscii), "4.56s");
  EXPECT_EQ(FormatDuration(7'200'000'000'000, Charset::kAscii), "7200s");
}

TEST(FormatTimestampTest, MillisecondsInTheGivenZone) {
  EXPECT_EQ(FormatTimestamp(1'700'000'000'123'456'789, absl::UTCTimeZone()),
            "2023-11-14 22:13:20.123");
  EXPECT_EQ(FormatTimestamp(1'700'000'000'123'456'789, absl::FixedTimeZone(3600)),
            "2023-11-14 23:13:20.123");
  EXPECT_EQ(FormatTimestamp(0, absl::UTCTimeZone()), "-");
}

TEST(ChooseCharsetTest, UnicodeOnlyOnAUtf8TerminalWithoutNoColor) {
  std::map<std::string, std::string> env = {{"LANG", "en_US.UTF-8"}};
  auto getenv = [&env](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_EQ(ChooseCharset(false, true, getenv), Charset::kUnicode);
  EXPECT_EQ(ChooseCharset(true, true, getenv), Charset::kAscii);   // --ascii
  EXPECT_EQ(ChooseCharset(false, false, getenv), Charset::kAscii);  // a pipe
  env["LC_ALL"] = "C";
  EXPECT_EQ(ChooseCharset(false, true, getenv), Charset::kAscii);  // LC_ALL wins
  env["LC_ALL"] = "C.utf8";
  EXPECT_EQ(ChooseCharset(false, true, getenv), Charset::kUnicode);
  env["NO_COLOR"] = "";
  EXPECT_EQ(ChooseCharset(false, true, getenv), Charset::kAscii);
  env.clear();
  EXPECT_EQ(ChooseCharset(false, true, getenv), Charset::kAscii);  // no locale at all
}

TEST(RenderTableTest, AlignsColumnsByDisplayWidth) {
  std::string table = RenderTable({"A", "BB", "C"}, {{"1\xC2\xB5s", "x", "last"}, {"22", "", "z"}});
  EXPECT_EQ(table,
            "A    BB  C\n"
            "1\xC2\xB5s  x   last\n"
            "22       z\n");
}

TEST(FormatTraceListTest, OneRowPerTraceWithEveryColumn) {
  v1::ListTracesResponse response;
  v1::TraceSummary* t = response.add_traces();
  t->set_trace_id(0xabc);
  t->set_start_ns(1'700'000'000'000'000'000);
  t->set_duration_ns(2'500'000);
  t->set_span_count(4);
  t->set_root_service("curl");
  t->set_root_name("GET /api");
  t->set_status(v1::SPAN_STATUS_ERROR);
  t->add_services("curl");
  t->add_services("nginx");
  std::string text = FormatTraceList(response, absl::UTCTimeZone(), Charset::kAscii);
  EXPECT_EQ(text,
            "TRACE ID          START                    DURATION  SPANS  ROOT SERVICE  ROOT NAME"
            "  STATUS  SERVICES\n"
            "0000000000000abc  2023-11-14 22:13:20.000  2.50ms    4      curl          GET /api "
            "  error   curl,nginx\n");
  EXPECT_EQ(FormatTraceList(v1::ListTracesResponse(), absl::UTCTimeZone(), Charset::kAscii),
            "no traces\n");
}

TEST(FormatAgentListTest, ShowsIdentityStateAndDrops) {
  v1::ListAgentsResponse response;
  v1::AgentInfo* a = response.add_agents();
  a->set_node("node-a");
  a->set_agent_id("agent-1");
  a->set_agent_version("0.1.0");
  a->set_connected(false);
  a->set_last_seen_ns(1'700'000'000'000'000'000);
  a->set_config_version(3);
  a->set_batches_stored(12);
  a->set_spans_stored(345);
  a->mutable_counters()->set_hook_events_dropped(6);
  a->mutable_counters()->set_spans_dropped(7);
  a->mutable_counters()->set_records_malformed(8);
  a->mutable_counters()->set_events_without_connection(5);
  a->mutable_counters()->set_inband_peers_not_hooked(4);
  std::string text = FormatAgentList(response, absl::UTCTimeZone());
  EXPECT_TRUE(absl::StartsWith(text, "NODE    AGENT ID  VERSION  CONNECTED  LAST SEEN")) << text;
  EXPECT_TRUE(absl::StrContains(
      text, "node-a  agent-1   0.1.0    no         2023-11-14 22:13:20.000  3       12       345    6"))
      << text;
  EXPECT_TRUE(absl::EndsWith(text, "  7           8          5              4\n")) << text;
  EXPECT_EQ(FormatAgentList(v1::ListAgentsResponse(), absl::UTCTimeZone()), "no agents\n");
}

v1::GetStatsResponse SomeStats() {
  v1::GetStatsResponse response;
  v1::AgentStats* a = response.add_agents();
  a->set_node("node-a");
  a->set_agent_id("agent-1");
  a->set_connected(true);
  a->set_events_received(120000);
  a->set_spans_built(4000);
  a->set_spans_stored(3990);
  a->set_hook_events_dropped(1);
  a->set_hook_events_rate_limited(22);
  a->set_records_malformed(3);
  a->set_events_without_connection(4);
  a->set_spans_dropped(5);
  a->set_spans_rejected(6);
  v1::SamplingStats* s = response.mutable_sampling();
  s->mutable_kept_error()->set_traces(7);
  s->mutable_kept_error()->set_spans(28);
  s->mutable_kept_slow()->set_traces(2);
  s->mutable_kept_slow()->set_spans(9);
  s->mutable_kept_probability()->set_traces(480);
  s->mutable_kept_probability()->set_spans(1920);
  s->mutable_dropped_probability()->set_traces(511);
  s->mutable_dropped_probability()->set_spans(2044);
  s->set_traces_pending(13);
  return response;
}

TEST(FormatStatsTest, ShowsAgentsDropsByReasonAndSamplingDecisions) {
  EXPECT_EQ(FormatStats(SomeStats()),
            "Agents\n"
            "NODE    AGENT ID  CONNECTED  EVENTS  SPANS BUILT  SPANS STORED  HOOK DROPS  "
            "RATE LIMITED  MALFORMED  NO CONNECTION  SPAN DROPS  REJECTED\n"
            "node-a  agent-1   yes        120000  4000         3990          1           "
            "22            3          4              5           6\n"
            "\n"
            "Sampling (all controllers)\n"
            "DECISION              TRACES  SPANS\n"
            "kept: error           7       28\n"
            "kept: slow            2       9\n"
            "kept: probability     480     1920\n"
            "dropped: probability  511     2044\n"
            "pending               13      -\n");
}

TEST(FormatStatsTest, NoAgentsAndNothingDecidedYet) {
  EXPECT_EQ(FormatStats(v1::GetStatsResponse()),
            "Agents: none\n"
            "\n"
            "Sampling (all controllers)\n"
            "DECISION              TRACES  SPANS\n"
            "kept: error           0       0\n"
            "kept: slow            0       0\n"
            "kept: probability     0       0\n"
            "dropped: probability  0       0\n"
            "pending               0       -\n");
}

TEST(FormatAgentListTest, AnAgentThatAcknowledgedNoConfigShowsADash) {
  v1::ListAgentsResponse response;
  v1::AgentInfo* a = response.add_agents();
  a->set_node("node-a");
  a->set_agent_id("agent-1");
  a->set_agent_version("0.1.0");
  a->set_last_seen_ns(1'700'000'000'000'000'000);
  EXPECT_TRUE(absl::StrContains(FormatAgentList(response, absl::UTCTimeZone()),
                                "2023-11-14 22:13:20.000  -       0"));
}

}  // namespace
}  // namespace cli
}  // namespace reptrace

#include "cli/config_document.h"

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace cli {
namespace {

using google::protobuf::util::MessageDifferencer;

v1::TraceConfig SampleConfig() {
  v1::TraceConfig config;
  config.set_enabled(true);
  config.set_capture_bytes(32);
  config.mutable_sampling()->set_probability(1.0);
  v1::TraceFilter* filter = config.add_filters();
  filter->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  filter->add_services("healthcheck");
  return config;
}

TEST(TraceConfigToJsonTest, ProtoNamesInOrderWithDefaultsShown) {
  // Fields left out show their effective values (common/trace_config.h): on, 128 bytes,
  // every trace kept.
  v1::TraceConfig config;
  EXPECT_EQ(TraceConfigToJson(config).dump(),
            R"({"enabled":true,"filters":[],"trace_unix_sockets":false,"capture_bytes":128,)"
            R"("max_events_per_second":0,"sampling":{"probability":1,"keep_errors":false,)"
            R"("keep_slower_than_ms":"0"},"inband_ports":[]})");
  config.set_enabled(false);
  config.set_capture_bytes(0);
  config.mutable_sampling()->set_probability(0);
  EXPECT_EQ(TraceConfigToJson(config).dump(),
            R"({"enabled":false,"filters":[],"trace_unix_sockets":false,"capture_bytes":0,)"
            R"("max_events_per_second":0,"sampling":{"probability":0,"keep_errors":false,)"
            R"("keep_slower_than_ms":"0"},"inband_ports":[]})");
}

TEST(TraceConfigFromJsonTest, UnknownFieldIsNamedWithItsPath) {
  absl::StatusOr<v1::TraceConfig> config = TraceConfigFromJson(
      nlohmann::ordered_json::parse(R"({"filters":[{"action":"ACTION_INCLUDE","port":1}]})"));
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StartsWith(config.status().message(),
                               "unknown config field \"filters[0].port\": TraceFilter has no "
                               "field \"port\""))
      << config.status();
}

TEST(ApplyAssignmentsTest, ChangesExactlyTheAssignedFields) {
  absl::StatusOr<v1::TraceConfig> changed = ApplyAssignments(
      SampleConfig(), {"enabled=false", "sampling.probability=0.5", "sampling.keep_errors=true",
                       "max_events_per_second=1000", R"(inband_ports=[{"first":6379}])"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  v1::TraceConfig expected = SampleConfig();
  expected.set_enabled(false);
  expected.mutable_sampling()->set_probability(0.5);
  expected.mutable_sampling()->set_keep_errors(true);
  expected.set_max_events_per_second(1000);
  expected.add_inband_ports()->set_first(6379);
  EXPECT_TRUE(MessageDifferencer::Equals(*changed, expected)) << changed->DebugString();
}

TEST(ApplyAssignmentsTest, CreatesAnUnsetMessageAndReplacesAList) {
  v1::TraceConfig config = SampleConfig();
  config.clear_sampling();
  absl::StatusOr<v1::TraceConfig> changed = ApplyAssignments(
      config, {"sampling.keep_slower_than_ms=250",
               R"(filters=[{"action":"ACTION_INCLUDE","peer_ports":[{"first":5432}]}])"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->sampling().keep_slower_than_ms(), 250);
  ASSERT_EQ(changed->filters_size(), 1);
  EXPECT_EQ(changed->filters(0).action(), v1::TraceFilter::ACTION_INCLUDE);
  EXPECT_EQ(changed->filters(0).peer_ports(0).first(), 5432u);
}

TEST(ApplyAssignmentsTest, AcceptsJsonNames) {
  absl::StatusOr<v1::TraceConfig> changed =
      ApplyAssignments(SampleConfig(), {"captureBytes=64", "sampling.keepErrors=true"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->capture_bytes(), 64u);
  EXPECT_TRUE(changed->sampling().keep_errors());
}

TEST(ApplyAssignmentsTest, ErrorsNameTheKey) {
  struct Case {
    std::string assignment;
    std::string message_start;
  };
  for (const Case& c : std::vector<Case>{
           {"bogus=1", "unknown config key \"bogus\": TraceConfig has no field \"bogus\""},
           {"sampling.rate=1", "unknown config key \"sampling.rate\": Sampling has no field"},
           {"enabled.x=1", "bad config key \"enabled.x\": \"enabled\" is not a message field"},
           {"enabled", "bad assignment \"enabled\": expected KEY=VALUE"},
           {"enabled=yes", "bad value for enabled: expected true or false, got \"yes\""},
           {"capture_bytes=lots", "bad value for capture_bytes: expected a number"},
           {"capture_bytes=-1", "bad value for capture_bytes: (capture_bytes): invalid value -1"},
           {"inband_ports=6379", "bad value for inband_ports: expected a JSON list"},
           {"filters=[{\"action\":\"NOPE\"}]", "bad value for filters: "},
       }) {
    absl::StatusOr<v1::TraceConfig> changed = ApplyAssignments(SampleConfig(), {c.assignment});
    ASSERT_FALSE(changed.ok()) << c.assignment;
    EXPECT_EQ(changed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(changed.status().message(), c.message_start))
        << c.assignment << ": " << changed.status();
  }
}

TEST(ParseConfigDocumentTest, JsonAndYamlGiveTheSameConfig) {
  absl::StatusOr<v1::TraceConfig> json = ParseConfigDocument(R"(
    {"enabled": true, "capture_bytes": 64, "sampling": {"probability": 0.25},
     "filters": [{"action": "ACTION_EXCLUDE", "services": ["80"], "peer_ports": [{"first": 5432}]}]}
  )");
  absl::StatusOr<v1::TraceConfig> yaml = ParseConfigDocument(R"(# a comment
enabled: true
capture_bytes: 64
sampling:
  probability: 0.25
filters:
  - action: ACTION_EXCLUDE
    services: ["80"]
    peer_ports:
      - first: 5432
)");
  ASSERT_TRUE(json.ok()) << json.status();
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*json, *yaml)) << yaml->DebugString();
  EXPECT_EQ(yaml->filters(0).services(0), "80");
  EXPECT_EQ(yaml->sampling().probability(), 0.25);
}

TEST(ParseConfigDocumentTest, SyntaxErrorsSayWhere) {
  absl::StatusOr<v1::TraceConfig> json = ParseConfigDocument("{\"enabled\": tru}");
  ASSERT_FALSE(json.ok());
  EXPECT_TRUE(absl::StartsWith(json.status().message(), "bad JSON: parse error at line 1"))
      << json.status();
  absl::StatusOr<v1::TraceConfig> yaml = ParseConfigDocument("enabled: true\n  bad: [\n");
  ASSERT_FALSE(yaml.ok());
  EXPECT_TRUE(absl::StartsWith(yaml.status().message(), "bad YAML at line")) << yaml.status();
  absl::StatusOr<v1::TraceConfig> empty = ParseConfigDocument("# nothing\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(absl::StartsWith(empty.status().message(), "no config in it")) << empty.status();
  absl::StatusOr<v1::TraceConfig> list = ParseConfigDocument("- 1\n- 2\n");
  ASSERT_FALSE(list.ok());
  EXPECT_TRUE(absl::StartsWith(list.status().message(), "bad YAML: expected a mapping"))
      << list.status();
}

TEST(FormatConfigVersionTest, ShowsTheDocumentYamlLike) {
  v1::ConfigVersion version;
  version.set_version(3);
  version.set_author("alice@host-a");
  version.set_created_ns(1'700'000'000'000'000'000);
  *version.mutable_config() = SampleConfig();
  version.mutable_config()->add_filters()->set_action(v1::TraceFilter::ACTION_INCLUDE);
  version.mutable_config()->mutable_filters(1)->add_peer_ports()->set_first(5432);
  EXPECT_EQ(FormatConfigVersion(version, absl::UTCTimeZone()),
            "version: 3\n"
            "author: alice@host-a\n"
            "created: 2023-11-14 22:13:20.000\n"
            "config:\n"
            "  enabled: true\n"
            "  filters:\n"
            "    - action: ACTION_EXCLUDE\n"
            "      services: [healthcheck]\n"
            "      processes: []\n"
            "      nodes: []\n"
            "      local_ports: []\n"
            "      peer_ports: []\n"
            "      peer_cidrs: []\n"
            "      direction: DIRECTION_ANY\n"
            "    - action: ACTION_INCLUDE\n"
            "      services: []\n"
            "      processes: []\n"
            "      nodes: []\n"
            "      local_ports: []\n"
            "      peer_ports:\n"
            "        - first: 5432\n"
            "          last: 0\n"
            "      peer_cidrs: []\n"
            "      direction: DIRECTION_ANY\n"
            "  trace_unix_sockets: false\n"
            "  capture_bytes: 32\n"
            "  max_events_per_second: 0\n"
            "  sampling:\n"
            "    probability: 1\n"
            "    keep_errors: false\n"
            "    keep_slower_than_ms: 0\n"
            "  inband_ports: []\n");
}

TEST(FormatConfigHistoryTest, OneRowPerVersion) {
  v1::ListConfigHistoryResponse response;
  v1::ConfigVersion* newer = response.add_versions();
  newer->set_version(2);
  newer->set_author("bob@b");
  newer->set_created_ns(1'700'000'000'000'000'000);
  *newer->mutable_config() = SampleConfig();
  newer->mutable_config()->mutable_sampling()->set_probability(0.25);
  v1::ConfigVersion* older = response.add_versions();
  older->set_version(1);
  older->set_created_ns(1'699'999'999'000'000'000);
  EXPECT_EQ(FormatConfigHistory(response, absl::UTCTimeZone()),
            "VERSION  AUTHOR  TIME                     ENABLED  SAMPLING  FILTERS\n"
            "2        bob@b   2023-11-14 22:13:20.000  yes      0.25      1\n"
            "1        -       2023-11-14 22:13:19.000  yes      1         0\n");
  EXPECT_EQ(FormatConfigHistory({}, absl::UTCTimeZone()), "no config versions\n");
}

}  // namespace
}  // namespace cli
}  // namespace reptrace

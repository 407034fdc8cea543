#include "controller/config_validation.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reptrace::controller {
namespace {

using ::testing::StartsWith;

v1::PortRange Range(uint32_t first, uint32_t last = 0) {
  v1::PortRange range;
  range.set_first(first);
  range.set_last(last);
  return range;
}

// Every field set, every list with more than one element.
v1::TraceConfig FullConfig() {
  v1::TraceConfig config;
  config.set_enabled(true);
  config.set_trace_unix_sockets(true);
  config.set_capture_bytes(128);
  config.set_max_events_per_second(10000);
  config.mutable_sampling()->set_probability(0.25);
  config.mutable_sampling()->set_keep_errors(true);
  config.mutable_sampling()->set_keep_slower_than_ms(500);
  *config.add_inband_ports() = Range(7000, 7099);
  *config.add_inband_ports() = Range(6379);
  *config.add_inband_ports() = Range(7100, 7100);

  v1::TraceFilter* exclude = config.add_filters();
  exclude->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  exclude->add_processes("sshd");
  exclude->add_processes("kubelet");
  exclude->add_peer_cidrs("10.96.0.0/12");
  exclude->add_peer_cidrs("fd00::/8");
  exclude->add_peer_cidrs("192.168.1.7/32");
  exclude->add_peer_cidrs("::/0");
  *exclude->add_peer_ports() = Range(53);
  *exclude->add_peer_ports() = Range(22);

  v1::TraceFilter* include = config.add_filters();
  include->set_action(v1::TraceFilter::ACTION_INCLUDE);
  include->add_services("frontend");
  include->add_services("cart");
  include->add_nodes("node-1");
  include->set_direction(v1::DIRECTION_INBOUND);
  *include->add_local_ports() = Range(80, 90);
  *include->add_local_ports() = Range(91, 100);
  *include->add_local_ports() = Range(8080);
  *include->add_local_ports() = Range(1, 79);
  return config;
}

std::string Message(const v1::TraceConfig& config) {
  const absl::Status status = ValidateConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

TEST(ConfigValidationTest, FullDocumentIsValid) {
  EXPECT_TRUE(ValidateConfig(FullConfig()).ok()) << ValidateConfig(FullConfig());
}

TEST(ConfigValidationTest, EmptyAndDefaultDocumentsAreValid) {
  EXPECT_TRUE(ValidateConfig(v1::TraceConfig()).ok());
  EXPECT_TRUE(ValidateConfig(DefaultConfig()).ok());
}

TEST(ConfigValidationTest, DefaultDocumentIsEnabledKeepsEverythingCaptures128Bytes) {
  v1::TraceConfig expected;
  expected.set_enabled(true);
  expected.mutable_sampling()->set_probability(1);
  expected.set_capture_bytes(128);
  EXPECT_EQ(DefaultConfig().SerializeAsString(), expected.SerializeAsString());
}

TEST(ConfigValidationTest, UnknownTopLevelFieldIsRefusedByNumber) {
  v1::TraceConfig config = FullConfig();
  config.GetReflection()->MutableUnknownFields(&config)->AddVarint(99, 1);
  EXPECT_EQ(Message(config), "config: unknown field number 99");
}

TEST(ConfigValidationTest, UnknownFieldInAFilterIsRefused) {
  v1::TraceConfig config = FullConfig();
  v1::TraceFilter* filter = config.mutable_filters(1);
  filter->GetReflection()->MutableUnknownFields(filter)->AddLengthDelimited(42, "x");
  EXPECT_EQ(Message(config), "filters[1]: unknown field number 42");
}

TEST(ConfigValidationTest, UnknownFieldInAPortRangeIsRefused) {
  v1::TraceConfig config = FullConfig();
  v1::PortRange* range = config.mutable_filters(0)->mutable_peer_ports(1);
  range->GetReflection()->MutableUnknownFields(range)->AddFixed32(3, 7);
  EXPECT_EQ(Message(config), "filters[0].peer_ports[1]: unknown field number 3");
}

TEST(ConfigValidationTest, UnknownFieldInSamplingIsRefused) {
  v1::TraceConfig config = FullConfig();
  v1::Sampling* sampling = config.mutable_sampling();
  sampling->GetReflection()->MutableUnknownFields(sampling)->AddVarint(17, 0);
  EXPECT_EQ(Message(config), "sampling: unknown field number 17");
}

TEST(ConfigValidationTest, UnknownFieldFromTheWireIsRefused) {
  // A newer client's document: TraceConfig with field 100 (varint 5) appended.
  std::string wire = FullConfig().SerializeAsString();
  wire += std::string("\xa0\x06\x05", 3);
  v1::TraceConfig config;
  ASSERT_TRUE(config.ParseFromString(wire));
  EXPECT_EQ(Message(config), "config: unknown field number 100");
}

TEST(ConfigValidationTest, CaptureBytesAbove128IsRefused) {
  v1::TraceConfig config = FullConfig();
  config.set_capture_bytes(129);
  EXPECT_EQ(Message(config), "capture_bytes: 129 > 128");
}

TEST(ConfigValidationTest, PortZeroIsRefused) {
  v1::TraceConfig config = FullConfig();
  *config.mutable_filters(1)->mutable_local_ports(2) = Range(0);
  EXPECT_EQ(Message(config), "filters[1].local_ports[2].first: port 0 is not in 1..65535");
}

TEST(ConfigValidationTest, PortAbove65535IsRefused) {
  v1::TraceConfig config = FullConfig();
  *config.mutable_inband_ports(0) = Range(7000, 65536);
  EXPECT_EQ(Message(config), "inband_ports[0].last: port 65536 is not in 1..65535");
  *config.mutable_inband_ports(0) = Range(70000);
  EXPECT_EQ(Message(config), "inband_ports[0].first: port 70000 is not in 1..65535");
}

TEST(ConfigValidationTest, LastBeforeFirstIsRefused) {
  v1::TraceConfig config = FullConfig();
  *config.mutable_filters(0)->mutable_peer_ports(0) = Range(100, 99);
  EXPECT_EQ(Message(config), "filters[0].peer_ports[0].last: 99 is less than first (100)");
}

TEST(ConfigValidationTest, OverlappingRangesInOneListAreRefused) {
  v1::TraceConfig config;
  v1::TraceFilter* filter = config.add_filters();
  filter->set_action(v1::TraceFilter::ACTION_INCLUDE);
  *filter->add_local_ports() = Range(80, 90);
  *filter->add_local_ports() = Range(85, 100);
  EXPECT_EQ(Message(config),
            "filters[0].local_ports[1]: overlapping port range 85-100 makes no sense: it "
            "overlaps local_ports[0] (80-90)");
}

TEST(ConfigValidationTest, ASinglePortInsideARangeOverlapsIt) {
  v1::TraceConfig config = FullConfig();
  *config.mutable_filters(0)->add_peer_ports() = Range(1000, 2000);
  *config.mutable_filters(0)->add_peer_ports() = Range(22);
  EXPECT_EQ(Message(config),
            "filters[0].peer_ports[3]: overlapping port range 22 makes no sense: it "
            "overlaps peer_ports[1] (22)");
}

TEST(ConfigValidationTest, OverlapWithAnEarlierLongRangeIsFoundWhateverTheOrder) {
  v1::TraceConfig config = FullConfig();
  config.clear_inband_ports();
  *config.add_inband_ports() = Range(500, 600);
  *config.add_inband_ports() = Range(1, 1000);
  *config.add_inband_ports() = Range(2000);
  EXPECT_EQ(Message(config),
            "inband_ports[1]: overlapping port range 1-1000 makes no sense: it overlaps "
            "inband_ports[0] (500-600)");
}

TEST(ConfigValidationTest, SameRangesInDifferentListsAreAllowed) {
  v1::TraceConfig config = FullConfig();
  *config.mutable_filters(1)->add_peer_ports() = Range(80, 90);
  *config.add_inband_ports() = Range(80, 90);
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config);
}

TEST(ConfigValidationTest, PrefixLengthOutOfRangeIsRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_filters(0)->set_peer_cidrs(0, "10.0.0.0/33");
  EXPECT_EQ(Message(config),
            "filters[0].peer_cidrs[0]: \"10.0.0.0/33\" is not a CIDR (prefix length 33 > 32)");
  config.mutable_filters(0)->set_peer_cidrs(0, "fd00::/129");
  EXPECT_EQ(Message(config),
            "filters[0].peer_cidrs[0]: \"fd00::/129\" is not a CIDR (prefix length 129 > "
            "128)");
}

TEST(ConfigValidationTest, HostBitsSetAreRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_filters(0)->set_peer_cidrs(1, "10.0.0.1/8");
  EXPECT_EQ(Message(config),
            "filters[0].peer_cidrs[1]: \"10.0.0.1/8\" is not a CIDR (host bits set)");
  config.mutable_filters(0)->set_peer_cidrs(1, "fd00::1/64");
  EXPECT_EQ(Message(config),
            "filters[0].peer_cidrs[1]: \"fd00::1/64\" is not a CIDR (host bits set)");
}

TEST(ConfigValidationTest, MalformedCidrsAreRefused) {
  for (const char* cidr : {"10.0.0.0", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8",
                           "10.0.0.0/8x", "10.0.0.0/0008", "fe80::%eth0/64", "host/8",
                           " 10.0.0.0/8", "10.0.0.0/8/8"}) {
    v1::TraceConfig config = FullConfig();
    config.mutable_filters(0)->set_peer_cidrs(2, cidr);
    EXPECT_THAT(Message(config),
                StartsWith(std::string("filters[0].peer_cidrs[2]: \"") + cidr +
                           "\" is not a CIDR ("))
        << cidr;
  }
}

TEST(ConfigValidationTest, ProbabilityOutsideZeroToOneOrNanIsRefused) {
  for (double p : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity()}) {
    v1::TraceConfig config = FullConfig();
    config.mutable_sampling()->set_probability(p);
    EXPECT_THAT(Message(config), StartsWith("sampling.probability: ")) << p;
  }
  v1::TraceConfig config = FullConfig();
  config.mutable_sampling()->set_probability(1.5);
  EXPECT_EQ(Message(config), "sampling.probability: 1.5 is not in [0, 1]");
}

TEST(ConfigValidationTest, NegativeKeepSlowerThanIsRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_sampling()->set_keep_slower_than_ms(-1);
  EXPECT_EQ(Message(config), "sampling.keep_slower_than_ms: -1 is negative");
}

TEST(ConfigValidationTest, UnspecifiedActionIsRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_filters(1)->set_action(v1::TraceFilter::ACTION_UNSPECIFIED);
  EXPECT_EQ(Message(config),
            "filters[1].action: ACTION_UNSPECIFIED: say ACTION_INCLUDE or ACTION_EXCLUDE");
}

TEST(ConfigValidationTest, UnknownEnumValuesAreRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_filters(1)->set_action(static_cast<v1::TraceFilter::Action>(7));
  EXPECT_EQ(Message(config), "filters[1].action: unknown action 7");
  config = FullConfig();
  config.mutable_filters(0)->set_direction(static_cast<v1::Direction>(3));
  EXPECT_EQ(Message(config), "filters[0].direction: unknown direction 3");
}

TEST(ConfigValidationTest, EmptyNamesAreRefused) {
  v1::TraceConfig config = FullConfig();
  config.mutable_filters(1)->add_services("");
  EXPECT_EQ(Message(config), "filters[1].services[2]: empty string");
  config = FullConfig();
  config.mutable_filters(0)->set_processes(0, "");
  EXPECT_EQ(Message(config), "filters[0].processes[0]: empty string");
  config = FullConfig();
  config.mutable_filters(1)->add_nodes("");
  EXPECT_EQ(Message(config), "filters[1].nodes[1]: empty string");
  config = FullConfig();
  config.mutable_filters(0)->add_peer_cidrs("");
  EXPECT_EQ(Message(config), "filters[0].peer_cidrs[4]: empty string");
}

TEST(ConfigValidationTest, MoreThanTheConfigPageHoldsIsRefused) {
  v1::TraceConfig config = FullConfig();
  while (config.filters_size() < 32) *config.add_filters() = config.filters(0);
  EXPECT_TRUE(ValidateConfig(config).ok());
  *config.add_filters() = config.filters(0);
  EXPECT_EQ(Message(config),
            "filters: 33 entries, more than the 32 a hooked process can hold");

  config = FullConfig();
  for (int i = 0; i < 7; ++i) config.mutable_filters(1)->add_services(absl::StrCat("s", i));
  EXPECT_EQ(Message(config),
            "filters[1].services: 9 entries, more than the 8 a hooked process can hold");

  config = FullConfig();
  for (int i = 0; i < 5; ++i) {
    config.mutable_filters(0)->add_peer_cidrs(absl::StrCat("10.", i, ".0.0/16"));
  }
  EXPECT_EQ(Message(config),
            "filters[0].peer_cidrs: 9 entries, more than the 8 a hooked process can hold");

  config = FullConfig();
  for (uint32_t port = 1000; config.inband_ports_size() < 33; ++port) {
    *config.add_inband_ports() = Range(port);
  }
  EXPECT_EQ(Message(config),
            "inband_ports: 33 entries, more than the 32 a hooked process can hold");
}

}  // namespace
}  // namespace reptrace::controller

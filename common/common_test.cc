#include <cstring>

#include "common/endpoint.h"
#include "common/event_record.h"
#include "common/ids.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

TEST(IdsTest, FormatThenParseRoundTrips) {
  const uint64_t id = 0x00ab00cd00ef0012ULL;
  EXPECT_EQ(FormatId(id), "00ab00cd00ef0012");
  ASSERT_TRUE(ParseId(FormatId(id)).ok());
  EXPECT_EQ(*ParseId(FormatId(id)), id);
  EXPECT_EQ(*ParseId("FF"), 0xffu);
}

TEST(IdsTest, ParseRefusesGarbageZeroAndOverlong) {
  EXPECT_FALSE(ParseId("").ok());
  EXPECT_FALSE(ParseId("0").ok());
  EXPECT_FALSE(ParseId("xyz").ok());
  EXPECT_FALSE(ParseId("-1").ok());
  EXPECT_FALSE(ParseId("12345678901234567").ok());
}

TEST(IdsTest, RandomIdsAreNonZeroAndDistinct) {
  uint64_t a = NewRandomId(), b = NewRandomId();
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
}

TEST(EndpointTest, MappedIpv4BecomesFourBytes) {
  uint8_t addr[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
  v1::Endpoint endpoint;
  EndpointFromRecord(addr, 8080, &endpoint);
  EXPECT_EQ(endpoint.ip().size(), 4u);
  EXPECT_EQ(FormatEndpoint(endpoint), "127.0.0.1:8080");
}

TEST(EndpointTest, Ipv6IsBracketed) {
  uint8_t addr[16] = {};
  addr[15] = 1;
  v1::Endpoint endpoint;
  EndpointFromRecord(addr, 80, &endpoint);
  EXPECT_EQ(FormatEndpoint(endpoint), "[::1]:80");
  EXPECT_EQ(FormatEndpoint(v1::Endpoint()), "?");
}

TEST(EventRecordTest, SizesAreDeclaredPerType) {
  EXPECT_EQ(RecordSizeFor(static_cast<uint16_t>(RecordType::kEvent)), sizeof(EventRecord));
  EXPECT_EQ(RecordSizeFor(static_cast<uint16_t>(RecordType::kHello)), sizeof(HelloRecord));
  EXPECT_EQ(RecordSizeFor(99), 0u);
}

TEST(EventRecordTest, Fnv1aMatchesKnownVector) {
  // FNV-1a 64 of "a" is af63dc4c8601ec8c.
  EXPECT_EQ(Fnv1a64("a", 1), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("", 0), 0xcbf29ce484222325ULL);
}

}  // namespace
}  // namespace reptrace

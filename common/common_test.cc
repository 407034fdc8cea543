#include <cstring>
#include <set>
#include <string>

#include "common/endpoint.h"
#include "common/event_record.h"
#include "common/ids.h"
#include "common/utf8.h"
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

TEST(EventRecordTest, FingerprintDependsOnEveryByteAndTheLength) {
  const std::string base = "GET /checkout HTTP/1.1\r\nHost: shop\r\n\r\n";
  const uint64_t h = Fingerprint64(base.data(), base.size());
  EXPECT_EQ(h, Fingerprint64(base.data(), base.size()));  // deterministic
  for (size_t i = 0; i < base.size(); ++i) {                // any byte changes it
    std::string changed = base;
    changed[i] ^= 1;
    EXPECT_NE(Fingerprint64(changed.data(), changed.size()), h) << i;
  }
  // A shorter prefix (also a tail shorter than one word, and zero bytes) differs too.
  std::set<uint64_t> prefixes;
  for (size_t n = 0; n <= base.size(); ++n) prefixes.insert(Fingerprint64(base.data(), n));
  EXPECT_EQ(prefixes.size(), base.size() + 1);
  // Trailing zero bytes are not lost in the tail word.
  const char zeros[3] = {'a', 0, 0};
  EXPECT_NE(Fingerprint64(zeros, 1), Fingerprint64(zeros, 3));
}

// Every length takes its own path (32-byte steps, words, and each kind of tail) and
// tells the bytes apart.
TEST(EventRecordTest, FingerprintTellsApartEveryLengthAndDifference) {
  std::string data;
  for (int i = 0; i < 130; ++i) data.push_back(static_cast<char>(i * 37 + 11));
  std::set<uint64_t> seen;
  for (size_t n = 0; n <= kCaptureBytes; ++n) {
    seen.insert(Fingerprint64(data.data(), n));
    for (size_t i = 0; i < n; ++i) {
      std::string changed = data;
      changed[i] ^= 0x40;
      EXPECT_NE(Fingerprint64(changed.data(), n), Fingerprint64(data.data(), n)) << n << " " << i;
    }
  }
  EXPECT_EQ(seen.size(), kCaptureBytes + 1);
  // A difference only in the top bits of two words of one lane does not cancel out.
  std::string x(64, 'a'), y = x;
  y[7] ^= '\x80';
  y[39] ^= '\x80';
  EXPECT_NE(Fingerprint64(x.data(), 64), Fingerprint64(y.data(), 64));
}

TEST(Utf8Test, ValidTextIsKeptAsItIs) {
  EXPECT_EQ(ToValidUtf8("GET /caf\xC3\xA9/\xE2\x82\xAC/\xF0\x9F\x98\x80"),
            "GET /caf\xC3\xA9/\xE2\x82\xAC/\xF0\x9F\x98\x80");
  EXPECT_EQ(ToValidUtf8(""), "");
}

TEST(Utf8Test, EveryIllFormedByteBecomesOneReplacementCharacter) {
  EXPECT_EQ(ToValidUtf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");      // overlong '/'
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"),                                // a surrogate
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80").size(), 12u);              // above U+10FFFF
  EXPECT_EQ(ToValidUtf8("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");  // cut short
}

}  // namespace
}  // namespace reptrace

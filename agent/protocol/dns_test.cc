#include <string>
#include <tuple>
#include <vector>

#include "agent/protocol/protocol.h"
#include "agent/protocol/testing/captured.h"
#include "agent/protocol/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace protocol {
namespace {

using namespace std::string_literals;
using ::testing::ElementsAre;
using ::testing::Pair;
using testing::ForEachPrefix;
using testing::Pairs;

// A query for `labels` of `type` with id 0x1234, as a stub resolver sends it.
std::string Query(const std::vector<std::string>& labels, uint16_t type) {
  std::string q = "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"s;
  for (const std::string& label : labels) q += static_cast<char>(label.size()) + label;
  q += '\0';
  q += static_cast<char>(type >> 8);
  q += static_cast<char>(type & 0xFF);
  return q + "\x00\x01"s;
}

TEST(ParseDnsRequest, NamesTheSpanByTypeAndName) {
  const std::vector<std::tuple<std::string, Transport, std::string>> cases = {
      {testing::kDnsQueryA, Transport::kUdp, "DNS A example.com"},
      {testing::kDnsQueryAaaa, Transport::kUdp, "DNS AAAA ipv6.example.com"},
      {testing::kDnsQueryNx, Transport::kUdp, "DNS A nx.example.org"},
      {testing::kDnsQueryMxServfail, Transport::kUdp, "DNS MX fail.example.net"},
      {testing::kDnsQueryTxtRefused, Transport::kUdp, "DNS TXT refused.example.com"},
      {testing::kDnsQueryPtr, Transport::kUdp, "DNS PTR 1.0.0.127.in-addr.arpa"},
      {testing::kDnsQueryType65, Transport::kUdp, "DNS HTTPS example.com"},
      {testing::kDnsTcpQueryAny, Transport::kTcp, "DNS ANY example.com"},
      {testing::kDnsTcpQuerySrv, Transport::kTcp, "DNS SRV _http._tcp.example.com"},
      {Query({"x"}, 99), Transport::kUdp, "DNS TYPE99 x"},
      {Query({}, 2), Transport::kUdp, "DNS NS ."},
      {Query({"WwW", "ExAmPlE", "CoM"}, 1), Transport::kUdp, "DNS A www.example.com"},
  };
  for (const auto& [head, transport, name] : cases) {
    std::optional<Request> request = ParseDnsRequest(head, transport);
    ASSERT_TRUE(request.has_value()) << name;
    EXPECT_EQ(request->protocol, Protocol::kDns);
    EXPECT_EQ(request->name, name);
  }
  std::optional<Request> request = ParseDnsRequest(testing::kDnsQueryA, Transport::kUdp);
  ASSERT_TRUE(request.has_value());
  EXPECT_THAT(Pairs(request->attributes),
              ElementsAre(Pair("dns.question.name", "example.com"),
                          Pair("dns.question.type", "A"), Pair("dns.id", "22940")));
  EXPECT_EQ(request->exchange_id, 0x599c);
}

TEST(ParseDnsRequest, NeedsTheWholeQuestion) {
  // Header (12) + "\7example\3com\0" (13) + type and class (4).
  ForEachPrefix(testing::kDnsQueryA, [](size_t n, absl::string_view head) {
    std::optional<Request> request = ParseDnsRequest(head, Transport::kUdp);
    ASSERT_EQ(request.has_value(), n >= 29) << n;
    if (request) {
      EXPECT_EQ(request->name, "DNS A example.com");
    }
  });
  // Over TCP, two more bytes of length.
  ForEachPrefix(testing::kDnsTcpQueryAny, [](size_t n, absl::string_view head) {
    EXPECT_EQ(ParseDnsRequest(head, Transport::kTcp).has_value(), n >= 31) << n;
  });
}

TEST(ParseDnsRequest, RefusesWhatIsNotAStandardQuery) {
  std::string response_bit = Query({"a"}, 1);
  response_bit[2] |= 0x80;
  std::string two_questions = Query({"a"}, 1);
  two_questions[5] = 2;
  std::string with_answer = Query({"a"}, 1);
  with_answer[7] = 1;
  std::string notify = Query({"a"}, 1);
  notify[2] |= 4 << 3;
  std::string pointer = Query({"a"}, 1);
  pointer[12] = '\xc0';
  for (const std::string& head :
       {""s, "\x12\x34\x01\x00"s, response_bit, two_questions, with_answer, notify, pointer,
        Query({std::string(64, 'a')}, 1),  // label over 63 bytes
        Query({"a b"}, 1),                 // not a host name
        Query({"a"}, 0),                   // type 0
        Query({"a"}, 1).substr(0, 17) + "\x00\x09"s,  // class 9
        testing::kDnsResponseA}) {
    EXPECT_FALSE(ParseDnsRequest(head, Transport::kUdp).has_value()) << head;
  }
  // Names over 255 bytes on the wire.
  EXPECT_TRUE(ParseDnsRequest(Query(std::vector<std::string>(4, std::string(62, 'a')), 1),
                              Transport::kUdp));
  EXPECT_FALSE(ParseDnsRequest(Query(std::vector<std::string>(4, std::string(63, 'a')), 1),
                               Transport::kUdp));
  // A UDP query is no TCP query and the other way round.
  EXPECT_FALSE(ParseDnsRequest(testing::kDnsQueryA, Transport::kTcp).has_value());
  EXPECT_FALSE(ParseDnsRequest(testing::kDnsTcpQueryAny, Transport::kUdp).has_value());
}

TEST(ParseDnsRequest, RefusesOtherProtocols) {
  for (const std::string& other :
       {testing::kHttpCurlGet, testing::kHttpCurlPost, testing::kRedisSetUser,
        testing::kRedisInlinePing, testing::kPgStartupPsql, testing::kPgQuerySelect,
        testing::kPgParseBindSelect, testing::kPgSslRequest}) {
    EXPECT_FALSE(ParseDnsRequest(other, Transport::kUdp).has_value()) << other;
    EXPECT_FALSE(ParseDnsRequest(other, Transport::kTcp).has_value()) << other;
  }
}

TEST(ParseDnsResponse, RcodesAndErrors) {
  const std::vector<std::tuple<std::string, Transport, std::string, bool>> cases = {
      {testing::kDnsResponseA, Transport::kUdp, "NOERROR", false},
      {testing::kDnsResponseAaaa, Transport::kUdp, "NOERROR", false},
      {testing::kDnsResponseNx, Transport::kUdp, "NXDOMAIN", false},
      {testing::kDnsResponseServfail, Transport::kUdp, "SERVFAIL", true},
      {testing::kDnsResponseRefused, Transport::kUdp, "REFUSED", true},
      {testing::kDnsResponsePtr, Transport::kUdp, "NOERROR", false},
      {testing::kDnsTcpResponseAny, Transport::kTcp, "NOERROR", false},
      {testing::kDnsTcpResponseSrv, Transport::kTcp, "NOERROR", false},
  };
  for (const auto& [head, transport, rcode, error] : cases) {
    std::optional<Response> response = ParseDnsResponse(head, transport);
    ASSERT_TRUE(response.has_value()) << rcode;
    EXPECT_EQ(FindAttribute(response->attributes, "dns.rcode"), rcode);
    EXPECT_EQ(response->error, error) << rcode;
    EXPECT_EQ(response->status_message, error ? rcode : "");
  }
  std::optional<Response> response = ParseDnsResponse(testing::kDnsResponseA, Transport::kUdp);
  ASSERT_TRUE(response.has_value());
  EXPECT_THAT(Pairs(response->attributes),
              ElementsAre(Pair("dns.id", "22940"), Pair("dns.rcode", "NOERROR"),
                          Pair("dns.answer_count", "1")));
}

TEST(ParseDnsResponse, PairsWithItsQueryById) {
  const std::vector<std::tuple<std::string, std::string, Transport>> exchanges = {
      {testing::kDnsQueryA, testing::kDnsResponseA, Transport::kUdp},
      {testing::kDnsQueryNx, testing::kDnsResponseNx, Transport::kUdp},
      {testing::kDnsTcpQuerySrv, testing::kDnsTcpResponseSrv, Transport::kTcp},
  };
  for (const auto& [query, answer, transport] : exchanges) {
    std::optional<Request> request = ParseDnsRequest(query, transport);
    std::optional<Response> response = ParseDnsResponse(answer, transport);
    ASSERT_TRUE(request && response);
    ASSERT_TRUE(request->exchange_id.has_value());
    EXPECT_EQ(request->exchange_id, response->exchange_id);
  }
}

TEST(ParseDnsResponse, NeedsTheHeaderOnly) {
  ForEachPrefix(testing::kDnsResponseServfail, [](size_t n, absl::string_view head) {
    std::optional<Response> response = ParseDnsResponse(head, Transport::kUdp);
    ASSERT_EQ(response.has_value(), n >= 12) << n;
    if (response) {
      EXPECT_TRUE(response->error);
    }
  });
}

TEST(ParseDnsResponse, RefusesQueriesAndOtherProtocols) {
  for (const std::string& other :
       {""s, testing::kDnsQueryA, testing::kHttpPython200, testing::kRedisOk,
        testing::kPgCreateTableComplete}) {
    EXPECT_FALSE(ParseDnsResponse(other, Transport::kUdp).has_value()) << other;
  }
  EXPECT_FALSE(ParseDnsResponse(testing::kDnsTcpQueryAny, Transport::kTcp).has_value());
}

}  // namespace
}  // namespace protocol
}  // namespace reptrace

#include "agent/protocol/protocol.h"

#include <random>
#include <string>
#include <vector>

#include "agent/protocol/testing/captured.h"
#include "agent/protocol/testing/test_util.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace protocol {
namespace {

using namespace std::string_literals;
using testing::ForEachPrefix;

struct Captured {
  std::string head;
  Protocol protocol;
  Transport transport;
  bool request;  // sent by the client
};

// Every captured head, requests and responses.
std::vector<Captured> AllCaptured() {
  const Transport tcp = Transport::kTcp, udp = Transport::kUdp;
  const Protocol http = Protocol::kHttp, redis = Protocol::kRedis,
                 pg = Protocol::kPostgresql, dns = Protocol::kDns;
  using namespace testing;
  return {
      {kHttpCurlGet, http, tcp, true}, {kHttpCurlPost, http, tcp, true},
      {kHttpCurlGetMissing, http, tcp, true}, {kHttpPython200, http, tcp, false},
      {kHttpPython501, http, tcp, false}, {kHttpPython404, http, tcp, false},
      {kRedisSetUser, redis, tcp, true}, {kRedisGetUser, redis, tcp, true},
      {kRedisPing, redis, tcp, true}, {kRedisClientSetname, redis, tcp, true},
      {kRedisConfigGet, redis, tcp, true}, {kRedisUnknown, redis, tcp, true},
      {kRedisIncr, redis, tcp, true}, {kRedisHset, redis, tcp, true},
      {kRedisLpush, redis, tcp, true}, {kRedisLrange, redis, tcp, true},
      {kRedisGetMissing, redis, tcp, true}, {kRedisInlinePing, redis, tcp, true},
      {kRedisInlineSet, redis, tcp, true}, {kRedisInlineGet, redis, tcp, true},
      {kRedisLpushWrongType, redis, tcp, true}, {kRedisSetBig, redis, tcp, true},
      {kRedisOk, redis, tcp, false}, {kRedisBulkAlice, redis, tcp, false},
      {kRedisPong, redis, tcp, false}, {kRedisConfigReply, redis, tcp, false},
      {kRedisUnknownError, redis, tcp, false}, {kRedisIncrError, redis, tcp, false},
      {kRedisInt1, redis, tcp, false}, {kRedisLrangeReply, redis, tcp, false},
      {kRedisNullBulk, redis, tcp, false}, {kRedisInlineGetError, redis, tcp, false},
      {kRedisWrongTypeError, redis, tcp, false},
      {kPgStartupPsql, pg, tcp, true}, {kPgQueryCreateTable, pg, tcp, true},
      {kPgTerminate, pg, tcp, true}, {kPgSslRequest, pg, tcp, true},
      {kPgQueryInsert, pg, tcp, true}, {kPgQuerySelect, pg, tcp, true},
      {kPgQueryUpdate, pg, tcp, true}, {kPgQueryDelete, pg, tcp, true},
      {kPgQuerySelectMissingTable, pg, tcp, true}, {kPgQueryBegin, pg, tcp, true},
      {kPgQueryCommit, pg, tcp, true}, {kPgStartupPgbench, pg, tcp, true},
      {kPgParseBindSelect, pg, tcp, true}, {kPgParseBindInsert, pg, tcp, true},
      {kPgParseNamedSelect, pg, tcp, true}, {kPgBindNamed, pg, tcp, true},
      {kPgAuthOkAndParameters, pg, tcp, false}, {kPgCreateTableComplete, pg, tcp, false},
      {kPgSslRefused, pg, tcp, false}, {kPgInsertComplete, pg, tcp, false},
      {kPgSelectRows, pg, tcp, false}, {kPgUndefinedTableError, pg, tcp, false},
      {kPgReadyForQuery, pg, tcp, false}, {kPgBeginComplete, pg, tcp, false},
      {kPgParseBindSelectRows, pg, tcp, false}, {kPgDuplicateKeyError, pg, tcp, false},
      {kPgParseComplete, pg, tcp, false}, {kPgDuplicateKeyAfterBindError, pg, tcp, false},
      {kDnsQueryA, dns, udp, true}, {kDnsQueryAaaa, dns, udp, true},
      {kDnsQueryNx, dns, udp, true}, {kDnsQueryMxServfail, dns, udp, true},
      {kDnsQueryTxtRefused, dns, udp, true}, {kDnsQueryPtr, dns, udp, true},
      {kDnsQueryType65, dns, udp, true}, {kDnsTcpQueryAny, dns, tcp, true},
      {kDnsTcpQuerySrv, dns, tcp, true}, {kDnsResponseA, dns, udp, false},
      {kDnsResponseAaaa, dns, udp, false}, {kDnsResponseNx, dns, udp, false},
      {kDnsResponseServfail, dns, udp, false}, {kDnsResponseRefused, dns, udp, false},
      {kDnsResponsePtr, dns, udp, false}, {kDnsResponseType65, dns, udp, false},
      {kDnsTcpResponseAny, dns, tcp, false}, {kDnsTcpResponseSrv, dns, tcp, false},
  };
}

constexpr uint16_t kHintPorts[] = {0, 80, 6379, 5432, 53, 8080, 443};

TEST(ProtocolName, NamesEachProtocol) {
  EXPECT_EQ(ProtocolName(Protocol::kHttp), "http");
  EXPECT_EQ(ProtocolName(Protocol::kRedis), "redis");
  EXPECT_EQ(ProtocolName(Protocol::kPostgresql), "postgresql");
  EXPECT_EQ(ProtocolName(Protocol::kDns), "dns");
}

TEST(ParseRequest, RecognisesEveryCapturedRequestWhateverThePortSays) {
  for (const Captured& c : AllCaptured()) {
    if (!c.request) continue;
    for (uint16_t port : kHintPorts) {
      std::optional<Request> request = ParseRequest(c.head, c.transport, port);
      ASSERT_TRUE(request.has_value()) << c.head << " port " << port;
      EXPECT_EQ(request->protocol, c.protocol) << c.head << " port " << port;
    }
  }
}

// The heart of detection: no captured message, cut anywhere, is ever taken for another
// protocol, whatever port hint comes with it. (A Redis reply may look like a Redis command:
// an array of bulk strings is both. The span builder knows which way bytes flow.)
TEST(ParseRequest, NoPrefixOfAnyCaptureIsTakenForAnotherProtocol) {
  for (const Captured& c : AllCaptured()) {
    ForEachPrefix(c.head, [&](size_t n, absl::string_view head) {
      for (uint16_t port : kHintPorts) {
        for (Transport transport : {Transport::kTcp, Transport::kUdp}) {
          std::optional<Request> request = ParseRequest(head, transport, port);
          if (request) {
            EXPECT_EQ(request->protocol, c.protocol)
                << c.head << " cut at " << n << " port " << port << " read as " << request->name;
          }
        }
      }
    });
  }
}

TEST(ParseRequest, ResponsesAreNotRequestsExceptRedisArrays) {
  for (const Captured& c : AllCaptured()) {
    if (c.request) continue;
    std::optional<Request> request = ParseRequest(c.head, c.transport);
    const bool resp_array = c.protocol == Protocol::kRedis && c.head[0] == '*';
    EXPECT_EQ(request.has_value(), resp_array) << c.head;
  }
}

TEST(ParseRequest, UdpCarriesOnlyDns) {
  EXPECT_FALSE(ParseRequest(testing::kHttpCurlGet, Transport::kUdp, 80).has_value());
  EXPECT_FALSE(ParseRequest(testing::kRedisPing, Transport::kUdp, 6379).has_value());
  EXPECT_FALSE(ParseRequest(testing::kDnsTcpQueryAny, Transport::kUdp, 53).has_value());
  std::optional<Request> request = ParseRequest(testing::kDnsQueryA, Transport::kUdp, 5353);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "DNS A example.com");
}

TEST(ParseRequest, TheHintDecidesOnlyWhatTwoParsersWouldBothAccept) {
  // An inline "GET key" cut short at the end of the capture: neither HTTP (no path) nor Redis
  // (no end of line) believes it, hint or not.
  EXPECT_FALSE(ParseRequest("GET somekey", Transport::kTcp, 6379).has_value());
  std::optional<Request> request = ParseRequest("GET somekey\r\n", Transport::kTcp, 80);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->protocol, Protocol::kRedis);
}

TEST(ParseRequest, PassesOptionsOn) {
  ParseOptions options;
  options.http_query = true;
  std::optional<Request> request = ParseRequest(testing::kHttpCurlGet, Transport::kTcp, 0, options);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(FindAttribute(request->attributes, "url.query"), "token=secret&x=1");
}

TEST(ParseResponse, DispatchesByProtocol) {
  for (const Captured& c : AllCaptured()) {
    if (c.request) continue;
    EXPECT_TRUE(ParseResponse(c.protocol, c.head, c.transport).has_value()) << c.head;
  }
  std::optional<Response> response =
      ParseResponse(Protocol::kDns, testing::kDnsTcpResponseAny, Transport::kTcp);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->exchange_id, 0xd263);
}

TEST(Parsers, SurviveRandomGarbage) {
  std::mt19937 rng(7);
  int recognised = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 129, '\0');
    for (char& b : bytes) b = static_cast<char>(rng());
    for (Transport transport : {Transport::kTcp, Transport::kUdp}) {
      if (ParseRequest(bytes, transport).has_value()) ++recognised;
      for (Protocol p : {Protocol::kHttp, Protocol::kRedis, Protocol::kPostgresql,
                         Protocol::kDns}) {
        ParseResponse(p, bytes, transport);
      }
    }
  }
  // Uniform random bytes are not requests: the parsers check framing, not just a first byte.
  EXPECT_EQ(recognised, 0);
}

// True if `text` lies within `head` (a view of it, not a copy).
bool Views(absl::string_view head, const Text& text) {
  const absl::string_view v = text.view();
  return v.data() >= head.data() && v.data() + v.size() <= head.data() + head.size();
}

TEST(ParseRequest, NamesAnHttpRequestByViewsOfItsHead) {
  const std::string head = "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
  std::optional<Request> request = ParseRequest(head, Transport::kTcp);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "GET /index.html");
  EXPECT_TRUE(Views(head, request->name));
  for (const Attribute& a : request->attributes) EXPECT_TRUE(Views(head, a.value)) << a.key;
  std::optional<Response> response =
      ParseResponse(Protocol::kHttp, "HTTP/1.1 404 Not Found\r\n", Transport::kTcp);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(FindAttribute(response->attributes, "http.response.status_code"), "404");
}

TEST(ParseRequest, NamesWhatIsNotInTheHeadAsItIsWithItsOwnText) {
  // An absolute-form target is named by its path: "GET /a" is not in the head as it is.
  const std::string http = "GET http://host/a?b=c HTTP/1.1\r\n";
  std::optional<Request> request = ParseRequest(http, Transport::kTcp);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "GET /a");
  EXPECT_FALSE(Views(http, request->name));
  // A Redis command in lower case is named in upper case.
  const std::string redis = "*1\r\n$4\r\nping\r\n";
  request = ParseRequest(redis, Transport::kTcp);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "PING");
  EXPECT_EQ(FindAttribute(request->attributes, "db.operation"), "PING");
}

TEST(ParseRequest, ARequestFoundByALaterParserStillViewsTheHead) {
  // No port hint: HTTP is tried first, and the Redis parser's result replaces its nullopt.
  const std::string inline_command = "PING\r\n";
  std::optional<Request> request = ParseRequest(inline_command, Transport::kTcp);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "PING");
  EXPECT_TRUE(Views(inline_command, request->name));
  EXPECT_EQ(FindAttribute(request->attributes, "db.operation"), "PING");
  EXPECT_EQ(FindAttribute(request->attributes, "db.system"), "redis");
}

TEST(ParseRequest, ARedisArrayIsRecognisedWhateverThePortSays) {
  for (uint16_t port : {0, 80, 8080, 5432, 53, 6379}) {
    std::optional<Request> request = ParseRequest(testing::kRedisGetUser, Transport::kTcp, port);
    ASSERT_TRUE(request.has_value()) << port;
    EXPECT_EQ(request->protocol, Protocol::kRedis) << port;
    EXPECT_EQ(request->name, "GET") << port;
    EXPECT_TRUE(Views(testing::kRedisGetUser, request->name)) << port;
  }
}

TEST(Text, AViewIsTheTextItViews) {
  const std::string head = "abc";
  const Text text = Text::View(head);
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(text.view().data(), head.data());
}

TEST(Text, AnOwnedTextKeepsItsTextWhenCopiedOrMoved) {
  std::optional<Text> original(Text(std::string(40, 'x')));
  const Text copy = *original;
  Text moved = std::move(*original);
  original.reset();
  EXPECT_EQ(copy, std::string(40, 'x'));
  EXPECT_EQ(moved, std::string(40, 'x'));
  Text short_one = Text(std::string("ab"));  // in std::string's inline buffer
  const Text short_moved = std::move(short_one);
  EXPECT_EQ(short_moved, "ab");
}

TEST(FindAttribute, FindsTheFirstByKey) {
  const Attributes attributes = {{"a", "1"}, {"b", "2"}, {"a", "3"}};
  EXPECT_EQ(FindAttribute(attributes, "a"), "1");
  EXPECT_EQ(FindAttribute(attributes, "b"), "2");
  EXPECT_FALSE(FindAttribute(attributes, "c").has_value());
}

}  // namespace
}  // namespace protocol
}  // namespace reptrace

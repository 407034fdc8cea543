#include <string>

#include "agent/protocol/protocol.h"
#include "agent/protocol/testing/captured.h"
#include "agent/protocol/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace protocol {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using testing::ForEachPrefix;
using testing::Pairs;

TEST(ParseHttpRequest, NamesTheSpanByMethodAndPathWithoutQuery) {
  std::optional<Request> request = ParseHttpRequest(testing::kHttpCurlGet);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->protocol, Protocol::kHttp);
  EXPECT_EQ(request->name, "GET /ext.sql");
  EXPECT_THAT(Pairs(request->attributes),
              ElementsAre(Pair("http.request.method", "GET"), Pair("url.path", "/ext.sql")));
  EXPECT_FALSE(request->exchange_id.has_value());
}

TEST(ParseHttpRequest, ReportsTheQueryOnlyWhenAsked) {
  ParseOptions options;
  options.http_query = true;
  std::optional<Request> request = ParseHttpRequest(testing::kHttpCurlGet, options);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "GET /ext.sql");
  EXPECT_EQ(FindAttribute(request->attributes, "url.query"), "token=secret&x=1");
  // No query, no attribute.
  request = ParseHttpRequest(testing::kHttpCurlPost, options);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "POST /orders");
  EXPECT_FALSE(FindAttribute(request->attributes, "url.query").has_value());
}

TEST(ParseHttpRequest, EveryPrefixIsRefusedOrAPrefixOfTheRequestLine) {
  // "GET /" (5 bytes) is the shortest head that names a request.
  ForEachPrefix(testing::kHttpCurlGet, [](size_t n, absl::string_view head) {
    std::optional<Request> request = ParseHttpRequest(head);
    if (n < 5) {
      EXPECT_FALSE(request.has_value()) << n;
      return;
    }
    ASSERT_TRUE(request.has_value()) << n;
    const std::string path = *FindAttribute(request->attributes, "url.path");
    EXPECT_EQ(std::string("/ext.sql").substr(0, path.size()), path) << n;
    EXPECT_EQ(request->name, "GET " + path);
  });
}

TEST(ParseHttpResponse, FiveHundredsAreErrors) {
  std::optional<Response> ok = ParseHttpResponse(testing::kHttpPython200);
  ASSERT_TRUE(ok.has_value());
  EXPECT_FALSE(ok->error);
  EXPECT_EQ(ok->status_message, "");
  EXPECT_THAT(Pairs(ok->attributes), ElementsAre(Pair("http.response.status_code", "200")));

  std::optional<Response> not_found = ParseHttpResponse(testing::kHttpPython404);
  ASSERT_TRUE(not_found.has_value());
  EXPECT_FALSE(not_found->error);
  EXPECT_EQ(FindAttribute(not_found->attributes, "http.response.status_code"), "404");

  std::optional<Response> failed = ParseHttpResponse(testing::kHttpPython501);
  ASSERT_TRUE(failed.has_value());
  EXPECT_TRUE(failed->error);
  EXPECT_EQ(failed->status_message, "HTTP 501");
  EXPECT_EQ(FindAttribute(failed->attributes, "http.response.status_code"), "501");
}

TEST(ParseHttpResponse, NeedsTheWholeStatusCode) {
  ForEachPrefix(testing::kHttpPython501, [](size_t n, absl::string_view head) {
    std::optional<Response> response = ParseHttpResponse(head);
    // "HTTP/1.0 501" is 12 bytes.
    EXPECT_EQ(response.has_value(), n >= 12) << n;
    if (response) {
      EXPECT_TRUE(response->error) << n;
    }
  });
}

TEST(ParseHttp, RefusesOtherProtocols) {
  for (const std::string& other :
       {testing::kRedisSetUser, testing::kRedisInlineSet, testing::kRedisInlineGet,
        testing::kPgQuerySelect, testing::kPgStartupPsql, testing::kDnsQueryA,
        testing::kDnsTcpQuerySrv, std::string("GET key"), std::string("GET key\r\n")}) {
    EXPECT_FALSE(ParseHttpRequest(other).has_value()) << other;
    EXPECT_FALSE(ParseHttpResponse(other).has_value()) << other;
  }
}

}  // namespace
}  // namespace protocol
}  // namespace reptrace

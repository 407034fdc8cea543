#include "agent/http_head.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace reptrace {
namespace {

TEST(ParseHttpRequestLine, ParsesMethodAndPathWithoutQuery) {
  auto line = ParseHttpRequestLine("GET /api/items?id=3&x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->method, "GET");
  EXPECT_EQ(line->path, "/api/items");
}

TEST(ParseHttpRequestLine, AcceptsAKnownMethodWhoseTargetIsCutShort) {
  auto line = ParseHttpRequestLine("POST /a/very/long/pa");
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->method, "POST");
  EXPECT_EQ(line->path, "/a/very/long/pa");
  // Cut inside the version is fine too.
  EXPECT_TRUE(ParseHttpRequestLine("GET / HTT").has_value());
}

TEST(ParseHttpRequestLine, UnknownMethodNeedsTheVersion) {
  EXPECT_TRUE(ParseHttpRequestLine("PROPFIND /dav HTTP/1.1\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("PROPFIND /dav").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("PROPFIND /dav HTT").has_value());
}

TEST(ParseHttpRequestLine, AbsoluteFormBecomesAPath) {
  auto line = ParseHttpRequestLine("GET http://example.com:8080/x/y?q HTTP/1.1\r\n");
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->path, "/x/y");
  line = ParseHttpRequestLine("GET http://example.com HTTP/1.1\r\n");
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->path, "/");
}

TEST(ParseHttpRequestLine, RefusesWhatIsNotHttp1) {
  EXPECT_FALSE(ParseHttpRequestLine("").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("GET").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("GET ").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("get / HTTP/1.1\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("GET / HTTP/2.0\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("GET /\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").has_value());
  EXPECT_FALSE(ParseHttpRequestLine(std::string("GET /a\0b HTTP/1.1", 17)).has_value());
}

TEST(ParseHttpStatusCode, ParsesTheCode) {
  EXPECT_EQ(ParseHttpStatusCode("HTTP/1.1 200 OK\r\n"), 200);
  EXPECT_EQ(ParseHttpStatusCode("HTTP/1.0 503 Service Unavailable\r\n"), 503);
  EXPECT_EQ(ParseHttpStatusCode("HTTP/1.1 204"), 204);
  EXPECT_EQ(ParseHttpStatusCode("HTTP/1.1 404\r\n"), 404);
}

TEST(ParseHttpStatusCode, RefusesWhatIsNotAStatusLine) {
  EXPECT_FALSE(ParseHttpStatusCode("").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("HTTP/1.1 20").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("HTTP/1.1 2000 OK").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("HTTP/1.1 099 x").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("HTTP/1.1 700 x").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("HTTP/2 200 OK\r\n").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("+OK\r\n").has_value());
  EXPECT_FALSE(ParseHttpStatusCode("GET / HTTP/1.1\r\n").has_value());
}

// Every prefix of valid input and random garbage: no crash, no read past the buffer (the
// bytes live in an exactly-sized heap allocation, so ASan would catch an overread).
TEST(HttpHead, SurvivesPrefixesAndGarbage) {
  const std::string request = "DELETE /things/42?force=1 HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string response = "HTTP/1.1 500 Internal Server Error\r\n\r\n";
  for (size_t n = 0; n <= request.size(); ++n) {
    std::string prefix = request.substr(0, n);
    auto line = ParseHttpRequestLine(prefix);
    if (n >= 8) {
      ASSERT_TRUE(line.has_value()) << n;
      EXPECT_EQ(line->path, n <= 17 ? request.substr(7, n - 7) : "/things/42");
    } else {
      EXPECT_FALSE(line.has_value()) << n;
    }
  }
  for (size_t n = 0; n <= response.size(); ++n) {
    EXPECT_EQ(ParseHttpStatusCode(response.substr(0, n)).has_value(), n >= 12) << n;
  }
  std::mt19937 random(7);
  for (int i = 0; i < 20000; ++i) {
    std::string garbage(random() % 40, '\0');
    for (char& c : garbage) c = static_cast<char>(random() % 4 == 0 ? " /GETHP1.\r"[random() % 10]
                                                                   : random());
    ParseHttpRequestLine(garbage);
    ParseHttpStatusCode(garbage);
  }
}

}  // namespace
}  // namespace reptrace

#include <string>
#include <utility>
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

TEST(ParseRedisRequest, NamesTheSpanByCommand) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {testing::kRedisSetUser, "SET"},
      {testing::kRedisGetUser, "GET"},
      {testing::kRedisPing, "PING"},
      {testing::kRedisClientSetname, "CLIENT SETNAME"},
      {testing::kRedisConfigGet, "CONFIG GET"},
      {testing::kRedisUnknown, "NOSUCHCMD"},
      {testing::kRedisIncr, "INCR"},
      {testing::kRedisHset, "HSET"},
      {testing::kRedisLpush, "LPUSH"},
      {testing::kRedisLrange, "LRANGE"},
      {testing::kRedisGetMissing, "GET"},
      {testing::kRedisSetBig, "SET"},
      {testing::kRedisInlinePing, "PING"},
      {testing::kRedisInlineSet, "SET"},
      {testing::kRedisInlineGet, "GET"},
  };
  for (const auto& [head, name] : cases) {
    std::optional<Request> request = ParseRedisRequest(head);
    ASSERT_TRUE(request.has_value()) << head;
    EXPECT_EQ(request->protocol, Protocol::kRedis);
    EXPECT_EQ(request->name, name);
    EXPECT_THAT(Pairs(request->attributes),
                ElementsAre(Pair("db.system", "redis"), Pair("db.operation", name)));
  }
}

TEST(ParseRedisRequest, UpperCasesTheCommand) {
  std::optional<Request> request = ParseRedisRequest("*2\r\n$6\r\nclient\r\n$4\r\nlist\r\n");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "CLIENT LIST");
  request = ParseRedisRequest("ping\n");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "PING");
  // Module commands.
  request = ParseRedisRequest("*2\r\n$8\r\nJSON.GET\r\n$3\r\ndoc\r\n");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "JSON.GET");
}

TEST(ParseRedisRequest, OnlyContainerCommandsTakeTheirFirstArgument) {
  std::optional<Request> request = ParseRedisRequest("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "GET");
  request = ParseRedisRequest("CONFIG GET maxmemory\r\n");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->name, "CONFIG GET");
}

TEST(ParseRedisRequest, EveryPrefixIsRefusedOrNamesTheCommand) {
  // "*3\r\n$6\r\nCLIENT" is 14 bytes; SETNAME is whole at 14 + 2 + 4 + 7 = 27.
  ForEachPrefix(testing::kRedisClientSetname, [](size_t n, absl::string_view head) {
    std::optional<Request> request = ParseRedisRequest(head);
    if (n < 14) {
      EXPECT_FALSE(request.has_value()) << n;
    } else if (n < 27) {
      ASSERT_TRUE(request.has_value()) << n;
      EXPECT_EQ(request->name, "CLIENT") << n;
    } else {
      ASSERT_TRUE(request.has_value()) << n;
      EXPECT_EQ(request->name, "CLIENT SETNAME") << n;
    }
  });
  // An inline command counts only once its line is whole.
  ForEachPrefix(testing::kRedisInlineSet, [](size_t n, absl::string_view head) {
    EXPECT_EQ(ParseRedisRequest(head).has_value(), n == testing::kRedisInlineSet.size()) << n;
  });
}

TEST(ParseRedisRequest, RefusesWhatIsNotACommand) {
  for (const std::string& head : {
           ""s, "*"s, "*0\r\n"s, "*-1\r\n"s, "*1\r\n"s, "*1\r\n$4\r\nPI"s,
           "*1\r\n$99999999999\r\nPING\r\n"s,  // more digits than a length has
           "*1\r\n$4\r\nP\001NG\r\n"s,         // not a name
           "*1\r\n$3\r\nPING\r\n"s,            // length does not match
           "*1\r\n:4\r\n"s,                    // not a bulk string
           "*1\n$4\nPING\n"s,                  // LF without CR
           "HELO mail.example.com\r\n"s,       // SMTP: an unknown inline word
           "USER anonymous\r\n"s,              // FTP
           "PING"s,                            // no end of line yet
           "+OK\r\n"s, "-ERR x\r\n"s, ":1\r\n"s,
       }) {
    EXPECT_FALSE(ParseRedisRequest(head).has_value()) << head;
  }
  for (const std::string& other : {testing::kHttpCurlGet, testing::kPgQuerySelect,
                                   testing::kPgStartupPsql, testing::kDnsQueryA,
                                   testing::kDnsTcpQueryAny}) {
    EXPECT_FALSE(ParseRedisRequest(other).has_value()) << other;
  }
}

TEST(ParseRedisResponse, RepliesAreSuccesses) {
  for (const std::string& head :
       {testing::kRedisOk, testing::kRedisPong, testing::kRedisBulkAlice, testing::kRedisConfigReply,
        testing::kRedisInt1, testing::kRedisInt2, testing::kRedisLrangeReply,
        testing::kRedisNullBulk,
        // RESP3
        "_\r\n"s, ",3.25\r\n"s, ",-inf\r\n"s, "#t\r\n"s, "%1\r\n+a\r\n:1\r\n"s, "~2\r\n"s,
        "(3492890328409238509324850943850943825024385\r\n"s, "=15\r\ntxt:Some string\r\n"s,
        ">3\r\n"s}) {
    std::optional<Response> response = ParseRedisResponse(head);
    ASSERT_TRUE(response.has_value()) << head;
    EXPECT_FALSE(response->error) << head;
    EXPECT_TRUE(response->attributes.empty()) << head;
  }
}

TEST(ParseRedisResponse, ErrorsCarryTheirText) {
  std::optional<Response> response = ParseRedisResponse(testing::kRedisUnknownError);
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->error);
  const std::string text = "ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' ";
  EXPECT_EQ(response->status_message, text);
  EXPECT_THAT(Pairs(response->attributes),
              ElementsAre(Pair("db.response.status_code", "ERR"), Pair("error.message", text)));

  response = ParseRedisResponse(testing::kRedisWrongTypeError);
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->error);
  EXPECT_EQ(FindAttribute(response->attributes, "db.response.status_code"), "WRONGTYPE");

  // RESP3 blob error.
  response = ParseRedisResponse("!21\r\nSYNTAX invalid syntax\r\n");
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->error);
  EXPECT_EQ(response->status_message, "SYNTAX invalid syntax");

  // A lower-case first word is no error code.
  response = ParseRedisResponse("-oops\r\n");
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->error);
  EXPECT_FALSE(FindAttribute(response->attributes, "db.response.status_code").has_value());
}

TEST(ParseRedisResponse, AnErrorCutShortKeepsWhatWasCaptured) {
  ForEachPrefix(testing::kRedisIncrError, [](size_t n, absl::string_view head) {
    std::optional<Response> response = ParseRedisResponse(head);
    ASSERT_EQ(response.has_value(), n >= 2) << n;
    if (!response) return;
    EXPECT_TRUE(response->error);
    const size_t text_length = std::min(n - 1, testing::kRedisIncrError.size() - 3);
    EXPECT_EQ(response->status_message, testing::kRedisIncrError.substr(1, text_length)) << n;
  });
}

TEST(ParseRedisResponse, RefusesWhatIsNotAReply) {
  for (const std::string& head :
       {""s, "+"s, "?\r\n"s, ":x\r\n"s, "$abc\r\n"s, "#x\r\n"s, "_x\r\n"s, "+a\nb\r\n"s,
        "-\r\n"s, testing::kHttpPython200, testing::kPgCreateTableComplete,
        testing::kDnsResponseA}) {
    EXPECT_FALSE(ParseRedisResponse(head).has_value()) << head;
  }
}

}  // namespace
}  // namespace protocol
}  // namespace reptrace

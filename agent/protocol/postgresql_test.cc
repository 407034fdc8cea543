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

// A simple query message 'Q' as libpq sends it.
std::string SimpleQuery(const std::string& sql) {
  const uint32_t length = static_cast<uint32_t>(4 + sql.size() + 1);
  std::string message = "Q";
  for (int shift = 24; shift >= 0; shift -= 8) message.push_back(static_cast<char>(length >> shift));
  return message + sql + '\0';
}

std::string NameOf(const std::string& head) {
  std::optional<Request> request = ParsePostgresqlRequest(head);
  return request ? std::string(request->name.view()) : "<nullopt>";
}

TEST(ParsePostgresqlRequest, SimpleQueriesByKindAndTable) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {testing::kPgQueryCreateTable, "CREATE"},
      {testing::kPgQueryInsert, "INSERT items"},
      {testing::kPgQuerySelect, "SELECT items"},
      {testing::kPgQueryUpdate, "UPDATE items"},
      {testing::kPgQueryDelete, "DELETE items"},
      {testing::kPgQuerySelectMissingTable, "SELECT nosuchtable"},
      {testing::kPgQueryBegin, "BEGIN"},
      {testing::kPgQueryCommit, "COMMIT"},
  };
  for (const auto& [head, name] : cases) EXPECT_EQ(NameOf(head), name);

  std::optional<Request> request = ParsePostgresqlRequest(testing::kPgQuerySelect);
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->protocol, Protocol::kPostgresql);
  EXPECT_THAT(Pairs(request->attributes),
              ElementsAre(Pair("db.system", "postgresql"), Pair("db.operation", "SELECT"),
                          Pair("db.sql.table", "items")));
  request = ParsePostgresqlRequest(testing::kPgQueryBegin);
  ASSERT_TRUE(request.has_value());
  EXPECT_THAT(Pairs(request->attributes),
              ElementsAre(Pair("db.system", "postgresql"), Pair("db.operation", "BEGIN")));
}

TEST(ParsePostgresqlRequest, ExtendedQueryParseAndBind) {
  EXPECT_EQ(NameOf(testing::kPgParseBindSelect), "SELECT items");
  EXPECT_EQ(NameOf(testing::kPgParseBindInsert), "INSERT items");
  EXPECT_EQ(NameOf(testing::kPgParseNamedSelect), "SELECT items");
  EXPECT_EQ(NameOf(testing::kPgBindNamed), "EXECUTE");
}

TEST(ParsePostgresqlRequest, StartupAndItsRelatives) {
  std::optional<Request> startup = ParsePostgresqlRequest(testing::kPgStartupPsql);
  ASSERT_TRUE(startup.has_value());
  EXPECT_EQ(startup->name, "STARTUP postgres");
  EXPECT_THAT(Pairs(startup->attributes),
              ElementsAre(Pair("db.system", "postgresql"), Pair("db.operation", "STARTUP"),
                          Pair("db.user", "postgres"), Pair("db.name", "postgres")));
  EXPECT_EQ(NameOf(testing::kPgStartupPgbench), "STARTUP postgres");
  EXPECT_EQ(NameOf(testing::kPgSslRequest), "SSLREQUEST");
  EXPECT_EQ(NameOf("\0\0\0\x08\x04\xd2\x16\x30"s), "GSSENCREQUEST");
  EXPECT_EQ(NameOf("\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\1\0\0\0\2"s), "CANCEL");
  EXPECT_EQ(NameOf(testing::kPgTerminate), "TERMINATE");
}

TEST(ParsePostgresqlRequest, FindsTheTableOnlyWhereItIsPlain) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"select * from public.Orders o join x on true", "SELECT public.orders"},
      {"SELECT * FROM \"Mixed Case\" WHERE a = 1", "SELECT Mixed Case"},
      {"SELECT a, (SELECT 1 FROM inner_t) FROM outer_t", "SELECT outer_t"},
      {"SELECT 'a from x' AS s FROM t", "SELECT t"},
      {"/* app */ -- note\n  select 1 from t;", "SELECT t"},
      {"(SELECT 1 FROM t)", "SELECT t"},
      {"SELECT * FROM a, b", "SELECT"},
      {"SELECT * FROM generate_series(1, 3)", "SELECT"},
      {"SELECT * FROM (SELECT 1) s", "SELECT"},
      {"SELECT 1", "SELECT"},
      {"UPDATE ONLY t SET a = 1", "UPDATE t"},
      {"DELETE FROM ONLY t", "DELETE t"},
      {"INSERT INTO t(a) VALUES (1)", "INSERT t"},
      {"insert into s.t values (1)", "INSERT s.t"},
      {"WITH x AS (SELECT 1 FROM t) SELECT * FROM x", "WITH"},
      {"set search_path = public", "SET"},
  };
  for (const auto& [sql, name] : cases) EXPECT_EQ(NameOf(SimpleQuery(sql)), name) << sql;
}

TEST(ParsePostgresqlRequest, ATableCutShortIsNotReported) {
  // Q, length, "SELECT name FROM items WHERE id = 1\0": "SELECT" is bytes 5-10 and "items"
  // bytes 22-26; a word counts once the byte after it is captured too.
  ForEachPrefix(testing::kPgQuerySelect, [](size_t n, absl::string_view head) {
    std::optional<Request> request = ParsePostgresqlRequest(head);
    if (n < 12) {
      EXPECT_FALSE(request.has_value()) << n;
    } else if (n < 28) {
      ASSERT_TRUE(request.has_value()) << n;
      EXPECT_EQ(request->name, "SELECT") << n;
    } else {
      ASSERT_TRUE(request.has_value()) << n;
      EXPECT_EQ(request->name, "SELECT items") << n;
    }
  });
}

TEST(ParsePostgresqlRequest, EveryPrefixOfAStartupIsRefusedOrAStartup) {
  ForEachPrefix(testing::kPgStartupPsql, [](size_t n, absl::string_view head) {
    std::optional<Request> request = ParsePostgresqlRequest(head);
    EXPECT_EQ(request.has_value(), n >= 8) << n;
    if (request) {
      EXPECT_EQ(FindAttribute(request->attributes, "db.operation"), "STARTUP");
    }
  });
}

TEST(ParsePostgresqlRequest, RefusesWhatIsNotAFrontendMessage) {
  for (const std::string& head : {
           ""s, "Q"s, "Q\0\0\0"s, "Q\0\0\0\3"s,             // too short; length below 4
           SimpleQuery("HELLO world"),                     // not a statement
           SimpleQuery("SELECT 1\001"),                    // control character
           "Q\0\0\0\x20SELECT 1\0"s,                       // length does not match the NUL
           "Q\x7f\0\0\0SELECT 1\0"s,                       // length over 1 GiB
           "X\0\0\0\5\0"s,                                 // Terminate has no body
           "P\0\0\0\x10na me\0SELECT 1\0\0\0"s,            // statement name with a space
           "\0\0\0\x08\x04\xd2\x16\x31"s,                  // unknown request code
           "\0\0\0\x09\0\3\0\0\0"s,                        // startup without parameters
           "\0\0\0\x20\0\2\0\0user\0x\0\0"s,               // protocol 2
       }) {
    EXPECT_FALSE(ParsePostgresqlRequest(head).has_value()) << head;
  }
  for (const std::string& other :
       {testing::kHttpCurlGet, testing::kRedisSetUser, testing::kRedisInlinePing,
        testing::kDnsQueryA, testing::kDnsTcpQueryAny, testing::kDnsTcpQuerySrv}) {
    EXPECT_FALSE(ParsePostgresqlRequest(other).has_value()) << other;
  }
}

TEST(ParsePostgresqlResponse, ResultsAreSuccesses) {
  for (const std::string& head :
       {testing::kPgAuthOkAndParameters, testing::kPgCreateTableComplete,
        testing::kPgInsertComplete, testing::kPgSelectRows, testing::kPgReadyForQuery,
        testing::kPgBeginComplete, testing::kPgParseComplete, testing::kPgParseBindSelectRows,
        testing::kPgSslRefused, "S"s}) {
    std::optional<Response> response = ParsePostgresqlResponse(head);
    ASSERT_TRUE(response.has_value()) << head;
    EXPECT_FALSE(response->error) << head;
  }
}

TEST(ParsePostgresqlResponse, ErrorResponseCarriesMessageAndSqlstate) {
  std::optional<Response> response = ParsePostgresqlResponse(testing::kPgUndefinedTableError);
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->error);
  EXPECT_EQ(response->status_message, "relation \"nosuchtable\" does not exist");
  EXPECT_THAT(Pairs(response->attributes),
              ElementsAre(Pair("db.response.status_code", "42P01"),
                          Pair("error.message", "relation \"nosuchtable\" does not exist")));
  // After ParseComplete, BindComplete and NoData in the same read.
  for (const std::string& head :
       {testing::kPgDuplicateKeyError, testing::kPgDuplicateKeyAfterBindError}) {
    response = ParsePostgresqlResponse(head);
    ASSERT_TRUE(response.has_value());
    EXPECT_TRUE(response->error);
    EXPECT_EQ(response->status_message,
              "duplicate key value violates unique constraint \"items_pkey\"");
    EXPECT_EQ(FindAttribute(response->attributes, "db.response.status_code"), "23505");
  }
}

TEST(ParsePostgresqlResponse, AnErrorCutShortIsStillAnError) {
  // "E", length, "SERROR\0VERROR\0C42P01\0": the SQLSTATE is whole from 26 bytes on.
  ForEachPrefix(testing::kPgUndefinedTableError, [](size_t n, absl::string_view head) {
    std::optional<Response> response = ParsePostgresqlResponse(head);
    ASSERT_EQ(response.has_value(), n >= 5) << n;
    if (!response) return;
    EXPECT_TRUE(response->error);
    EXPECT_FALSE(response->status_message.empty());
    EXPECT_EQ(FindAttribute(response->attributes, "db.response.status_code").has_value(),
              n >= 26)
        << n;
  });
}

TEST(ParsePostgresqlResponse, RefusesWhatIsNotABackendMessage) {
  for (const std::string& head :
       {""s, "X"s, "C\0\0"s, "C\0\0\0\3"s, "q\0\0\0\4"s, testing::kHttpPython200,
        testing::kRedisOk, testing::kRedisUnknownError, testing::kDnsResponseA}) {
    EXPECT_FALSE(ParsePostgresqlResponse(head).has_value()) << head;
  }
}

}  // namespace
}  // namespace protocol
}  // namespace reptrace

// Message heads captured from real programs on loopback (first 128 bytes of one read or
// write, as the hook keeps them), for the protocol parsers' tests.
#ifndef REPTRACE_AGENT_PROTOCOL_TESTING_CAPTURED_H_
#define REPTRACE_AGENT_PROTOCOL_TESTING_CAPTURED_H_

#include <string>

namespace reptrace {
namespace protocol {
namespace testing {

using namespace std::string_literals;

// curl 7.88.1 -> python3 -m http.server
inline const std::string kHttpCurlGet =
    "GET /ext.sql?token=secret&x=1 HTTP/1.1\r\nHost: 127.0.0.1:45083\r\nUser-Agent: curl/7.88"
    ".1\r\nAccept: */*\r\n\r\n"s;
inline const std::string kHttpPython200 =
    "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nDate: Sun, 22 Nov 2026 02:36:"
    "39 GMT\r\nContent-type: application/sql\r\nConte"s;
inline const std::string kHttpCurlPost =
    "POST /orders HTTP/1.1\r\nHost: 127.0.0.1:45083\r\nUser-Agent: curl/7.88.1\r\nAccept: */*"
    "\r\nContent-Type: application/json\r\nContent-Leng"s;
inline const std::string kHttpPython501 =
    "HTTP/1.0 501 Unsupported method ('POST')\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nDate"
    ": Sun, 22 Nov 2026 02:36:39 GMT\r\nConnection:"s;
inline const std::string kHttpCurlGetMissing =
    "GET /missing HTTP/1.1\r\nHost: 127.0.0.1:45083\r\nUser-Agent: curl/7.88.1\r\nAccept: */*"
    "\r\n\r\n"s;
inline const std::string kHttpPython404 =
    "HTTP/1.0 404 File not found\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nDate: Sun, 22 Nov"
    " 2026 02:36:39 GMT\r\nConnection: close\r\nConte"s;

// redis-cli 7.0 (and inline commands over a raw socket) -> redis-server 7.0
inline const std::string kRedisSetUser =
    "*3\r\n$3\r\nSET\r\n$6\r\nuser:1\r\n$5\r\nalice\r\n"s;
inline const std::string kRedisOk =
    "+OK\r\n"s;
inline const std::string kRedisGetUser =
    "*2\r\n$3\r\nGET\r\n$6\r\nuser:1\r\n"s;
inline const std::string kRedisBulkAlice =
    "$5\r\nalice\r\n"s;
inline const std::string kRedisPing =
    "*1\r\n$4\r\nPING\r\n"s;
inline const std::string kRedisPong =
    "+PONG\r\n"s;
inline const std::string kRedisClientSetname =
    "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\nfoo\r\n"s;
inline const std::string kRedisConfigGet =
    "*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$9\r\nmaxmemory\r\n"s;
inline const std::string kRedisConfigReply =
    "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"s;
inline const std::string kRedisUnknown =
    "*2\r\n$9\r\nNOSUCHCMD\r\n$1\r\na\r\n"s;
inline const std::string kRedisUnknownError =
    "-ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' \r\n"s;
inline const std::string kRedisIncr =
    "*2\r\n$4\r\nINCR\r\n$6\r\nuser:1\r\n"s;
inline const std::string kRedisIncrError =
    "-ERR value is not an integer or out of range\r\n"s;
inline const std::string kRedisHset =
    "*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\nv\r\n"s;
inline const std::string kRedisInt1 =
    ":1\r\n"s;
inline const std::string kRedisLpush =
    "*4\r\n$5\r\nLPUSH\r\n$1\r\nl\r\n$1\r\na\r\n$1\r\nb\r\n"s;
inline const std::string kRedisInt2 =
    ":2\r\n"s;
inline const std::string kRedisLrange =
    "*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n"s;
inline const std::string kRedisLrangeReply =
    "*2\r\n$1\r\nb\r\n$1\r\na\r\n"s;
inline const std::string kRedisGetMissing =
    "*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n"s;
inline const std::string kRedisNullBulk =
    "$-1\r\n"s;
inline const std::string kRedisInlinePing =
    "PING\r\n"s;
inline const std::string kRedisInlineSet =
    "SET k v\r\n"s;
inline const std::string kRedisInlineGet =
    "GET\r\n"s;
inline const std::string kRedisInlineGetError =
    "-ERR wrong number of arguments for 'get' command\r\n"s;
inline const std::string kRedisLpushWrongType =
    "*3\r\n$5\r\nLPUSH\r\n$6\r\nuser:1\r\n$1\r\nx\r\n"s;
inline const std::string kRedisWrongTypeError =
    "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"s;
inline const std::string kRedisSetBig =
    "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$300\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"s;

// psql 15 and pgbench 15 (-M extended, -M prepared) -> PostgreSQL 15
inline const std::string kPgStartupPsql =
    "\000\000\000?\000\003\000\000user\000postgres\000database\000postgres\000application_nam"
    "e\000psql\000\000"s;
inline const std::string kPgAuthOkAndParameters =
    "R\000\000\000\010\000\000\000\000S\000\000\000\032application_name\000psql\000S\000\000"
    "\000\031client_encoding\000UTF8\000S\000\000\000\027DateStyle\000ISO, MDY\000S\000\000"
    "\000&default_transaction_read_only\000off\000S\000\000"s;
inline const std::string kPgQueryCreateTable =
    "Q\000\000\0007CREATE TABLE items (id int primary key, name text)\000"s;
inline const std::string kPgCreateTableComplete =
    "C\000\000\000\021CREATE TABLE\000Z\000\000\000\005I"s;
inline const std::string kPgTerminate =
    "X\000\000\000\004"s;
inline const std::string kPgSslRequest =
    "\000\000\000\010\004\322\026/"s;
inline const std::string kPgSslRefused =
    "N"s;
inline const std::string kPgQueryInsert =
    "Q\000\000\000&INSERT INTO items VALUES (1, 'a')\000"s;
inline const std::string kPgInsertComplete =
    "C\000\000\000\017INSERT 0 1\000Z\000\000\000\005I"s;
inline const std::string kPgQuerySelect =
    "Q\000\000\000(SELECT name FROM items WHERE id = 1\000"s;
inline const std::string kPgSelectRows =
    "T\000\000\000\035\000\001name\000\000\000@\000\000\002\000\000\000\031\377\377\377\377"
    "\377\377\000\000D\000\000\000\013\000\001\000\000\000\001aC\000\000\000\rSELECT 1\000Z"
    "\000\000\000\005I"s;
inline const std::string kPgQueryUpdate =
    "Q\000\000\000-UPDATE items SET name = 'b' WHERE id = 1\000"s;
inline const std::string kPgQueryDelete =
    "Q\000\000\000#DELETE FROM items WHERE id = 2\000"s;
inline const std::string kPgQuerySelectMissingTable =
    "Q\000\000\000\036SELECT * FROM nosuchtable\000"s;
inline const std::string kPgUndefinedTableError =
    "E\000\000\000nSERROR\000VERROR\000C42P01\000Mrelation \"nosuchtable\" does not exist\000"
    "P15\000Fparse_relation.c\000L1392\000RparserOpenTable\000\000"s;
inline const std::string kPgReadyForQuery =
    "Z\000\000\000\005I"s;
inline const std::string kPgQueryBegin =
    "Q\000\000\000\nBEGIN\000"s;
inline const std::string kPgBeginComplete =
    "C\000\000\000\nBEGIN\000Z\000\000\000\005T"s;
inline const std::string kPgQueryCommit =
    "Q\000\000\000\013COMMIT\000"s;
inline const std::string kPgStartupPgbench =
    "\000\000\000B\000\003\000\000user\000postgres\000database\000postgres\000application_nam"
    "e\000pgbench\000\000"s;
inline const std::string kPgParseBindSelect =
    "P\000\000\000-\000SELECT name FROM items WHERE id = $1;\000\000\000B\000\000\000\023\000"
    "\000\000\000\000\001\000\000\000\0011\000\001\000\000D\000\000\000\006P\000E\000\000\000"
    "\011\000\000\000\000\000S\000\000\000\004"s;
inline const std::string kPgParseBindSelectRows =
    "1\000\000\000\0042\000\000\000\004T\000\000\000\035\000\001name\000\000\000@\000\000\002"
    "\000\000\000\031\377\377\377\377\377\377\000\000D\000\000\000\013\000\001\000\000\000"
    "\001bC\000\000\000\rSELECT 1\000Z\000\000\000\005I"s;
inline const std::string kPgParseBindInsert =
    "P\000\000\000+\000INSERT INTO items VALUES ($1, 'x');\000\000\000B\000\000\000\023\000"
    "\000\000\000\000\001\000\000\000\0011\000\001\000\000D\000\000\000\006P\000E\000\000\000"
    "\011\000\000\000\000\000S\000\000\000\004"s;
inline const std::string kPgDuplicateKeyError =
    "1\000\000\000\0042\000\000\000\004n\000\000\000\004E\000\000\000\264SERROR\000VERROR\000"
    "C23505\000Mduplicate key value violates unique constraint \"items_pkey\"\000DKey (id)=(1"
    ") already exis"s;
inline const std::string kPgParseNamedSelect =
    "P\000\000\0000P_0\000SELECT name FROM items WHERE id = $1;\000\000\000S\000\000\000\004"s;
inline const std::string kPgParseComplete =
    "1\000\000\000\004Z\000\000\000\005I"s;
inline const std::string kPgBindNamed =
    "B\000\000\000\026\000P_0\000\000\000\000\001\000\000\000\0011\000\001\000\000D\000\000"
    "\000\006P\000E\000\000\000\011\000\000\000\000\000S\000\000\000\004"s;
inline const std::string kPgDuplicateKeyAfterBindError =
    "2\000\000\000\004n\000\000\000\004E\000\000\000\264SERROR\000VERROR\000C23505\000Mduplic"
    "ate key value violates unique constraint \"items_pkey\"\000DKey (id)=(1) already exists."
    "\000s"s;

// dig 9.18 -> a test responder; UDP unless named Tcp
inline const std::string kDnsQueryA =
    "Y\234\001 \000\001\000\000\000\000\000\001\007example\003com\000\000\001\000\001\000\000"
    ")\004\320\000\000\000\000\000\014\000\n\000\010\214\303\000&.\363(]"s;
inline const std::string kDnsResponseA =
    "Y\234\201\200\000\001\000\001\000\000\000\001\007example\003com\000\000\001\000\001\300"
    "\014\000\001\000\001\000\000\001,\000\004\177\000\000\007\000\000)\004\320\000\000\000"
    "\000\000\014\000\n\000\010\214\303\000&.\363(]"s;
inline const std::string kDnsQueryAaaa =
    "\353\301\001 \000\001\000\000\000\000\000\001\004ipv6\007example\003com\000\000\034\000"
    "\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010DXT\312\246\n\340\320"s;
inline const std::string kDnsResponseAaaa =
    "\353\301\201\200\000\001\000\000\000\000\000\001\004ipv6\007example\003com\000\000\034"
    "\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010DXT\312\246\n\340\320"s;
inline const std::string kDnsQueryNx =
    "\335t\001 \000\001\000\000\000\000\000\001\002nx\007example\003org\000\000\001\000\001"
    "\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\256!\342\302\311\270-\022"s;
inline const std::string kDnsResponseNx =
    "\335t\201\203\000\001\000\000\000\000\000\001\002nx\007example\003org\000\000\001\000"
    "\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\256!\342\302\311\270-\022"s;
inline const std::string kDnsQueryMxServfail =
    "\221\362\001 \000\001\000\000\000\000\000\001\004fail\007example\003net\000\000\017\000"
    "\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\004j\246o\216\207}\003"s;
inline const std::string kDnsResponseServfail =
    "\221\362\201\202\000\001\000\000\000\000\000\001\004fail\007example\003net\000\000\017"
    "\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\004j\246o\216\207}\003"s;
inline const std::string kDnsQueryTxtRefused =
    "\207H\001 \000\001\000\000\000\000\000\001\007refused\007example\003com\000\000\020\000"
    "\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\266\2550\017\255z\264["s;
inline const std::string kDnsResponseRefused =
    "\207H\201\205\000\001\000\000\000\000\000\001\007refused\007example\003com\000\000\020"
    "\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\266\2550\017\255z\264["s;
inline const std::string kDnsTcpQueryAny =
    "\000\035\322c\001 \000\001\000\000\000\000\000\000\007example\003com\000\000\377\000\001"s;
inline const std::string kDnsTcpResponseAny =
    "\000\035\322c\201\200\000\001\000\000\000\000\000\000\007example\003com\000\000\377\000"
    "\001"s;
inline const std::string kDnsQueryPtr =
    "?\"\001 \000\001\000\000\000\000\000\001\0011\0010\0010\003127\007in-addr\004arpa\000"
    "\000\014\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\353g\001\356\261"
    "\252\303\027"s;
inline const std::string kDnsResponsePtr =
    "?\"\201\200\000\001\000\000\000\000\000\001\0011\0010\0010\003127\007in-addr\004arpa\000"
    "\000\014\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\010\353g\001\356\261"
    "\252\303\027"s;
inline const std::string kDnsTcpQuerySrv =
    "\000?\372\023\001 \000\001\000\000\000\000\000\001\005_http\004_tcp\007example\003com"
    "\000\000!\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\0101O\207\335\304Yq"
    "L"s;
inline const std::string kDnsTcpResponseSrv =
    "\000?\372\023\201\200\000\001\000\000\000\000\000\001\005_http\004_tcp\007example\003com"
    "\000\000!\000\001\000\000)\004\320\000\000\000\000\000\014\000\n\000\0101O\207\335\304Yq"
    "L"s;
inline const std::string kDnsQueryType65 =
    "\351\003\001 \000\001\000\000\000\000\000\001\007example\003com\000\000A\000\001\000\000"
    ")\004\320\000\000\000\000\000\014\000\n\000\010!\353#5m\374^\000"s;
inline const std::string kDnsResponseType65 =
    "\351\003\201\200\000\001\000\000\000\000\000\001\007example\003com\000\000A\000\001\000"
    "\000)\004\320\000\000\000\000\000\014\000\n\000\010!\353#5m\374^\000"s;

}  // namespace testing
}  // namespace protocol
}  // namespace reptrace

#endif  // REPTRACE_AGENT_PROTOCOL_TESTING_CAPTURED_H_

// PostgreSQL wire protocol v3 (https://www.postgresql.org/docs/current/protocol-message-formats.html).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/protocol/internal/text.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace {

using internal::IsAsciiAlpha;
using internal::IsAsciiDigit;
using internal::ReadBe32;

constexpr uint32_t kMaxMessageLength = 1u << 30;  // the server's own limit (1 GiB)
constexpr uint32_t kMaxStartupLength = 10000;     // MAX_STARTUP_PACKET_LENGTH
constexpr uint32_t kCancelRequestCode = 80877102;
constexpr uint32_t kSslRequestCode = 80877103;
constexpr uint32_t kGssEncRequestCode = 80877104;

// Statements are recognised by their first keyword, and only these: anything else in a 'Q'
// is more likely not PostgreSQL at all.
constexpr absl::string_view kStatementKeywords[] = {
    "ABORT",    "ALTER",    "ANALYZE",   "BEGIN",    "CALL",     "CHECKPOINT", "CLOSE",
    "CLUSTER",  "COMMENT",  "COMMIT",    "COPY",     "CREATE",   "DEALLOCATE", "DECLARE",
    "DELETE",   "DISCARD",  "DO",        "DROP",     "END",      "EXECUTE",    "EXPLAIN",
    "FETCH",    "GRANT",    "IMPORT",    "INSERT",   "LISTEN",   "LOAD",       "LOCK",
    "MERGE",    "MOVE",     "NOTIFY",    "PREPARE",  "REASSIGN", "REFRESH",    "REINDEX",
    "RELEASE",  "RESET",    "REVOKE",    "ROLLBACK", "SAVEPOINT", "SECURITY",  "SELECT",
    "SET",      "SHOW",     "START",     "TABLE",    "TRUNCATE", "UNLISTEN",   "UPDATE",
    "VACUUM",   "VALUES",   "WITH"};

bool IsStatementKeyword(absl::string_view word) {
  for (absl::string_view known : kStatementKeywords) {
    if (known == word) return true;
  }
  return false;
}

// A minimal SQL tokenizer: enough to find the first keyword and the table after FROM, INTO
// or UPDATE without being fooled by strings, quoted names, comments or subqueries.
class SqlTokens {
 public:
  enum class Kind { kEnd, kWord, kQuotedName, kOther };
  struct Token {
    Kind kind;
    absl::string_view text;  // a kWord or kOther as written; a kQuotedName without quotes
    bool at_end;             // nothing follows in the captured text (the token may be cut)
  };

  explicit SqlTokens(absl::string_view sql) : sql_(sql) {}

  Token Next() {
    SkipSpaceAndComments();
    if (pos_ >= sql_.size()) return {Kind::kEnd, {}, true};
    const size_t start = pos_;
    const char c = sql_[pos_];
    Kind kind;
    absl::string_view text;
    if (IsAsciiAlpha(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80) {
      while (pos_ < sql_.size() && IsWordChar(sql_[pos_])) ++pos_;
      kind = Kind::kWord;
      text = sql_.substr(start, pos_ - start);
    } else if (c == '"' || c == '\'') {
      // "" or '' inside doubles the quote.
      ++pos_;
      while (pos_ < sql_.size()) {
        if (sql_[pos_] == c) {
          if (pos_ + 1 < sql_.size() && sql_[pos_ + 1] == c) {
            pos_ += 2;
            continue;
          }
          break;
        }
        ++pos_;
      }
      if (pos_ >= sql_.size()) return {Kind::kEnd, {}, true};  // cut inside the quotes
      ++pos_;
      kind = c == '"' ? Kind::kQuotedName : Kind::kOther;
      text = sql_.substr(start + 1, pos_ - start - 2);
    } else {
      ++pos_;
      kind = Kind::kOther;
      text = sql_.substr(start, 1);
    }
    return {kind, text, pos_ >= sql_.size()};
  }

 private:
  static bool IsWordChar(char c) {
    return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '_' || c == '$' ||
           static_cast<unsigned char>(c) >= 0x80;
  }

  void SkipSpaceAndComments() {
    while (pos_ < sql_.size()) {
      const char c = sql_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
        ++pos_;
      } else if (c == '-' && pos_ + 1 < sql_.size() && sql_[pos_ + 1] == '-') {
        const size_t eol = sql_.find('\n', pos_);
        pos_ = eol == absl::string_view::npos ? sql_.size() : eol + 1;
      } else if (c == '/' && pos_ + 1 < sql_.size() && sql_[pos_ + 1] == '*') {
        const size_t close = sql_.find("*/", pos_ + 2);
        pos_ = close == absl::string_view::npos ? sql_.size() : close + 2;
      } else {
        return;
      }
    }
  }

  absl::string_view sql_;
  size_t pos_ = 0;
};

bool IsWord(const SqlTokens::Token& token, absl::string_view upper) {
  if (token.kind != SqlTokens::Kind::kWord || token.text.size() != upper.size()) return false;
  for (size_t i = 0; i < upper.size(); ++i) {
    if (internal::ToAsciiUpper(token.text[i]) != upper[i]) return false;
  }
  return true;
}

// Reads "[ONLY] name[.name]" where a table is expected. The name counts only if the capture
// holds it whole: when `complete` is false, what ends at the end of the text may be cut.
// After FROM, "name(" is a function; after INTO, a column list.
std::string ReadTableName(SqlTokens& tokens, bool complete, bool after_from) {
  SqlTokens::Token token = tokens.Next();
  if (IsWord(token, "ONLY")) token = tokens.Next();
  std::string name;
  while (true) {
    if (token.kind == SqlTokens::Kind::kWord) {
      // PostgreSQL folds unquoted names to lower case.
      for (char c : token.text) name.push_back(internal::ToAsciiLower(c));
    } else if (token.kind == SqlTokens::Kind::kQuotedName && !token.text.empty()) {
      name.append(token.text.data(), token.text.size());
    } else {
      return "";
    }
    if (token.at_end && !complete) return "";
    token = tokens.Next();
    if (token.kind == SqlTokens::Kind::kOther && token.text == ".") {
      name.push_back('.');
      token = tokens.Next();
      continue;
    }
    break;
  }
  // "FROM a, b" names no single table; "FROM f(x)" is a function.
  if (after_from && token.kind == SqlTokens::Kind::kOther &&
      (token.text == "," || token.text == "(")) {
    return "";
  }
  return internal::CleanText(name);
}

struct Statement {
  std::string operation;
  std::string table;
};

// The statement's kind and, for a plain SELECT/INSERT/UPDATE/DELETE, its table.
std::optional<Statement> SummarizeSql(absl::string_view sql, bool complete) {
  for (char c : sql) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') return std::nullopt;
  }
  SqlTokens tokens(sql);
  SqlTokens::Token first = tokens.Next();
  while (first.kind == SqlTokens::Kind::kOther && first.text == "(") first = tokens.Next();
  if (first.kind != SqlTokens::Kind::kWord || (first.at_end && !complete)) return std::nullopt;
  Statement statement{internal::AsciiUpper(first.text), ""};
  if (!IsStatementKeyword(statement.operation)) return std::nullopt;

  if (statement.operation == "SELECT") {
    // The first FROM outside parentheses.
    int depth = 0;
    for (SqlTokens::Token token = tokens.Next(); token.kind != SqlTokens::Kind::kEnd;
         token = tokens.Next()) {
      if (token.kind == SqlTokens::Kind::kOther) {
        if (token.text == "(") ++depth;
        if (token.text == ")") --depth;
        if (token.text == ";") break;
      } else if (depth == 0 && IsWord(token, "FROM")) {
        statement.table = ReadTableName(tokens, complete, /*after_from=*/true);
        break;
      }
    }
  } else if (statement.operation == "INSERT") {
    if (IsWord(tokens.Next(), "INTO")) {
      statement.table = ReadTableName(tokens, complete, /*after_from=*/false);
    }
  } else if (statement.operation == "UPDATE") {
    statement.table = ReadTableName(tokens, complete, /*after_from=*/false);
  } else if (statement.operation == "DELETE") {
    if (IsWord(tokens.Next(), "FROM")) {
      statement.table = ReadTableName(tokens, complete, /*after_from=*/true);
    }
  }
  return statement;
}

Request StatementRequest(const Statement& statement) {
  Request request{Protocol::kPostgresql,
                  statement.table.empty()
                      ? statement.operation
                      : absl::StrCat(statement.operation, " ", statement.table),
                  {},
                  {}};
  request.attributes.push_back({"db.system", Text::View("postgresql")});
  request.attributes.push_back({"db.operation", statement.operation});
  if (!statement.table.empty()) request.attributes.push_back({"db.sql.table", statement.table});
  return request;
}

Request NamedRequest(absl::string_view operation) {
  return StatementRequest(Statement{std::string(operation), ""});
}

// A NUL-terminated string at `pos` that must end within the message (`message_end`, which
// may lie beyond the capture). Returns nullopt if the string runs past the message or past
// the capture (`*complete` tells the caller which text was cut).
std::optional<absl::string_view> ReadCString(absl::string_view head, size_t pos,
                                             size_t message_end, bool* complete) {
  const size_t limit = std::min(head.size(), message_end);
  if (pos > limit) return std::nullopt;
  const size_t nul = head.substr(0, limit).find('\0', pos);
  if (nul == absl::string_view::npos) {
    if (limit == message_end) return std::nullopt;  // the message ends without its NUL
    *complete = false;
    return head.substr(pos);
  }
  *complete = true;
  return head.substr(pos, nul - pos);
}

bool IsParameterName(absl::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!IsAsciiAlpha(c) && !IsAsciiDigit(c) && c != '_' && c != '.') return false;
  }
  return true;
}

// StartupMessage, SSLRequest, GSSENCRequest and CancelRequest: a length and a code, no type.
std::optional<Request> ParseUntypedMessage(absl::string_view head) {
  if (head.size() < 8) return std::nullopt;
  const uint32_t length = ReadBe32(head, 0);
  const uint32_t code = ReadBe32(head, 4);
  if (code == kSslRequestCode && length == 8) return NamedRequest("SSLREQUEST");
  if (code == kGssEncRequestCode && length == 8) return NamedRequest("GSSENCREQUEST");
  if (code == kCancelRequestCode && length == 16) return NamedRequest("CANCEL");
  // Protocol 3.x; the parameters need at least one "name\0value\0" and the final NUL.
  if ((code >> 16) != 3 || (code & 0xFFFF) > 0xFF || length < 13 || length > kMaxStartupLength) {
    return std::nullopt;
  }
  std::string user, database;
  size_t pos = 8;
  while (pos < head.size() && pos < length) {
    bool complete = false;
    std::optional<absl::string_view> name = ReadCString(head, pos, length, &complete);
    if (!name) return std::nullopt;
    if (name->empty() && complete) break;  // the terminating NUL
    if (!complete) break;
    if (!IsParameterName(*name)) return std::nullopt;
    pos += name->size() + 1;
    std::optional<absl::string_view> value = ReadCString(head, pos, length, &complete);
    if (!value) return std::nullopt;
    if (!complete) break;
    if (*name == "user") user = internal::CleanText(*value);
    if (*name == "database") database = internal::CleanText(*value);
    pos += value->size() + 1;
  }
  Request request = NamedRequest("STARTUP");
  // The database defaults to the user's name; only what the client said is reported.
  if (!database.empty()) request.name = absl::StrCat(request.name.view(), " ", database);
  if (!user.empty()) request.attributes.push_back({"db.user", user});
  if (!database.empty()) request.attributes.push_back({"db.name", database});
  return request;
}

// 'Q': the query string. 'P': statement name, query string, parameter types.
std::optional<Request> ParseQueryMessage(absl::string_view head, size_t query_pos,
                                         size_t message_end, bool simple_query) {
  bool complete = false;
  std::optional<absl::string_view> query = ReadCString(head, query_pos, message_end, &complete);
  if (!query) return std::nullopt;
  // A simple query is the string alone; Parse has 2 more bytes at least.
  const size_t end = query_pos + query->size() + 1;
  if (complete && (simple_query ? end != message_end : end + 2 > message_end)) {
    return std::nullopt;
  }
  std::optional<Statement> statement = SummarizeSql(*query, complete);
  if (!statement) return std::nullopt;
  return StatementRequest(*statement);
}

// Printable ASCII statement and portal names ("", "P_0", "__asyncpg_stmt_1__").
bool IsObjectName(absl::string_view s) {
  for (char c : s) {
    if (c <= 0x20 || c >= 0x7F) return false;
  }
  return true;
}

bool IsBackendType(char type) {
  static constexpr absl::string_view kTypes = "123ACDEGHIKNRSTVWZcdnstv";
  return kTypes.find(type) != absl::string_view::npos;
}

Response ErrorResponse(absl::string_view fields) {
  std::string sqlstate, message;
  size_t pos = 0;
  while (pos < fields.size() && fields[pos] != '\0') {
    const char code = fields[pos];
    const size_t nul = fields.find('\0', pos + 1);
    const absl::string_view value =
        fields.substr(pos + 1, nul == absl::string_view::npos ? absl::string_view::npos
                                                              : nul - pos - 1);
    const bool whole = nul != absl::string_view::npos;
    if (code == 'C' && whole && value.size() == 5) {
      bool valid = true;
      for (char c : value) valid = valid && (IsAsciiDigit(c) || internal::IsAsciiUpper(c));
      if (valid) sqlstate = std::string(value);
    }
    if (code == 'M') message = internal::CleanText(value);  // a message cut short still helps
    if (!whole) break;
    pos = nul + 1;
  }
  Response response;
  response.error = true;
  response.status_message = !message.empty()    ? message
                            : !sqlstate.empty() ? absl::StrCat("SQLSTATE ", sqlstate)
                                                : "ErrorResponse";
  if (!sqlstate.empty()) response.attributes.push_back({"db.response.status_code", sqlstate});
  if (!message.empty()) response.attributes.push_back({"error.message", message});
  return response;
}

}  // namespace

std::optional<Request> ParsePostgresqlRequest(absl::string_view head) {
  head = head.substr(0, kMaxInspectedBytes);
  if (head.empty()) return std::nullopt;
  if (head[0] == '\0') return ParseUntypedMessage(head);
  if (head.size() < 5) return std::nullopt;
  const uint32_t length = ReadBe32(head, 1);
  if (length < 4 || length > kMaxMessageLength) return std::nullopt;
  const size_t message_end = size_t{length} + 1;
  switch (head[0]) {
    case 'Q':
      return ParseQueryMessage(head, 5, message_end, /*simple_query=*/true);
    case 'P': {
      bool complete = false;
      std::optional<absl::string_view> name = ReadCString(head, 5, message_end, &complete);
      if (!name || !complete || !IsObjectName(*name)) return std::nullopt;
      return ParseQueryMessage(head, 5 + name->size() + 1, message_end, /*simple_query=*/false);
    }
    case 'B': {
      // Portal, statement, then three int16 counts at least.
      if (length < 12) return std::nullopt;
      bool complete = false;
      std::optional<absl::string_view> portal = ReadCString(head, 5, message_end, &complete);
      if (!portal || !complete || !IsObjectName(*portal)) return std::nullopt;
      std::optional<absl::string_view> statement =
          ReadCString(head, 5 + portal->size() + 1, message_end, &complete);
      if (!statement || !IsObjectName(*statement)) return std::nullopt;
      return NamedRequest("EXECUTE");
    }
    case 'X':
      if (length != 4) return std::nullopt;
      return NamedRequest("TERMINATE");
    default:
      return std::nullopt;
  }
}

std::optional<Response> ParsePostgresqlResponse(absl::string_view head) {
  head = head.substr(0, kMaxInspectedBytes);
  // The answer to SSLRequest or GSSENCRequest is one byte.
  if (head.size() == 1 && (head[0] == 'S' || head[0] == 'N' || head[0] == 'G')) {
    return Response{};
  }
  bool first = true;
  size_t pos = 0;
  while (pos + 5 <= head.size()) {
    const char type = head[pos];
    const uint32_t length = ReadBe32(head, pos + 1);
    if (!IsBackendType(type) || length < 4 || length > kMaxMessageLength) break;
    if (type == 'E') {
      return ErrorResponse(head.substr(pos + 5, length - 4));
    }
    first = false;
    pos += size_t{length} + 1;
  }
  if (first) return std::nullopt;
  return Response{};
}

}  // namespace protocol
}  // namespace reptrace

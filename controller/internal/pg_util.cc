#include "controller/internal/pg_util.h"

#include <algorithm>
#include <array>
#include <utility>

#include <libpq-fe.h>
#include <pqxx/largeobject>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace reptrace::controller::internal {

std::string BigintArrayLiteral(const std::vector<int64_t>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

std::string OneLine(absl::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

absl::Status DatabaseError(absl::string_view what, const std::exception& e) {
  return absl::UnavailableError(absl::StrCat(what, ": ", OneLine(e.what())));
}

namespace {

// Characters that need more than themselves in a JSON string: quote, backslash and the
// controls (NUL, which JSONB cannot hold, is dropped). Looked up per character so that
// the runs between them are appended whole: an attribute is mostly one such run.
constexpr std::array<bool, 256> JsonSpecialTable() {
  std::array<bool, 256> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = true;
  table['"'] = true;
  table['\\'] = true;
  return table;
}
constexpr std::array<bool, 256> kJsonSpecial = JsonSpecialTable();

constexpr char kHex[] = "0123456789abcdef";

// The binary format's signature, flags (none) and header extension length (0).
constexpr char kCopyHeader[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
constexpr size_t kCopyHeaderSize = sizeof(kCopyHeader) - 1;
static_assert(kCopyHeaderSize == 19);

// The COPY's result, as libpqxx would report it.
[[noreturn]] void ThrowCopyError(PGresult* result, const std::string& statement) {
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const std::string message = PQresultErrorMessage(result);
  const std::string sqlstate = state == nullptr ? "" : state;
  PQclear(result);
  if (sqlstate == "23505") throw pqxx::unique_violation(message, statement, sqlstate.c_str());
  throw pqxx::sql_error(message, statement, sqlstate.empty() ? nullptr : sqlstate.c_str());
}

// libpqxx 6 keeps its libpq connection to itself, except for pqxx::largeobject, which
// hands it to its subclasses: the one way to reach it without libpqxx's internals, for
// the binary COPY that libpqxx cannot do.
class RawConnection : private pqxx::largeobject {
 public:
  static PGconn* Of(const pqxx::dbtransaction& tx) { return raw_connection(tx); }
};

}  // namespace

CopyBinary::CopyBinary() { Clear(); }

void CopyBinary::Clear() {
  used_ = 0;
  Append(absl::string_view(kCopyHeader, kCopyHeaderSize));
}

void CopyBinary::Grow(size_t size) {
  out_.resize(std::max(used_ + size, 2 * out_.size()));
}

void CopyBinary::Text(absl::string_view text) {
  if (text.find('\0') == absl::string_view::npos) {
    Bytes(text);
    return;
  }
  const size_t length_at = BeginField();
  for (char c : text) {
    if (c != '\0') *Room(1) = c;
  }
  EndField(length_at);
}

void CopyBinary::JsonString(absl::string_view text) {
  Append("\"");
  size_t i = 0;
  while (true) {
    const size_t run = i;
    while (i < text.size() && !kJsonSpecial[static_cast<unsigned char>(text[i])]) ++i;
    Append(text.substr(run, i - run));
    if (i == text.size()) break;
    const auto byte = static_cast<unsigned char>(text[i++]);
    if (byte == '"') {
      Append("\\\"");
    } else if (byte == '\\') {
      Append("\\\\");
    } else if (byte != 0) {  // NUL: dropped
      char* at = Room(6);
      std::memcpy(at, "\\u00", 4);
      at[4] = kHex[byte >> 4];
      at[5] = kHex[byte & 15];
    }
  }
  Append("\"");
}

absl::string_view CopyBinary::Finish() {
  Put16(Room(2), static_cast<uint16_t>(-1));  // the trailer
  return absl::string_view(out_.data(), used_);
}

void CopyRows(pqxx::dbtransaction& tx, const std::string& table,
              const std::vector<std::string>& columns, absl::string_view rows) {
  const std::string statement = absl::StrCat("COPY ", tx.quote_name(table), " (",
                                             absl::StrJoin(columns, ", "),
                                             ") FROM STDIN (FORMAT binary)");
  // libpqxx runs the statement and accepts the COPY IN state it leaves; the data and its
  // end then go through libpq directly, and libpqxx sees the connection idle again.
  tx.exec(statement);
  PGconn* conn = RawConnection::Of(tx);
  const auto broken = [&] {
    return pqxx::broken_connection(
        absl::StrCat("COPY into ", table, ": ", OneLine(PQerrorMessage(conn))));
  };
  if (PQputCopyData(conn, rows.data(), static_cast<int>(rows.size())) != 1 ||
      PQputCopyEnd(conn, nullptr) != 1) {
    throw broken();
  }
  // Every result up to the null one must be read for the connection to be usable again.
  PGresult* failed = nullptr;
  while (PGresult* result = PQgetResult(conn)) {
    const ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COMMAND_OK || failed != nullptr) {
      PQclear(result);
    } else {
      failed = result;
    }
    // Still copying (the end did not reach the server): libpq would return this forever.
    if (status == PGRES_COPY_IN || status == PGRES_COPY_BOTH) break;
  }
  if (failed != nullptr) ThrowCopyError(failed, statement);
  if (PQstatus(conn) != CONNECTION_OK) throw broken();
}

}  // namespace reptrace::controller::internal

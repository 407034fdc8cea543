// Small helpers shared by the controller's PostgreSQL code.
#ifndef REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_
#define REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace reptrace::controller::internal {

// "{1,-2,3}": a PostgreSQL array literal, passed as a parameter and cast to bigint[].
std::string BigintArrayLiteral(const std::vector<int64_t>& values);

// libpq messages span several lines ("...\n\tIs the server running..."): one line.
std::string OneLine(absl::string_view text);

// UNAVAILABLE with `what` and the exception's message on one line.
absl::Status DatabaseError(absl::string_view what, const std::exception& e);

// The 64 bits of an id as PostgreSQL's signed BIGINT, and back.
inline int64_t ToBigint(uint64_t id) { return static_cast<int64_t>(id); }
inline uint64_t FromBigint(int64_t value) { return static_cast<uint64_t>(value); }

// Rows in COPY's text format, built field by field into one buffer: far cheaper than
// pqxx::stream_to, which converts and escapes every field into strings of its own.
class CopyText {
 public:
  void Int(int64_t value);
  void Null();
  // Text, escaped for COPY; NUL characters (PostgreSQL text cannot hold them) dropped.
  void Text(absl::string_view text);
  // BYTEA in hex form.
  void Bytea(absl::string_view bytes);
  // A JSON object of string keys and values (JSONB input); NULs dropped.
  template <typename Map>
  void JsonObject(const Map& map) {
    Separate();
    out_.push_back('{');
    bool first = true;
    for (const auto& [key, value] : map) {
      if (!first) out_.push_back(',');
      first = false;
      JsonStringField(key);
      out_.push_back(':');
      JsonStringField(value);
    }
    out_.push_back('}');
  }
  void EndRow();

  bool empty() const { return out_.empty(); }
  // The rows, without the last row's newline (pqxx adds one).
  const std::string& Finish();
  // Empty again, keeping the buffer's memory for the next batch.
  void Clear() {
    out_.clear();
    in_row_ = false;
  }

 private:
  // A JSON string, escaped for JSON and then for COPY, straight into the rows.
  void JsonStringField(absl::string_view text);
  void Separate() {
    if (in_row_) out_.push_back('\t');
    in_row_ = true;
  }

  std::string out_;
  bool in_row_ = false;  // a field of the current row is written
};

// Sends `rows` (CopyText::Finish) to `table` (`columns`) with COPY ... FROM STDIN, in one
// piece. Throws pqxx exceptions (e.g. pqxx::unique_violation) as stream_to does.
void CopyRows(pqxx::transaction_base& tx, const std::string& table,
              const std::vector<std::string>& columns, const std::string& rows);

}  // namespace reptrace::controller::internal

#endif  // REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_

// Small helpers shared by the controller's PostgreSQL code.
#ifndef REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_
#define REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_

#include <endian.h>

#include <cstdint>
#include <cstring>
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

// Rows in COPY's binary format, built field by field into one buffer (libpqxx 6 has no
// binary COPY; its stream_to and tablewriter speak only the text format). Binary rather
// than text: a row holds 19 BIGINTs, most of them 19 digits long (ids, hashes, times), and
// printing each took ~220 instructions here and as much again for PostgreSQL to parse,
// against a byte swap either way. Each field must be in the exact binary form of its
// column's type (int2, int4, int8), which PostgreSQL checks.
class CopyBinary {
 public:
  CopyBinary();

  // Starts a row of `fields` fields; exactly that many must follow.
  void StartRow(int16_t fields) { Put16(Room(2), static_cast<uint16_t>(fields)); }
  void Int8(int64_t value) {  // BIGINT
    char* at = Room(4 + 8);
    Put32(at, 8);
    Put64(at + 4, static_cast<uint64_t>(value));
  }
  void Int4(int32_t value) {  // INTEGER
    char* at = Room(4 + 4);
    Put32(at, 4);
    Put32(at + 4, static_cast<uint32_t>(value));
  }
  void Int2(int16_t value) {  // SMALLINT
    char* at = Room(4 + 2);
    Put32(at, 2);
    Put16(at + 4, static_cast<uint16_t>(value));
  }
  void Null() { Put32(Room(4), static_cast<uint32_t>(-1)); }
  // TEXT; NUL characters (PostgreSQL text cannot hold them) dropped. Must be UTF-8, as
  // every protobuf string is.
  void Text(absl::string_view text);
  void Bytea(absl::string_view bytes) { Bytes(bytes); }
  // A JSONB object of string keys and values; NULs dropped (JSONB rejects \u0000).
  template <typename Map>
  void JsonbObject(const Map& map) {
    const size_t length_at = BeginField();
    Append(absl::string_view(&kJsonbVersion, 1));
    Append("{");
    bool first = true;
    for (const auto& [key, value] : map) {
      if (!first) Append(",");
      first = false;
      JsonString(key);
      Append(":");
      JsonString(value);
    }
    Append("}");
    EndField(length_at);
  }

  // The rows, with the format's header and trailer: one COPY's whole input. Valid until
  // the next call of any other method.
  absl::string_view Finish();
  // Empty again (the header only), keeping the buffer's memory for the next batch.
  void Clear();

 private:
  static constexpr char kJsonbVersion = 1;  // jsonb_recv's only format

  static void Put16(char* at, uint16_t value);
  static void Put32(char* at, uint32_t value);
  static void Put64(char* at, uint64_t value);

  // `size` more bytes at the end of the rows, to be written by the caller. The buffer
  // only grows (a batch's rows are about the same size each time), and std::string's
  // append, not inlined, cost ~45 instructions per field.
  char* Room(size_t size) {
    if (used_ + size > out_.size()) Grow(size);
    char* at = out_.data() + used_;
    used_ += size;
    return at;
  }
  void Grow(size_t size);
  void Append(absl::string_view bytes) {
    std::memcpy(Room(bytes.size()), bytes.data(), bytes.size());
  }
  // A field of known length: its length, then its bytes.
  void Bytes(absl::string_view bytes) {
    char* at = Room(4 + bytes.size());
    Put32(at, static_cast<uint32_t>(bytes.size()));
    std::memcpy(at + 4, bytes.data(), bytes.size());
  }
  // A field whose length is only known once written: its place, then the patch.
  size_t BeginField() {
    Room(4);
    return used_ - 4;
  }
  void EndField(size_t length_at) {
    Put32(out_.data() + length_at, static_cast<uint32_t>(used_ - length_at - 4));
  }
  void JsonString(absl::string_view text);

  std::string out_;  // out_[0, used_) are the rows; the rest is room
  size_t used_ = 0;
};

inline void CopyBinary::Put16(char* at, uint16_t value) {
  const uint16_t big = htobe16(value);
  std::memcpy(at, &big, sizeof(big));
}

inline void CopyBinary::Put32(char* at, uint32_t value) {
  const uint32_t big = htobe32(value);
  std::memcpy(at, &big, sizeof(big));
}

inline void CopyBinary::Put64(char* at, uint64_t value) {
  const uint64_t big = htobe64(value);
  std::memcpy(at, &big, sizeof(big));
}

// Sends `rows` (CopyBinary::Finish) to `table` (`columns`) with one COPY ... FROM STDIN
// (FORMAT binary) in `tx`. Throws what libpqxx would for the same failure:
// pqxx::unique_violation for a duplicate key (SQLSTATE 23505), pqxx::sql_error for any
// other statement error, pqxx::broken_connection when the connection is lost.
void CopyRows(pqxx::dbtransaction& tx, const std::string& table,
              const std::vector<std::string>& columns, absl::string_view rows);

}  // namespace reptrace::controller::internal

#endif  // REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_

#include "controller/internal/pg_util.h"

#include <array>
#include <charconv>
#include <utility>

#include <pqxx/tablewriter>

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

// Characters that need more than themselves: in COPY's text format (backslash, tab,
// newline, carriage return; NUL, which PostgreSQL text cannot hold, is dropped), and in a
// JSON string (quote, backslash, controls; NUL dropped). Looked up per character so that
// the runs between them are appended whole: a row's texts are mostly one such run.
constexpr std::array<bool, 256> CharTable(absl::string_view special, bool controls) {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c) table[c] = controls && c < 0x20;
  for (char c : special) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr std::array<bool, 256> kCopySpecial =
    CharTable(absl::string_view("\\\t\n\r\0", 5), false);
constexpr std::array<bool, 256> kJsonSpecial = CharTable("\"\\", true);

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

void CopyText::Int(int64_t value) {
  Separate();
  // std::to_chars into a stack buffer, appended once: absl::StrAppend spent as much again
  // on its generic append as on the digits, ~18 times a row.
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof(digits), value);
  out_.append(digits, static_cast<size_t>(result.ptr - digits));
}

void CopyText::Null() {
  Separate();
  out_.append("\\N");
}

void CopyText::Text(absl::string_view text) {
  Separate();
  size_t i = 0;
  while (true) {
    const size_t run = i;
    while (i < text.size() && !kCopySpecial[static_cast<unsigned char>(text[i])]) ++i;
    out_.append(text.data() + run, i - run);
    if (i == text.size()) return;
    switch (text[i++]) {
      case '\\':
        out_.append("\\\\");
        break;
      case '\t':
        out_.append("\\t");
        break;
      case '\n':
        out_.append("\\n");
        break;
      case '\r':
        out_.append("\\r");
        break;
      default:  // NUL: dropped
        break;
    }
  }
}

void CopyText::Bytea(absl::string_view bytes) {
  Separate();
  out_.append("\\\\x");  // bytea's hex prefix \x, its backslash escaped for COPY
  for (char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    out_.push_back(kHex[byte >> 4]);
    out_.push_back(kHex[byte & 15]);
  }
}

void CopyText::JsonStringField(absl::string_view text) {
  // The JSON escapes are written already escaped for COPY: a JSON string's escapes turn
  // every control character (tab, newline, carriage return among them) into \uXXXX, so
  // the backslashes they add are the only characters COPY needs escaped in it.
  out_.push_back('"');
  size_t i = 0;
  while (true) {
    const size_t run = i;
    while (i < text.size() && !kJsonSpecial[static_cast<unsigned char>(text[i])]) ++i;
    out_.append(text.data() + run, i - run);
    if (i == text.size()) break;
    const auto byte = static_cast<unsigned char>(text[i++]);
    if (byte == '"') {
      out_.append("\\\\\"");  // JSON \" , its backslash doubled for COPY
    } else if (byte == '\\') {
      out_.append("\\\\\\\\");  // JSON \\ , each backslash doubled
    } else if (byte != 0) {  // NUL: dropped
      out_.append("\\\\u00");  // JSON \u00XX
      out_.push_back(kHex[byte >> 4]);
      out_.push_back(kHex[byte & 15]);
    }
  }
  out_.push_back('"');
}

void CopyText::EndRow() {
  out_.push_back('\n');
  in_row_ = false;
}

const std::string& CopyText::Finish() {
  if (!out_.empty() && out_.back() == '\n') out_.pop_back();
  in_row_ = false;
  return out_;
}

void CopyRows(pqxx::transaction_base& tx, const std::string& table,
              const std::vector<std::string>& columns, const std::string& rows) {
  // stream_to cannot send a line it did not escape itself; tablewriter, deprecated in
  // favour of stream_to, can. Its "line" may hold many rows: pqxx sends it with one
  // PQputCopyData and ends it with a newline.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  pqxx::tablewriter writer(tx, table, columns.begin(), columns.end());
  writer.write_raw_line(rows);
  writer.complete();
#pragma GCC diagnostic pop
}

}  // namespace reptrace::controller::internal

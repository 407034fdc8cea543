#include "controller/internal/pg_util.h"

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

void CopyText::Int(int64_t value) {
  Separate();
  absl::StrAppend(&out_, value);
}

void CopyText::Null() {
  Separate();
  out_.append("\\N");
}

void CopyText::Text(absl::string_view text) {
  Separate();
  // Runs of plain characters are appended whole; most texts are one such run.
  size_t plain = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '\0' && c != '\\' && c != '\t' && c != '\n' && c != '\r') continue;
    out_.append(text.data() + plain, i - plain);
    plain = i + 1;
    switch (c) {
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
  out_.append(text.data() + plain, text.size() - plain);
}

void CopyText::Bytea(absl::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  Separate();
  out_.append("\\\\x");  // bytea's hex prefix \x, its backslash escaped for COPY
  for (char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    out_.push_back(kHex[byte >> 4]);
    out_.push_back(kHex[byte & 15]);
  }
}

void CopyText::AppendJsonString(absl::string_view text, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte == 0) continue;
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (byte < 0x20) {
      out->append("\\u00");
      out->push_back(kHex[byte >> 4]);
      out->push_back(kHex[byte & 15]);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
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

#include "controller/internal/pg_util.h"

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

}  // namespace reptrace::controller::internal

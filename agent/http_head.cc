#include "agent/http_head.h"

#include <array>

#include "absl/strings/match.h"

namespace reptrace {
namespace {

constexpr size_t kMaxMethodLength = 20;

constexpr std::array<absl::string_view, 9> kKnownMethods = {
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"};

bool IsKnownMethod(absl::string_view method) {
  for (absl::string_view known : kKnownMethods) {
    if (method == known) return true;
  }
  return false;
}

bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsTargetChar(char c) { return c > 0x20 && c < 0x7f; }

// True if `rest` starts with "HTTP/1.<digit>", or is a prefix of such a string (cut short).
bool StartsWithHttp1Version(absl::string_view rest, bool allow_cut) {
  constexpr absl::string_view kPrefix = "HTTP/1.";
  if (rest.size() < kPrefix.size() + 1) {
    return allow_cut && absl::StartsWith(kPrefix, rest.substr(0, kPrefix.size()));
  }
  return absl::StartsWith(rest, kPrefix) && IsDigit(rest[kPrefix.size()]);
}

// Splits a request target into its path and query string.
HttpRequestLine SplitTarget(absl::string_view method, absl::string_view target) {
  if (absl::StartsWith(target, "http://") || absl::StartsWith(target, "https://")) {
    const size_t authority = target.find("//") + 2;
    const size_t slash = target.find_first_of("/?#", authority);
    target = slash == absl::string_view::npos ? absl::string_view() : target.substr(slash);
  }
  const size_t fragment = target.find('#');
  if (fragment != absl::string_view::npos) target = target.substr(0, fragment);
  absl::string_view query;
  const size_t question = target.find('?');
  if (question != absl::string_view::npos) {
    query = target.substr(question + 1);
    target = target.substr(0, question);
  }
  if (target.empty()) target = "/";
  return HttpRequestLine{method, target, query};
}

}  // namespace

std::optional<HttpRequestLine> ParseHttpRequestLine(absl::string_view head) {
  size_t i = 0;
  while (i < head.size() && i <= kMaxMethodLength && IsUpper(head[i])) ++i;
  if (i == 0 || i > kMaxMethodLength || i >= head.size() || head[i] != ' ') return std::nullopt;
  const absl::string_view method = head.substr(0, i);
  const bool known = IsKnownMethod(method);

  const size_t target_start = i + 1;
  size_t j = target_start;
  while (j < head.size() && IsTargetChar(head[j])) ++j;
  if (j == target_start) return std::nullopt;
  const absl::string_view target = head.substr(target_start, j - target_start);
  if (j == head.size()) {
    // The capture ended inside the target. Only an origin-form ("/...") or absolute-form
    // target is believed then: "GET somekey" cut short is more likely Redis' inline GET.
    if (!known || (target[0] != '/' && !absl::StartsWith(target, "http"))) return std::nullopt;
  } else if (head[j] != ' ' || !StartsWithHttp1Version(head.substr(j + 1), known)) {
    return std::nullopt;
  }
  return SplitTarget(method, target);
}

std::optional<int> ParseHttpStatusCode(absl::string_view head) {
  // "HTTP/1.1 200" is 12 bytes.
  if (head.size() < 12 || !StartsWithHttp1Version(head, false) || head[8] != ' ') {
    return std::nullopt;
  }
  if (!IsDigit(head[9]) || !IsDigit(head[10]) || !IsDigit(head[11])) return std::nullopt;
  if (head.size() > 12 && head[12] != ' ' && head[12] != '\r' && head[12] != '\n') {
    return std::nullopt;
  }
  const int code = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
  if (code < 100 || code > 599) return std::nullopt;
  return code;
}

}  // namespace reptrace

// A tiny parser for the first line of an HTTP/1.x message, as captured by the hook (the
// first bytes of a message, possibly cut short). Pure; never reads past `head`.
#ifndef REPTRACE_AGENT_HTTP_HEAD_H_
#define REPTRACE_AGENT_HTTP_HEAD_H_

#include <optional>

#include "absl/strings/string_view.h"

namespace reptrace {

// Views of the parsed `head` (valid while it is), so that parsing copies nothing.
struct HttpRequestLine {
  absl::string_view method;  // "GET"
  absl::string_view path;    // "/api/items": no query string, no fragment, no scheme/authority
  absl::string_view query;   // "id=3&x=1": what follows '?' up to '#' (possibly cut short), or ""
};

// Parses "METHOD target HTTP/1.x" at the start of `head`. A well-known method
// (GET, POST, ...) may have its origin-form ("/...") or absolute-form target cut short by
// the end of `head` (captures are small); any other upper-case method or target needs the
// whole line up to "HTTP/1.". Returns
// nullopt for anything that does not look like an HTTP/1.x request.
std::optional<HttpRequestLine> ParseHttpRequestLine(absl::string_view head);

// Parses "HTTP/1.x NNN ..." at the start of `head`; returns NNN (100..599) or nullopt.
std::optional<int> ParseHttpStatusCode(absl::string_view head);

}  // namespace reptrace

#endif  // REPTRACE_AGENT_HTTP_HEAD_H_

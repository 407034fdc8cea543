// Protocol-aware span naming: pure parsers for the first bytes of a message, as the hook
// captured them (EventRecord::capture: at most kCaptureBytes, possibly cut anywhere).
//
// ParseRequest recognises the request's protocol and names the span; ParseResponse reads the
// answer to a request whose protocol is known. Both return nullopt for anything they do not
// recognise, and the caller keeps its generic name (`peer:port`).
//
// Every function here is pure and total: it reads only the bytes of `head` (at most the first
// kMaxInspectedBytes of them, so work is bounded whatever the caller passes), allocates only
// its result, throws nothing, and never crashes on garbage. Every string it returns is valid
// UTF-8 without control characters, so it can go into a protobuf string field as is. A
// result may view `head` (see Text): keep `head` alive, unchanged, while you use it.
#ifndef REPTRACE_AGENT_PROTOCOL_PROTOCOL_H_
#define REPTRACE_AGENT_PROTOCOL_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"

namespace reptrace {
namespace protocol {

inline constexpr size_t kMaxInspectedBytes = 4096;

enum class Transport { kTcp, kUdp };

enum class Protocol { kHttp, kRedis, kPostgresql, kDns };

// "http", "redis", "postgresql", "dns".
absl::string_view ProtocolName(Protocol protocol);

// Text a parser returns: a view of the parsed `head` (or of a constant) where the text is
// there as it is (an HTTP method and path, a Redis command in upper case), else a string of
// its own. Copying the text out of the head was most of what naming a request cost.
class Text {
  template <typename T>
  using IfText = std::enable_if_t<std::is_convertible<const T&, absl::string_view>::value>;

 public:
  Text() = default;
  // A string of its own. Implicit, so that a parser can assign the string it made.
  Text(std::string text) : owned_(std::move(text)) {}  // NOLINT(google-explicit-constructor)
  Text(const char* text) : owned_(text) {}  // NOLINT(google-explicit-constructor)
  // A view of `text`: of the parsed head or of a constant, which outlive the result.
  static Text View(absl::string_view text) {
    Text viewing;
    viewing.view_ = text;
    viewing.is_view_ = true;
    return viewing;
  }

  // A view copies and moves as a string_view does: its (empty) string is left alone, as
  // moving a std::string copies its inline buffer, a call to memcpy.
  Text(const Text& other) : view_(other.view_), is_view_(other.is_view_) {
    if (!is_view_) owned_ = other.owned_;
  }
  Text(Text&& other) noexcept : view_(other.view_), is_view_(other.is_view_) {
    if (!is_view_) owned_ = std::move(other.owned_);
  }
  Text& operator=(const Text& other) {
    view_ = other.view_;
    is_view_ = other.is_view_;
    if (!is_view_) owned_ = other.owned_;
    return *this;
  }
  Text& operator=(Text&& other) noexcept {
    view_ = other.view_;
    is_view_ = other.is_view_;
    if (!is_view_) owned_ = std::move(other.owned_);
    return *this;
  }

  absl::string_view view() const { return is_view_ ? view_ : absl::string_view(owned_); }
  // Implicit, as a std::string converts to a string_view.
  operator absl::string_view() const { return view(); }  // NOLINT(google-explicit-constructor)
  bool empty() const { return view().empty(); }

  // Compares as its text does, with a Text or anything a string_view converts from.
  friend bool operator==(const Text& a, const Text& b) { return a.view() == b.view(); }
  friend bool operator!=(const Text& a, const Text& b) { return !(a == b); }
  template <typename T, typename = IfText<T>>
  friend bool operator==(const Text& a, const T& b) { return a.view() == absl::string_view(b); }
  template <typename T, typename = IfText<T>>
  friend bool operator==(const T& a, const Text& b) { return b == a; }
  template <typename T, typename = IfText<T>>
  friend bool operator!=(const Text& a, const T& b) { return !(a == b); }
  template <typename T, typename = IfText<T>>
  friend bool operator!=(const T& a, const Text& b) { return !(b == a); }
  friend std::ostream& operator<<(std::ostream& out, const Text& text) {
    return out << text.view();
  }

 private:
  // view_ is only ever a view of the head or of a constant, never of owned_: a copy or a
  // move needs no fixing up.
  absl::string_view view_;
  std::string owned_;
  bool is_view_ = false;
};

// An OpenTelemetry-style span attribute ("http.request.method" = "GET"). Its key is one of
// the parsers' constants (static storage, never freed): a span can point at it.
struct Attribute {
  absl::string_view key;
  Text value;
};

// A message's attributes, in the order its parser adds them; no parser adds more than
// kInlineAttributes, so they take no allocation of their own.
inline constexpr size_t kInlineAttributes = 4;
using Attributes = absl::InlinedVector<Attribute, kInlineAttributes>;

struct Request {
  Protocol protocol;
  // Low-cardinality span name: "GET /api/items", "GET" (Redis), "CLIENT SETNAME",
  // "SELECT items" (PostgreSQL, table when known), "DNS A example.com".
  Text name;
  // In a fixed order per protocol (see the Parse*Request functions).
  Attributes attributes;
  // Pairs a response with its request when several are in flight on one socket: the DNS
  // message id. Unset for the other protocols (their responses come back in order).
  std::optional<uint16_t> exchange_id;
};

struct Response {
  bool error = false;
  std::string status_message;  // why it is an error ("HTTP 503", "SERVFAIL", ...); else empty
  Attributes attributes;
  std::optional<uint16_t> exchange_id;  // as in Request
};

struct ParseOptions {
  // HTTP: also report the query string (url.query). It can carry secrets, so it is off.
  bool http_query = false;
};

// Recognises the request at the start of `head`. On TCP, the family the well-known
// `server_port` suggests (80/8080: HTTP, 6379: Redis, 5432: PostgreSQL, 53: DNS; 0 = unknown)
// is tried first, then HTTP, Redis, PostgreSQL and DNS (with its 2-byte length prefix). On UDP
// only DNS is tried. Each parser is strict enough that the order matters only for inputs no
// real client sends.
std::optional<Request> ParseRequest(absl::string_view head, Transport transport,
                                    uint16_t server_port = 0, const ParseOptions& options = {});

// Reads the start of the response to a request of `protocol`.
std::optional<Response> ParseResponse(Protocol protocol, absl::string_view head,
                                      Transport transport);

// The parsers ParseRequest and ParseResponse dispatch to, for tests and fuzz targets.

// HTTP/1.x request line. Name "METHOD /path" (no query string, no fragment); attributes
// http.request.method, url.path[, url.query].
std::optional<Request> ParseHttpRequest(absl::string_view head, const ParseOptions& options = {});
// HTTP/1.x status line. Attribute http.response.status_code; 5xx is an error "HTTP <code>".
std::optional<Response> ParseHttpResponse(absl::string_view head);

// RESP array of bulk strings, or an inline command of a known Redis command. Name: the
// command in upper case, with its subcommand for a container command ("CLIENT SETNAME",
// "CONFIG GET"); attributes db.system=redis, db.operation (= the name). Keys and values are
// never reported.
std::optional<Request> ParseRedisRequest(absl::string_view head);
// Any RESP2/RESP3 reply. An error ("-ERR ..." or a RESP3 blob error) is an error whose status
// message is its text; attributes db.response.status_code (the error prefix: ERR, WRONGTYPE,
// ...), error.message (the text).
std::optional<Response> ParseRedisResponse(absl::string_view head);

// Frontend message: simple query 'Q' and Parse 'P' (name "<KIND> <table>" or "<KIND>";
// attributes db.system=postgresql, db.operation = the statement's first keyword (SELECT,
// INSERT, BEGIN, ...), db.sql.table for a plain SELECT ... FROM t / INSERT INTO t / UPDATE t
// / DELETE FROM t whose table name is within `head`); Bind 'B' (EXECUTE) and Terminate 'X'
// (TERMINATE); and the untyped StartupMessage (STARTUP; db.user, db.name), SSLRequest,
// GSSENCRequest and CancelRequest. The query text itself is never reported.
std::optional<Request> ParsePostgresqlRequest(absl::string_view head);
// Backend messages. An ErrorResponse 'E' anywhere in `head` is an error: status message its
// 'M' field; attributes db.response.status_code (SQLSTATE, field 'C'), error.message. The
// one-byte answer to an SSLRequest ('S' or 'N') is a success.
std::optional<Response> ParsePostgresqlResponse(absl::string_view head);

// A standard query (QR=0, opcode QUERY, one question). On TCP `head` starts with the 2-byte
// length prefix. Name "DNS <type> <name>"; attributes dns.question.name (lower case, no
// trailing dot; "." for the root), dns.question.type (A, AAAA, ..., else TYPE<n>), dns.id.
std::optional<Request> ParseDnsRequest(absl::string_view head, Transport transport);
// A response (QR=1). Attributes dns.id, dns.rcode (NOERROR, NXDOMAIN, ..., else RCODE<n>),
// dns.answer_count. FORMERR, SERVFAIL, NOTIMP and REFUSED are errors (NXDOMAIN is an answer).
std::optional<Response> ParseDnsResponse(absl::string_view head, Transport transport);

// The value of the first attribute named `key`, or nullopt.
std::optional<std::string> FindAttribute(const Attributes& attributes, absl::string_view key);

}  // namespace protocol
}  // namespace reptrace

#endif  // REPTRACE_AGENT_PROTOCOL_PROTOCOL_H_

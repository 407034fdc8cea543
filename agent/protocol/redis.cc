// Redis RESP2/RESP3 (https://redis.io/docs/latest/develop/reference/protocol-spec/).
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/protocol/internal/text.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace {

using internal::IsAsciiAlpha;
using internal::IsAsciiDigit;

constexpr size_t kMaxCommandLength = 32;
constexpr size_t kMaxNumberDigits = 10;  // bulk lengths stay below 2^32 (512 MiB in practice)

// Commands whose first argument names what they do.
constexpr absl::string_view kContainerCommands[] = {
    "ACL",    "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG",   "FUNCTION", "LATENCY",
    "MEMORY", "MODULE", "OBJECT",  "PUBSUB",  "SCRIPT", "SLOWLOG", "XGROUP",   "XINFO"};

// Inline commands ("PING\r\n") have no framing to check, so only these names are believed:
// what redis-cli, telnet users and health checks send.
constexpr absl::string_view kInlineCommands[] = {
    "ACL",     "APPEND",  "AUTH",    "BGSAVE",   "CLIENT",  "CLUSTER", "COMMAND", "CONFIG",
    "DBSIZE",  "DECR",    "DECRBY",  "DEL",      "DISCARD", "ECHO",    "EVAL",    "EVALSHA",
    "EXEC",    "EXISTS",  "EXPIRE",  "FLUSHALL", "FLUSHDB", "GET",     "GETDEL",  "GETSET",
    "HDEL",    "HELLO",   "HGET",    "HGETALL",  "HINCRBY", "HKEYS",   "HLEN",    "HMGET",
    "HSET",    "INCR",    "INCRBY",  "INFO",     "KEYS",    "LLEN",    "LPOP",    "LPUSH",
    "LRANGE",  "MGET",    "MONITOR", "MSET",     "MULTI",   "PING",    "PUBLISH", "QUIT",
    "RPOP",    "RPUSH",   "SADD",    "SCAN",     "SELECT",  "SET",     "SETEX",   "SETNX",
    "SMEMBERS", "SREM",   "SUBSCRIBE", "TIME",   "TTL",     "TYPE",    "UNLINK",  "WATCH",
    "ZADD",    "ZRANGE",  "ZSCORE"};

template <size_t N>
bool Contains(const absl::string_view (&names)[N], absl::string_view name) {
  for (absl::string_view known : names) {
    if (known == name) return true;
  }
  return false;
}

// A command or subcommand name: a letter, then letters, digits, '.', '_' or '-' (module
// commands are "JSON.GET", "FT.SEARCH").
bool IsCommandName(absl::string_view s) {
  if (s.empty() || s.size() > kMaxCommandLength || !IsAsciiAlpha(s[0])) return false;
  for (char c : s) {
    if (!IsAsciiAlpha(c) && !IsAsciiDigit(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

// A RESP line starting at `pos`: its text up to "\r\n", or to the end of `head` if the
// capture ends first (`complete` false). nullopt if a CR or LF appears anywhere else.
struct Line {
  absl::string_view text;
  bool complete;
};
std::optional<Line> ReadLine(absl::string_view head, size_t pos) {
  for (size_t i = pos; i < head.size(); ++i) {
    if (head[i] == '\n') return std::nullopt;
    if (head[i] != '\r') continue;
    if (i + 1 == head.size()) return Line{head.substr(pos, i - pos), false};
    if (head[i + 1] != '\n') return std::nullopt;
    return Line{head.substr(pos, i - pos), true};
  }
  return Line{head.substr(pos), false};
}

// Digits only, 1..kMaxNumberDigits of them (a cut-short line may hold fewer than meant).
std::optional<uint64_t> ParseCount(absl::string_view s) {
  if (s.empty() || s.size() > kMaxNumberDigits) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (!IsAsciiDigit(c)) return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// Reads the bulk string "$<n>\r\n<n bytes>\r\n" at `*pos`; nullopt unless it is whole
// (a bulk string cut short is no name), else advances `*pos` past it.
std::optional<absl::string_view> ReadBulkString(absl::string_view head, size_t* pos) {
  if (*pos >= head.size() || head[*pos] != '$') return std::nullopt;
  std::optional<Line> line = ReadLine(head, *pos + 1);
  if (!line || !line->complete) return std::nullopt;
  std::optional<uint64_t> length = ParseCount(line->text);
  const size_t data = *pos + 1 + line->text.size() + 2;
  if (!length || *length > head.size() - data) return std::nullopt;
  const absl::string_view value = head.substr(data, *length);
  size_t end = data + *length;
  // The CRLF after the value may be beyond the capture, but if present it must be there.
  if (end < head.size() && head[end] != '\r') return std::nullopt;
  if (end + 1 < head.size() && head[end + 1] != '\n') return std::nullopt;
  *pos = std::min(end + 2, head.size());
  return value;
}

// Built where it is returned: a Request moved into an optional is a copy of every short
// string in it.
std::optional<Request> CommandRequest(absl::string_view command, absl::string_view subcommand) {
  std::optional<Request> request(std::in_place);
  request->protocol = Protocol::kRedis;
  // A command in upper case, as clients mostly write them, is named by its view.
  if (std::none_of(command.begin(), command.end(), internal::IsAsciiLower)) {
    request->name = Text::View(command);
  } else {
    request->name = internal::AsciiUpper(command);
  }
  if (!subcommand.empty() && Contains(kContainerCommands, request->name.view())) {
    request->name = absl::StrCat(request->name.view(), " ", internal::AsciiUpper(subcommand));
  }
  request->attributes.push_back({"db.system", Text::View("redis")});
  request->attributes.push_back({"db.operation", request->name});
  return request;
}

// "*<n>\r\n$<len>\r\n<command>\r\n..." as every client library sends.
std::optional<Request> ParseArrayCommand(absl::string_view head) {
  std::optional<Line> line = ReadLine(head, 1);
  if (!line || !line->complete) return std::nullopt;
  std::optional<uint64_t> count = ParseCount(line->text);
  if (!count || *count == 0) return std::nullopt;
  size_t pos = 1 + line->text.size() + 2;
  std::optional<absl::string_view> command = ReadBulkString(head, &pos);
  if (!command || !IsCommandName(*command)) return std::nullopt;
  absl::string_view subcommand;
  if (*count >= 2) {
    std::optional<absl::string_view> second = ReadBulkString(head, &pos);
    if (second && IsCommandName(*second)) subcommand = *second;
  }
  return CommandRequest(*command, subcommand);
}

// "PING\r\n", "GET key\n": one line of space-separated words.
std::optional<Request> ParseInlineCommand(absl::string_view head) {
  const size_t newline = head.find('\n');
  if (newline == absl::string_view::npos) return std::nullopt;
  absl::string_view line = head.substr(0, newline);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t') return std::nullopt;
  }
  const size_t space = line.find(' ');
  const absl::string_view command = line.substr(0, space);
  if (!IsCommandName(command) || !Contains(kInlineCommands, internal::AsciiUpper(command))) {
    return std::nullopt;
  }
  // "GET /path HTTP/1.1" is a valid inline GET too; Redis itself refuses it as an attack.
  const size_t last_space = line.rfind(' ');
  if (last_space != absl::string_view::npos &&
      absl::StartsWith(line.substr(last_space + 1), "HTTP/")) {
    return std::nullopt;
  }
  absl::string_view subcommand;
  if (space != absl::string_view::npos) {
    absl::string_view rest = line.substr(space + 1);
    subcommand = rest.substr(0, rest.find(' '));
    if (!IsCommandName(subcommand)) subcommand = {};
  }
  return CommandRequest(command, subcommand);
}

bool IsInteger(absl::string_view s) {
  if (!s.empty() && s[0] == '-') s.remove_prefix(1);
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsAsciiDigit(c)) return false;
  }
  return true;
}

bool IsLengthOrNull(absl::string_view s) { return s == "-1" || ParseCount(s).has_value(); }

bool IsDouble(absl::string_view s) {
  if (s == "inf" || s == "-inf" || s == "nan") return true;
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsAsciiDigit(c) && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsSimpleText(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t') return false;
  }
  return true;
}

Response ErrorResponse(absl::string_view text) {
  Response response;
  response.error = true;
  response.status_message = internal::CleanText(text);
  const bool said = !response.status_message.empty();
  if (!said) response.status_message = "Redis error";  // an empty or unreadable text
  // "ERR unknown command", "WRONGTYPE Operation against ...": an upper-case first word is
  // the error's kind.
  const absl::string_view prefix = text.substr(0, text.find(' '));
  bool upper = !prefix.empty();
  for (char c : prefix) upper = upper && (internal::IsAsciiUpper(c) || c == '_');
  if (upper) response.attributes.push_back({"db.response.status_code", std::string(prefix)});
  if (said) response.attributes.push_back({"error.message", response.status_message});
  return response;
}

}  // namespace

std::optional<Request> ParseRedisRequest(absl::string_view head) {
  head = head.substr(0, kMaxInspectedBytes);
  if (head.empty()) return std::nullopt;
  if (head[0] == '*') return ParseArrayCommand(head);
  return ParseInlineCommand(head);
}

std::optional<Response> ParseRedisResponse(absl::string_view head) {
  head = head.substr(0, kMaxInspectedBytes);
  if (head.empty()) return std::nullopt;
  std::optional<Line> line = ReadLine(head, 1);
  // The type byte alone says nothing yet.
  if (!line || (line->text.empty() && !line->complete)) return std::nullopt;
  const absl::string_view text = line->text;
  bool valid = false;
  switch (head[0]) {
    case '+':  // simple string
      valid = IsSimpleText(text);
      break;
    case '-':  // simple error
      if (text.empty() || !IsSimpleText(text)) return std::nullopt;
      return ErrorResponse(text);
    case '!': {  // RESP3 blob error: "!<len>\r\n<text>\r\n"
      std::optional<uint64_t> length = ParseCount(text);
      if (!length || !line->complete) return std::nullopt;
      absl::string_view blob = head.substr(1 + text.size() + 2);
      if (blob.size() > *length) blob = blob.substr(0, *length);
      return ErrorResponse(blob);
    }
    case ':':  // integer
    case '(':  // big number
      valid = IsInteger(text);
      break;
    case '$':  // bulk string
    case '*':  // array
    case '%':  // map
    case '~':  // set
    case '>':  // push
    case '|':  // attribute
    case '=':  // verbatim string
      valid = IsLengthOrNull(text);
      break;
    case '_':  // null
      valid = text.empty() && line->complete;
      break;
    case ',':  // double
      valid = IsDouble(text);
      break;
    case '#':  // boolean
      valid = text == "t" || text == "f";
      break;
    default:
      break;
  }
  if (!valid) return std::nullopt;
  return std::optional<Response>(std::in_place);  // not a Response moved in
}

}  // namespace protocol
}  // namespace reptrace

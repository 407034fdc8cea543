#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace {

constexpr Protocol kTcpOrder[] = {Protocol::kHttp, Protocol::kRedis, Protocol::kPostgresql,
                                  Protocol::kDns};

std::optional<Protocol> ProtocolOfPort(uint16_t port) {
  switch (port) {
    case 80:
    case 8080:
      return Protocol::kHttp;
    case 6379:
      return Protocol::kRedis;
    case 5432:
      return Protocol::kPostgresql;
    case 53:
      return Protocol::kDns;
    default:
      return std::nullopt;
  }
}

std::optional<Request> ParseTcpRequest(Protocol protocol, absl::string_view head,
                                       const ParseOptions& options) {
  switch (protocol) {
    case Protocol::kHttp:
      return ParseHttpRequest(head, options);
    case Protocol::kRedis:
      return ParseRedisRequest(head);
    case Protocol::kPostgresql:
      return ParsePostgresqlRequest(head);
    case Protocol::kDns:
      return ParseDnsRequest(head, Transport::kTcp);
  }
  return std::nullopt;
}

// Built where it is returned when the first parser tried recognises it: `request` is the
// only thing returned (a result returned otherwise too made GCC move it out, a copy of
// every short string in it), and a later parser's result replaces it (a move).
std::optional<Request> RecogniseTcpRequest(absl::string_view head, uint16_t server_port,
                                           const ParseOptions& options) {
  Protocol first = ProtocolOfPort(server_port).value_or(kTcpOrder[0]);
  // An HTTP request never starts with '*', a Redis array always does: trying Redis first
  // then gives the same result, and spares the move.
  if (first == Protocol::kHttp && !head.empty() && head[0] == '*') first = Protocol::kRedis;
  std::optional<Request> request = ParseTcpRequest(first, head, options);
  for (Protocol protocol : kTcpOrder) {
    if (request) break;
    if (protocol != first) request = ParseTcpRequest(protocol, head, options);
  }
  return request;
}

}  // namespace

absl::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kHttp:
      return "http";
    case Protocol::kRedis:
      return "redis";
    case Protocol::kPostgresql:
      return "postgresql";
    case Protocol::kDns:
      return "dns";
  }
  return "unknown";
}

std::optional<Request> ParseRequest(absl::string_view head, Transport transport,
                                    uint16_t server_port, const ParseOptions& options) {
  if (transport == Transport::kUdp) return ParseDnsRequest(head, Transport::kUdp);
  return RecogniseTcpRequest(head, server_port, options);
}

std::optional<Response> ParseResponse(Protocol protocol, absl::string_view head,
                                      Transport transport) {
  switch (protocol) {
    case Protocol::kHttp:
      return ParseHttpResponse(head);
    case Protocol::kRedis:
      return ParseRedisResponse(head);
    case Protocol::kPostgresql:
      return ParsePostgresqlResponse(head);
    case Protocol::kDns:
      return ParseDnsResponse(head, transport);
  }
  return std::nullopt;
}

std::optional<std::string> FindAttribute(const Attributes& attributes, absl::string_view key) {
  for (const Attribute& attribute : attributes) {
    if (attribute.key == key) return std::string(attribute.value.view());
  }
  return std::nullopt;
}

}  // namespace protocol
}  // namespace reptrace
